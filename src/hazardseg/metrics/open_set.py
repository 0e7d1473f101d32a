"""Open-set segmentation quality (open-mIoU): how much mIoU survives when the anomaly threshold
is applied to the segmentation, as DenseHybrid's StreetHazards evaluation computes it
(matejgrcic/DenseHybrid ``evaluate_osr.py``, ``utils/iou.py``), written here without its code:

1. the test images form groups (StreetHazards: the towns ``t5`` and ``t6``);
2. each group's threshold is chosen on the other group(s): every non-ignored pixel's score,
   bilinearly downsampled by 0.5 with the label nearest-downsampled (``scale``), anomaly
   pixels positive; ``sklearn.metrics.roc_curve`` (``drop_intermediate=True``) and the first
   point whose TPR is strictly above 0.95 (``tpr``); its threshold, no interpolation;
3. on the group, pixels with ``score > threshold`` are predicted "anomaly" (an extra class),
   the others their argmax class; a (K+1)-class confusion matrix with ignored pixels left out
   gives IoU per known class (anomaly pixels predicted as class k are false positives of k,
   pixels of k flagged anomalous false negatives); open-mIoU = the mean over known classes of
   the IoUs that are defined (``nanmean``);
4. the groups' open-mIoUs are averaged weighted by their number of images; the closed mIoU
   is the argmax mIoU over every image with anomaly and ignored pixels left out.

hazardseg's known classes are the dataset's (StreetHazards: 13, "other" included; DenseHybrid
trains 12 classes and ignores "other"), so the numbers are those of the same definition on
this class set. Thresholds come from :class:`~hazardseg.metrics.ood.PooledOOD` counts: exact
while a group holds at most 2**18 distinct scores, else its histogram bins (``exact``
False, the threshold within one bin of the exact one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hazardseg.metrics.base import Accumulator
from hazardseg.metrics.ood import PooledOOD
from hazardseg.metrics.segmentation import ConfusionMatrix

DEFAULT_TPR = 0.95
CALIBRATION_SCALE = 0.5
OPEN_SET_DEFINITION = (
    "open-mIoU as DenseHybrid's evaluate_osr.py: per test group (StreetHazards town t5 / t6) "
    "a threshold chosen on the other group (scores bilinearly downsampled x0.5, labels "
    "nearest; sklearn roc_curve, first point with TPR > 0.95), pixels with score > threshold "
    "predicted anomaly, the others their argmax class; IoU per known class from the "
    "(K+1)-class confusion matrix without ignored pixels, nanmean over known classes; groups "
    "averaged weighted by their images. Closed mIoU: argmax over every image, anomaly and "
    "ignored pixels left out"
)


def roc_curve_threshold(
    neg: np.ndarray, pos: np.ndarray, values: np.ndarray, tpr: float = DEFAULT_TPR
) -> tuple[float, int]:
    """The threshold of the first ROC point with TPR strictly above ``tpr`` and its index,
    from counts per distinct score in decreasing score order, with the points
    ``roc_curve(drop_intermediate=True)`` keeps; ``(0.0, -1)`` when no point qualifies (as
    DenseHybrid's loop leaves its initial value)."""
    fps, tps = np.cumsum(neg), np.cumsum(pos)
    idx = np.arange(fps.size)
    if fps.size > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        idx = idx[keep]
    if tps.size == 0 or tps[-1] == 0:
        return 0.0, -1
    rates = tps[idx] / tps[-1]
    above = np.flatnonzero(rates > tpr)
    if above.size == 0:
        return 0.0, -1
    k = int(idx[above[0]])
    return float(values[k]), k


def downsample(
    scores: torch.Tensor, mask: torch.Tensor, scale: float = CALIBRATION_SCALE
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) scores bilinearly and masks nearest-downsampled by ``scale`` (DenseHybrid's
    calibration memory saving); unchanged at scale 1."""
    if scale == 1:
        return scores, mask
    s = F.interpolate(scores[:, None].float(), scale_factor=scale, mode="bilinear")[:, 0]
    m = F.interpolate(mask[:, None].float(), scale_factor=scale, mode="nearest")[:, 0]
    return s, m.to(mask.dtype)


class OpenSetCalibration(Accumulator):
    """The calibration pixels of one method: one :class:`PooledOOD` per group of ``groups``
    (every group of the split, known before the pass, so every rank holds the same parts)."""

    def __init__(self, groups: Sequence[str], scale: float = CALIBRATION_SCALE) -> None:
        super().__init__()
        self.scale = float(scale)
        self.groups: dict[str, PooledOOD] = {}
        for group in sorted(set(groups)):
            self.groups[group] = PooledOOD()
            self.add_child(f"group:{group}", self.groups[group])

    def update(
        self,
        scores: torch.Tensor,
        is_anomaly: torch.Tensor,
        valid: torch.Tensor,
        groups: Sequence[str | None],
    ) -> None:
        """Add a batch (N, H, W); images of no known group are skipped."""
        s, y = downsample(scores, is_anomaly.to(torch.uint8), self.scale)
        _, v = downsample(scores, valid.to(torch.uint8), self.scale)
        for i, group in enumerate(groups):
            if group in self.groups:
                self.groups[group].update(s[i], y[i].bool(), v[i].bool())

    def thresholds(self, tpr: float = DEFAULT_TPR) -> dict[str, dict[str, Any]]:
        """Each group's threshold, calibrated on the other groups' pixels: ``{group:
        {"threshold", "calibrated_on", "exact"}}`` (empty with fewer than two groups)."""
        out: dict[str, dict[str, Any]] = {}
        if len(self.groups) < 2:
            return out
        for group in self.groups:
            others = [g for g in self.groups if g != group]
            pooled = PooledOOD()
            for g in others:
                pooled.merge(self.groups[g])
            bins = pooled._bins()
            value, k = roc_curve_threshold(bins.neg, bins.pos, bins.low_value, tpr)
            out[group] = {
                "threshold": value,
                "calibrated_on": others,
                "exact": bool(k < 0 or bins.pure[k]),
            }
        return out


class OpenSetConfusion(Accumulator):
    """Open-set (K+1)-class confusion per group and the closed K-class confusion, of one
    method at its groups' thresholds (:class:`ConfusionMatrix` parts)."""

    def __init__(self, num_classes: int, thresholds: dict[str, float]) -> None:
        super().__init__()
        self.k = int(num_classes)
        self.thresholds = dict(thresholds)
        self.open: dict[str, ConfusionMatrix] = {}
        for group in self.thresholds:
            self.open[group] = ConfusionMatrix(self.k + 1, unlabeled_id=None)
            self.add_child(f"open:{group}", self.open[group])
        self.closed = ConfusionMatrix(self.k, unlabeled_id=None)
        self.add_child("closed", self.closed)
        self.images: torch.Tensor
        self.add_state("images", torch.zeros(len(self.thresholds), dtype=torch.int64), "sum")

    def update(
        self,
        pred: torch.Tensor,
        scores: torch.Tensor,
        known: torch.Tensor,
        is_anomaly: torch.Tensor,
        groups: Sequence[str | None],
    ) -> None:
        """Add a batch (N, H, W): argmax classes, scores, the ground truth as known class ids
        (``-1`` elsewhere) and anomaly flags; images whose group has no threshold are left out
        of the open matrices (not of the closed one)."""
        pred, known = pred.long(), known.long()
        self.closed.update(pred, known)  # pixels of no known class (-1) are skipped
        order = list(self.thresholds)
        for i, group in enumerate(groups):
            if group not in self.thresholds:
                continue
            flagged = scores[i].float() > self.thresholds[group]
            open_pred = torch.where(flagged, torch.full_like(pred[i], self.k), pred[i])
            gt = torch.where(is_anomaly[i], torch.full_like(known[i], self.k), known[i])
            self.open[group].update(open_pred, gt)
            self.images[order.index(group)] += 1

    def compute(self) -> dict[str, Any]:
        """``open_miou`` (image-weighted over groups), ``closed_miou``, ``miou_drop``,
        ``anomaly_iou`` (image-weighted) and per group ``{open_miou, anomaly_iou, threshold,
        num_images}``."""
        groups: dict[str, Any] = {}
        for i, (g, conf) in enumerate(self.open.items()):
            iou = conf.compute()["iou"].numpy()
            groups[g] = {
                "open_miou": _nanmean(iou[: self.k]),
                "anomaly_iou": _num(iou[self.k]),
                "threshold": self.thresholds[g],
                "num_images": int(self.images[i]),
            }
        total = sum(v["num_images"] for v in groups.values())
        weighted = {
            key: sum(v[key] * v["num_images"] for v in groups.values()) / total
            if total and all(v[key] is not None for v in groups.values())
            else None
            for key in ("open_miou", "anomaly_iou")
        }
        closed = _nanmean(self.closed.compute()["iou"].numpy())
        drop = None
        if closed is not None and weighted["open_miou"] is not None:
            drop = closed - weighted["open_miou"]
        return {**weighted, "closed_miou": closed, "miou_drop": drop, "groups": groups}


def _nanmean(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else None


def _num(x: float) -> float | None:
    return None if math.isnan(float(x)) else float(x)
