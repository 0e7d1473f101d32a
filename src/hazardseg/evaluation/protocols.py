"""Which anomaly protocols an evaluation measures (the dataset's own by default) and the
SegmentMeIfYouCan section of a method's results.

``smiyc`` needs a second look at every score map: its component metrics use the threshold of
the binned pixel curve (``PixBinaryClass``'s best F1), known only after the first pass. The
second pass is a second forward (``evaluate``) or a second read of the maps (``eval-maps``), as
for the oracle components; nothing is kept on disk.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from hazardseg.config import EvalConfig
from hazardseg.data.labels import LabelSpec
from hazardseg.data.registry import DatasetDef
from hazardseg.errors import HazardsegError
from hazardseg.evaluation.components import component_section, pooled_thresholds
from hazardseg.metrics.collector import MetricCollector, check_protocols
from hazardseg.metrics.components import ComponentMetrics, component_definition
from hazardseg.metrics.open_set import CALIBRATION_SCALE, DEFAULT_TPR, OpenSetConfusion
from hazardseg.metrics.smiyc import PIXEL_DEFINITION, component_settings

TRACK_NAMES: dict[str, str] = {
    "anomaly": "SegEval-AnomalyTrack",
    "obstacle": "SegEval-ObstacleTrack",
}
"""The benchmark's name of each track's component metric."""


def anomaly_protocols(spec: EvalConfig, dataset: DatasetDef) -> tuple[str, ...]:
    """The protocols of the spec (``"auto"``: the dataset's own); empty when the dataset marks
    no anomalies (e.g. Cityscapes: only segmentation is measured). ``open_miou`` needs a
    dataset with classes and test groups (StreetHazards' towns): HazardsegError otherwise."""
    if dataset.labels.anomaly_id is None:
        return ()
    text = str(spec.protocols).strip()
    if text == "auto":
        return check_protocols(dataset.protocols)
    protocols = check_protocols([p.strip() for p in text.split(",") if p.strip()])
    if "open_miou" in protocols and (
        dataset.labels.num_classes == 0 or not dataset.open_set_groups
    ):
        lacks = "test groups" if dataset.labels.num_classes else "classes"
        raise HazardsegError(
            f"--protocols open_miou: {dataset.title} has no {lacks} for it (open-mIoU "
            "calibrates each test town on the other: StreetHazards)"
        )
    return protocols


def smiyc_track(dataset: DatasetDef) -> str:
    """The component track of a dataset under the ``smiyc`` protocol (``anomaly`` unless the
    dataset is evaluated on the road only)."""
    return dataset.component_track or "anomaly"


def smiyc_definitions(dataset: DatasetDef) -> dict[str, str]:
    """``protocol.definitions`` entries of the ``smiyc`` protocol."""
    track = smiyc_track(dataset)
    return {
        "smiyc": PIXEL_DEFINITION,
        "smiyc_components": f"{TRACK_NAMES[track]}: "
        + component_definition(**component_settings(track))
        + "; threshold = the PixBinaryClass best-F1 threshold rounded to float16, scores float16",
    }


def smiyc_thresholds(pixels: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Each method's ``SegEval`` threshold from its ``SmiycPixels.compute()`` result."""
    return {name: res.get("component_threshold") for name, res in pixels.items()}


def smiyc_section(
    pixels: dict[str, Any], components: ComponentMetrics | None, track: str
) -> dict[str, Any]:
    """The ``smiyc`` block of one method: the binned pixel metrics and the track's component
    metrics (None where the pixel metrics are undefined)."""

    def num(x: Any) -> float | None:
        return None if x is None or not math.isfinite(float(x)) else float(x)

    out: dict[str, Any] = {
        "aupr": num(pixels["aupr"]),
        "auroc": num(pixels["auroc"]),
        "fpr95": num(pixels["fpr95"]),
        "best_f1": num(pixels["best_f1"]),
        "best_f1_threshold": num(pixels["best_f1_threshold"]),
        "num_pos": int(pixels["num_pos"]),
        "num_neg": int(pixels["num_neg"]),
        "num_frames": int(pixels["num_frames"]),
        "num_empty": int(pixels["num_empty"]),
        "num_points": int(pixels["num_points"]),
        "undefined_reason": pixels["undefined_reason"],
        "track": TRACK_NAMES[track],
        "components": None,
    }
    if components is not None:
        out["components"] = component_section(components, "smiyc")
    return out


def float16_scores(scores: torch.Tensor) -> torch.Tensor:
    """Scores rounded to float16 as the benchmark stores them (numpy's rounding)."""
    if scores.dtype in (torch.float16, torch.float32, torch.bfloat16):
        return scores.to(torch.float16)
    return torch.from_numpy(scores.detach().cpu().numpy().astype(np.float16)).to(scores.device)


class SecondPass:
    """The metrics that need a threshold known only after the first pass: the oracle
    components (pooled best-F1 thresholds), the ``smiyc`` track's components
    (``PixBinaryClass`` best-F1 thresholds, float16 scores) and open-mIoU (each group's
    threshold from the other groups; needs the predicted classes). Feed it every batch
    again."""

    def __init__(
        self,
        oracle: Mapping[str, float | None],
        smiyc: Mapping[str, float | None],
        track: str,
        exclude_unlabeled: bool,
        labels: LabelSpec,
        open_thresholds: Mapping[str, dict[str, float]] | None = None,
        group_of: Callable[[str], str | None] | None = None,
    ) -> None:
        self.track = track
        self.labels = labels
        self.group_of = group_of
        self.open_set = {
            n: OpenSetConfusion(labels.num_classes, t)
            for n, t in (open_thresholds or {}).items()
            if t
        }
        self.oracle = MetricCollector(
            exclude_unlabeled=exclude_unlabeled, component_thresholds=oracle, labels=labels
        )
        self.smiyc = MetricCollector(
            exclude_unlabeled=exclude_unlabeled,
            component_thresholds=smiyc,
            labels=labels,
            component_options=component_settings(track),
        )

    @classmethod
    def after_first_pass(
        cls,
        dataset: DatasetDef,
        exclude_unlabeled: bool,
        *,
        oracle: Mapping[str, dict[str, Any]] | None = None,
        pixels: Mapping[str, dict[str, Any]] | None = None,
        open_set: Mapping[str, dict[str, dict[str, Any]]] | None = None,
    ) -> SecondPass:
        """The second pass that a first pass's results call for on ``dataset``: oracle
        components at the best-F1 thresholds of ``oracle`` (``PooledOOD.compute()`` results;
        None: no oracle components), the ``smiyc`` track's components at the thresholds of
        ``pixels`` (``SmiycPixels.compute()``), open-mIoU at each group's threshold of
        ``open_set`` (``OpenSetCalibration.thresholds()``)."""
        return cls(
            pooled_thresholds(dict(oracle)) if oracle is not None else {},
            smiyc_thresholds(dict(pixels or {})),
            smiyc_track(dataset),
            exclude_unlabeled,
            dataset.labels,
            {n: {g: c["threshold"] for g, c in cal.items()} for n, cal in (open_set or {}).items()},
            dataset.open_set_group,
        )

    @property
    def methods(self) -> set[str]:
        """The methods whose score maps the pass needs."""
        return set(self.oracle.components) | set(self.smiyc.components) | set(self.open_set)

    @property
    def needed(self) -> bool:
        """Whether a second pass is needed at all."""
        return bool(self.methods)

    def update(
        self,
        ids: list[str],
        mask: torch.Tensor,
        scores: Mapping[str, torch.Tensor],
        pred: torch.Tensor | None = None,
    ) -> None:
        """Add a batch's score maps (and predicted classes, for open-mIoU)."""
        self.oracle.update_scores(ids, mask, scores)
        wanted = {n: float16_scores(s) for n, s in scores.items() if n in self.smiyc.components}
        self.smiyc.update_scores(ids, mask, wanted)
        if self.open_set and pred is not None:
            is_anomaly, valid = self.labels.evaluation_masks(mask)
            known = torch.where(valid & ~is_anomaly, mask.long(), torch.full_like(mask.long(), -1))
            groups = [self.group_of(i) if self.group_of else None for i in ids]
            for name, acc in self.open_set.items():
                acc.update(pred, scores[name], known, is_anomaly, groups)

    def all_reduce(self) -> None:
        """Combine every rank's counts."""
        self.oracle.all_reduce()
        self.smiyc.all_reduce()
        for acc in self.open_set.values():
            acc.all_reduce()

    def oracle_sections(self, methods: list[str]) -> dict[str, dict[str, Any] | None]:
        """The ``components`` block of each method at its oracle threshold (None without)."""
        return {
            n: component_section(self.oracle.components[n], "oracle")
            if n in self.oracle.components
            else None
            for n in methods
        }

    def smiyc_section(self, name: str, pixels: dict[str, Any]) -> dict[str, Any]:
        """The ``smiyc`` block of one method."""
        return smiyc_section(pixels, self.smiyc.components.get(name), self.track)

    def open_set_section(
        self, name: str, calibration: dict[str, dict[str, Any]]
    ) -> dict[str, Any] | None:
        """The ``open_set`` block of one method (None without two groups to calibrate on)."""
        if name not in self.open_set:
            return None
        res = self.open_set[name].compute()
        for group, info in res["groups"].items():
            info["calibrated_on"] = calibration[group]["calibrated_on"]
            info["threshold_exact"] = calibration[group]["exact"]
        res.update(tpr=DEFAULT_TPR, scale=CALIBRATION_SCALE)
        return res
