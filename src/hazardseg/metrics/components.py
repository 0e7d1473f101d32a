"""Component-level anomaly metrics (SegmentMeIfYouCan): sIoU, PPV and F1 over sIoU thresholds.

Per image, the ground-truth anomaly mask and the predicted mask (``score >= threshold``, only
on evaluated pixels) are split into 8-connected components. For a ground-truth component
``k`` with ``K^(k)`` the union of predicted components that intersect it, and ``A(k)`` the
pixels of other ground-truth components::

    sIoU(k) = |k ∩ K^(k)| / |(k ∪ K^(k)) \\ A(k)|

For a predicted component ``k^`` the positive predictive value is
``PPV(k^) = |k^ ∩ GT anomaly| / |k^|``. For each ``tau`` in ``linspace(0.25, 0.75, 11)``:
``TP`` = ground-truth components with ``sIoU >= tau``, ``FN`` = the others, ``FP`` = predicted
components with ``PPV < tau``, all summed over the dataset, ``F1(tau) = 2TP / (2TP + FN + FP)``;
``mean_f1`` averages the 11 values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from hazardseg.metrics._histogram import float32_ceil

TAUS: tuple[float, ...] = tuple(float(t) for t in np.linspace(0.25, 0.75, 11))
"""sIoU / PPV thresholds of the component F1."""

_STRUCTURE = np.ones((3, 3), dtype=bool)


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def component_scores(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sIoU of every ground-truth component and PPV of every predicted component.

    ``gt`` and ``pred`` are (H, W) bool masks; components are 8-connected.
    """
    gt_lab, n_gt = ndimage.label(gt, structure=_STRUCTURE)
    pred_lab, n_pred = ndimage.label(pred, structure=_STRUCTURE)
    if n_gt == 0 and n_pred == 0:
        return np.zeros(0), np.zeros(0)
    touched = (gt_lab > 0) | (pred_lab > 0)
    g = gt_lab[touched].astype(np.int64)
    p = pred_lab[touched].astype(np.int64)
    # Sparse table of (gt component, predicted component) pixel counts; 0 = background.
    pairs, counts = np.unique(g * (n_pred + 1) + p, return_counts=True)
    gi, pj = pairs // (n_pred + 1), pairs % (n_pred + 1)
    size_gt = np.bincount(gi, weights=counts, minlength=n_gt + 1)
    size_pred = np.bincount(pj, weights=counts, minlength=n_pred + 1)
    outside_gt = np.bincount(pj[gi == 0], weights=counts[gi == 0], minlength=n_pred + 1)
    # sIoU denominator: |k| plus the pixels of touching predictions that lie outside every
    # ground-truth component (their pixels on k are in the intersection, on other
    # components in A(k)).
    link = (gi > 0) & (pj > 0)
    inter = np.bincount(gi[link], weights=counts[link], minlength=n_gt + 1)
    spill = np.bincount(gi[link], weights=outside_gt[pj[link]], minlength=n_gt + 1)
    siou = inter[1:] / (size_gt[1:] + spill[1:])
    ppv = (size_pred[1:] - outside_gt[1:]) / size_pred[1:]
    return siou, ppv


class ComponentMetrics:
    """Accumulates component-level metrics at one score ``threshold`` over a dataset.

    The usual threshold is the pooled best-F1 threshold, known only after a first pass
    (:meth:`hazardseg.metrics.ood.PooledOOD.compute`); feed the scores again (recomputed or
    saved) in a second pass. A pixel is predicted anomalous when ``score >= threshold`` and it
    is valid. ``min_pred_size`` / ``min_gt_size`` optionally drop small predicted components
    and turn small ground-truth components into ignored pixels (SegmentMeIfYouCan uses 500 and
    100 on its anomaly track; 0 = keep all, the default).
    """

    def __init__(self, threshold: float, min_pred_size: int = 0, min_gt_size: int = 0) -> None:
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold}")
        self.threshold = float(threshold)
        self.min_pred_size = int(min_pred_size)
        self.min_gt_size = int(min_gt_size)
        self.reset()

    def reset(self) -> None:
        """Forget every image."""
        self.tp = np.zeros(len(TAUS), np.int64)
        self.fn = np.zeros(len(TAUS), np.int64)
        self.fp = np.zeros(len(TAUS), np.int64)
        self.siou_sum = 0.0
        self.ppv_sum = 0.0
        self.num_gt = 0
        self.num_pred = 0

    def update(
        self,
        scores: torch.Tensor | np.ndarray,
        is_anomaly: torch.Tensor | np.ndarray,
        valid: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Add one image (H, W) or a batch (N, H, W)."""
        s, y = _as_numpy(scores), _as_numpy(is_anomaly).astype(bool)
        v = np.ones_like(y) if valid is None else _as_numpy(valid).astype(bool)
        if not (s.shape == y.shape == v.shape) or s.ndim not in (2, 3):
            raise ValueError(
                f"scores, is_anomaly and valid must share an (H, W) or (N, H, W) shape, got "
                f"{s.shape}, {y.shape}, {v.shape}"
            )
        if s.ndim == 2:
            s, y, v = s[None], y[None], v[None]
        for i in range(s.shape[0]):
            self._update_image(s[i], y[i], v[i])

    def _update_image(self, s: np.ndarray, y: np.ndarray, v: np.ndarray) -> None:
        gt = y & v
        pred = (s.astype(np.float32) >= np.float32(float32_ceil(self.threshold))) & v
        if self.min_pred_size > 0:
            pred = _drop_small(pred, self.min_pred_size)
        if self.min_gt_size > 0:
            small = gt & ~_drop_small(gt, self.min_gt_size)
            gt &= ~small
            pred &= ~small
        siou, ppv = component_scores(gt, pred)
        taus = np.asarray(TAUS)[:, None]
        self.tp += (siou[None, :] >= taus).sum(axis=1)
        self.fn += (siou[None, :] < taus).sum(axis=1)
        self.fp += (ppv[None, :] < taus).sum(axis=1)
        self.siou_sum += float(siou.sum())
        self.ppv_sum += float(ppv.sum())
        self.num_gt += int(siou.size)
        self.num_pred += int(ppv.size)

    def merge(self, other: ComponentMetrics) -> ComponentMetrics:
        """Add the counts of ``other`` (same threshold and size filters); return self."""
        mine = (self.threshold, self.min_pred_size, self.min_gt_size)
        theirs = (other.threshold, other.min_pred_size, other.min_gt_size)
        if mine != theirs:
            raise ValueError(f"cannot merge component metrics with settings {theirs} into {mine}")
        self.tp += other.tp
        self.fn += other.fn
        self.fp += other.fp
        self.siou_sum += other.siou_sum
        self.ppv_sum += other.ppv_sum
        self.num_gt += other.num_gt
        self.num_pred += other.num_pred
        return self

    def all_reduce(self) -> None:
        """Sum the counts of all torch.distributed ranks (no-op when not initialised)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        packed = torch.tensor(
            [*self.tp, *self.fn, *self.fp, self.num_gt, self.num_pred], dtype=torch.int64
        )
        sums = torch.tensor([self.siou_sum, self.ppv_sum], dtype=torch.float64)
        dist.all_reduce(packed)
        dist.all_reduce(sums)
        t = len(TAUS)
        vals = packed.numpy()
        self.tp, self.fn, self.fp = vals[:t].copy(), vals[t : 2 * t].copy(), vals[2 * t : 3 * t]
        self.num_gt, self.num_pred = int(vals[3 * t]), int(vals[3 * t + 1])
        self.siou_sum, self.ppv_sum = float(sums[0]), float(sums[1])

    def compute(self) -> dict[str, Any]:
        """Return ``mean_f1``, ``f1_per_tau`` ({"0.25": f1, ...}), ``mean_siou``, ``mean_ppv``,
        ``num_gt_components``, ``num_pred_components`` and ``threshold``.

        F1 at a tau is NaN when there is no component at all; means of no component are NaN.
        """
        denom = 2 * self.tp + self.fn + self.fp
        f1 = [2 * tp / d if d else float("nan") for tp, d in zip(self.tp, denom, strict=True)]
        return {
            "mean_f1": float(np.mean(f1)),
            "f1_per_tau": {f"{tau:.2f}": float(v) for tau, v in zip(TAUS, f1, strict=True)},
            "mean_siou": self.siou_sum / self.num_gt if self.num_gt else float("nan"),
            "mean_ppv": self.ppv_sum / self.num_pred if self.num_pred else float("nan"),
            "num_gt_components": self.num_gt,
            "num_pred_components": self.num_pred,
            "threshold": self.threshold,
        }


def _drop_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    """``mask`` without its 8-connected components smaller than ``min_size`` pixels."""
    lab, n = ndimage.label(mask, structure=_STRUCTURE)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[lab]
