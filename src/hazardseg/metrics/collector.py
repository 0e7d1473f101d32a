"""The one place a pass over a split feeds its metrics: :class:`MetricCollector`.

``evaluate`` (segmentation, every method's pooled and per-image metrics, components at the
calibrated thresholds), the oracle component pass, ``eval-maps`` and training validation all
feed one collector with batches of masks, predictions and score maps; it applies the
protocols' pixel sets (:mod:`hazardseg.metrics.ood_protocol`), counts non-finite scores, and
merges and all-reduces like every accumulator (:class:`hazardseg.metrics.base.Accumulator`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from hazardseg.data.labels import LabelSpec
from hazardseg.errors import HazardsegError
from hazardseg.metrics.base import Accumulator
from hazardseg.metrics.components import ComponentMetrics
from hazardseg.metrics.ood import PerImageOOD, PooledOOD
from hazardseg.metrics.ood_protocol import default_labels
from hazardseg.metrics.open_set import OpenSetCalibration
from hazardseg.metrics.segmentation import ConfusionMatrix
from hazardseg.metrics.smiyc import SmiycPixels

NONFINITE_POLICIES: tuple[str, ...] = ("error", "exclude")
ANOMALY_PROTOCOLS: tuple[str, ...] = ("pooled", "per_image", "smiyc", "open_miou")
"""The protocols a method can be measured with: ``pooled`` (always), ``per_image``
(StreetHazards' official per-image protocol), ``smiyc`` (SegmentMeIfYouCan's binned metrics),
``open_miou`` (DenseHybrid's open-set mIoU; this pass collects its calibration pixels)."""


def check_protocols(protocols: Sequence[str]) -> tuple[str, ...]:
    """``protocols`` with ``pooled`` first (always measured); HazardsegError for an unknown
    name."""
    unknown = [p for p in protocols if p not in ANOMALY_PROTOCOLS]
    if unknown:
        raise HazardsegError(
            f"protocol {unknown[0]!r}: expected some of {', '.join(ANOMALY_PROTOCOLS)}"
        )
    return ("pooled", *(p for p in ANOMALY_PROTOCOLS[1:] if p in protocols))


class MethodAccumulator(Accumulator):
    """The accumulators of one method's ``protocols`` (pooled always; ``per_image`` and
    ``smiyc`` when asked, else None), with non-finite score counting.

    Non-finite scores on evaluated pixels are counted per image; they are excluded from the
    metrics and :meth:`check_nonfinite` raises unless the policy is ``"exclude"``.
    """

    def __init__(
        self,
        name: str,
        nonfinite: str = "error",
        protocols: Sequence[str] = ("pooled", "per_image"),
        open_groups: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if nonfinite not in NONFINITE_POLICIES:
            raise HazardsegError(
                f"nonfinite policy {nonfinite!r}: expected one of {', '.join(NONFINITE_POLICIES)}"
            )
        self.name = name
        self.policy = nonfinite
        self.protocols = check_protocols(protocols)
        self.pooled: PooledOOD
        self.add_child("pooled", PooledOOD())
        self.per_image: PerImageOOD | None = None
        if "per_image" in self.protocols:
            self.add_child("per_image", PerImageOOD())
        self.smiyc: SmiycPixels | None = None
        if "smiyc" in self.protocols:
            self.add_child("smiyc", SmiycPixels())
        self.open_set: OpenSetCalibration | None = None
        if "open_miou" in self.protocols:
            self.add_child("open_set", OpenSetCalibration(open_groups))
        self.nonfinite: int
        self.nonfinite_images: list[str]
        self.add_state("nonfinite", 0, "sum")
        self.add_state("nonfinite_images", [], "extend")

    def update(
        self,
        scores: torch.Tensor,
        is_anomaly: torch.Tensor,
        valid: torch.Tensor,
        ids: list[str],
        per_image_valid: torch.Tensor | None = None,
        groups: Sequence[str | None] = (),
    ) -> None:
        """Add a batch: scores (N, H, W) float, masks (N, H, W) bool, one id per image.

        ``valid`` selects the pixels of the pooled protocol, ``per_image_valid`` those of the
        per-image protocol (default: ``valid``; see
        :func:`hazardseg.metrics.ood_protocol.per_image_masks`).
        """
        pi_valid = valid if per_image_valid is None else per_image_valid
        bad = ~torch.isfinite(scores) & (valid | pi_valid)
        if bool(bad.any()):
            per = bad.flatten(1).sum(1).tolist()
            self.nonfinite += int(sum(per))
            self.nonfinite_images.extend(i for i, c in zip(ids, per, strict=True) if c)
            valid = valid & ~bad
            pi_valid = pi_valid & ~bad
        self.pooled.update(scores, is_anomaly, valid)
        if self.per_image is not None:
            self.per_image.update(scores, is_anomaly, pi_valid, image_ids=list(ids))
        if self.smiyc is not None:
            self.smiyc.update(scores, is_anomaly, valid, list(ids))
        if self.open_set is not None:
            self.open_set.update(scores, is_anomaly, valid, groups)

    def check_nonfinite(self, where: str) -> None:
        """Raise when non-finite scores were seen and the policy is ``"error"``."""
        if self.nonfinite and self.policy == "error":
            first = ", ".join(sorted(self.nonfinite_images)[:3])
            raise HazardsegError(
                f"{where}: method '{self.name}' has {self.nonfinite} NaN/infinite scores in "
                f"{len(self.nonfinite_images)} image(s) (first: {first}); use --nonfinite "
                "exclude to leave those pixels out (the count is recorded)"
            )


class MetricCollector(Accumulator):
    """Every metric of one pass: a confusion matrix (when ``num_classes``), one
    :class:`MethodAccumulator` per method of ``methods`` and one :class:`ComponentMetrics` per
    method with a threshold in ``component_thresholds``.

    ``update(ids, mask, pred=None, scores=None)`` takes a batch: sample ids, class-id masks
    (N, H, W), predicted classes (N, H, W) and method -> score maps (N, H, W). ``labels`` (the
    dataset's mask ids; default StreetHazards') and ``exclude_unlabeled`` choose the
    protocols' pixel sets, ``protocols`` the methods' protocols (:data:`ANOMALY_PROTOCOLS`;
    ``open_miou`` with ``group_of``, an image id's group, and ``open_groups``, every group),
    ``component_options`` the components' settings (``ComponentMetrics`` keywords besides the
    threshold); ``times`` holds the seconds spent
    per part (``segmentation_s``, ``ood_s``, ``components_s``).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        methods: Sequence[str] = (),
        *,
        nonfinite: str = "error",
        exclude_unlabeled: bool = False,
        component_thresholds: Mapping[str, float | None] | None = None,
        labels: LabelSpec | None = None,
        protocols: Sequence[str] = ("pooled", "per_image"),
        component_options: Mapping[str, Any] | None = None,
        group_of: Callable[[str], str | None] | None = None,
        open_groups: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.exclude_unlabeled = bool(exclude_unlabeled)
        self.group_of = group_of
        self.labels = labels or default_labels()
        self.segmentation: ConfusionMatrix | None = None
        if num_classes is not None:
            self.segmentation = ConfusionMatrix(num_classes, self.labels.unlabeled_id)
            self.add_child("segmentation", self.segmentation)
        self.methods: dict[str, MethodAccumulator] = {}
        for name in methods:
            self.methods[name] = MethodAccumulator(name, nonfinite, protocols, open_groups)
            self.add_child(f"method:{name}", self.methods[name])
        self.components: dict[str, ComponentMetrics] = {}
        for name, threshold in (component_thresholds or {}).items():
            if threshold is not None:
                self.components[name] = ComponentMetrics(threshold, **(component_options or {}))
                self.add_child(f"components:{name}", self.components[name])
        self.times = {"segmentation_s": 0.0, "ood_s": 0.0, "components_s": 0.0}

    def check_mergeable(self, other: Accumulator) -> None:
        super().check_mergeable(other)
        if set(other.children()) != set(self.children()):
            raise ValueError("cannot merge collectors of different methods or components")

    def update_segmentation(self, pred: torch.Tensor, mask: torch.Tensor) -> None:
        """Add predicted classes against the masks (the confusion matrix only)."""
        t0 = time.perf_counter()
        if self.segmentation is not None:
            self.segmentation.update(pred, mask)
        self.times["segmentation_s"] += time.perf_counter() - t0

    def update_scores(
        self, ids: list[str], mask: torch.Tensor, scores: Mapping[str, torch.Tensor]
    ) -> None:
        """Add score maps of a batch: pooled and per-image metrics of each method (their own
        pixel sets, non-finite scores counted) and components where a threshold is set."""
        t0 = time.perf_counter()
        is_anom, valid = self.labels.evaluation_masks(mask, self.exclude_unlabeled)
        if self.methods:
            pi_valid = None
            if any(a.per_image is not None for a in self.methods.values()):
                _, pi_valid = self.labels.per_image_masks(mask, self.exclude_unlabeled)
            groups = [self.group_of(i) for i in ids] if self.group_of else [None] * len(ids)
            for name, acc in self.methods.items():
                if name in scores:
                    acc.update(scores[name], is_anom, valid, ids, pi_valid, groups)
        t1 = time.perf_counter()
        for name, comp in self.components.items():
            if name in scores:
                s = scores[name]
                comp.update(s, is_anom, valid & torch.isfinite(s))
        self.times["ood_s"] += t1 - t0
        self.times["components_s"] += time.perf_counter() - t1

    def update(
        self,
        ids: list[str],
        mask: torch.Tensor,
        pred: torch.Tensor | None = None,
        scores: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Add a batch (see the class docstring)."""
        if pred is not None:
            self.update_segmentation(pred, mask)
        if scores:
            self.update_scores(ids, mask, scores)

    def compute(self, max_curve_points: int = 1000) -> dict[str, Any]:
        """``segmentation`` (the confusion matrix's results, or None), ``pooled`` (method ->
        ``PooledOOD.compute``), ``per_image`` (method -> ``PerImageOOD.compute``, for the
        methods measured so), ``smiyc`` (method -> ``SmiycPixels.compute``, likewise) and
        ``components`` (method -> ``ComponentMetrics.compute``)."""
        return {
            "segmentation": None if self.segmentation is None else self.segmentation.compute(),
            "pooled": {n: a.pooled.compute(max_curve_points) for n, a in self.methods.items()},
            "per_image": {n: a.per_image.compute() for n, a in self.methods.items() if a.per_image},
            "smiyc": {n: a.smiyc.compute() for n, a in self.methods.items() if a.smiyc},
            "components": {n: c.compute() for n, c in self.components.items()},
        }
