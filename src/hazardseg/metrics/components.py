"""Component-level anomaly metrics (SegmentMeIfYouCan): sIoU, PPV and F1 over sIoU thresholds.

The definition of SegmentMeIfYouCan's code (road-anomaly-benchmark,
``metrics/instance_segmentation.py``: ``default_instancer`` and ``segment_metrics``;
``tests/test_components_smiyc.py`` compares with an independent implementation of it):

1. flagged pixels: ``score >= threshold`` (hazardseg's default, consistent with the pooled
   best-F1 threshold, a score value) or ``score > threshold`` (SMIYC's rule:
   ``threshold_rule=">"``); scores are rounded to float32 and compared exactly; flagged pixels
   outside the evaluated (valid) region are dropped;
2. the ground-truth anomaly (``is_anomaly & valid``) and the flagged pixels are each labelled
   ONCE into 8-connected components;
3. size filters: predicted components with fewer than ``min_pred_size`` pixels are dropped;
   ground-truth components with fewer than ``min_gt_size`` pixels become ignored pixels (as in
   SMIYC's code, the non-anomaly pixels count as one more "component" for this filter, so an
   image with fewer than ``min_gt_size`` non-anomaly pixels has them all ignored);
4. everything is restricted to the region of interest (valid pixels minus the ignored ones)
   WITHOUT relabelling, so the filters never split a predicted component; components without
   a pixel in the region disappear.

For a ground-truth component ``k`` with ``K^(k)`` the union of predicted components that
intersect it, and ``A(k)`` the pixels of other ground-truth components (all inside the
region)::

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

from hazardseg.metrics.base import Accumulator

TAUS: tuple[float, ...] = tuple(float(t) for t in np.linspace(0.25, 0.75, 11))
"""sIoU / PPV thresholds of the component F1."""

_STRUCTURE = np.ones((3, 3), dtype=bool)

THRESHOLD_RULES: tuple[str, ...] = (">=", ">")
"""``">="``: flag ``score >= threshold`` (hazardseg); ``">"``: ``score > threshold`` (SMIYC)."""


def component_definition(
    threshold_rule: str = ">=", min_pred_size: int = 0, min_gt_size: int = 0
) -> str:
    """One line naming the component definition with these options (for results.json)."""
    return (
        f"SegmentMeIfYouCan component metrics: flag score {threshold_rule} threshold on valid "
        f"pixels; 8-connected components labelled once; predicted components < "
        f"{min_pred_size} px dropped; ground-truth components < {min_gt_size} px ignored; "
        "restricted to the remaining region without relabelling; sIoU per ground-truth "
        "component, PPV per predicted component, F1 over tau in linspace(0.25, 0.75, 11)"
    )


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def component_scores(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sIoU of every ground-truth component and PPV of every predicted component.

    ``gt`` and ``pred`` are (H, W) bool masks; components are 8-connected.
    """
    gt_lab, _ = ndimage.label(gt, structure=_STRUCTURE)
    pred_lab, _ = ndimage.label(pred, structure=_STRUCTURE)
    return label_scores(gt_lab.ravel(), pred_lab.ravel())


def label_scores(gt_lab: np.ndarray, pred_lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sIoU per ground-truth component and PPV per predicted component from component labels.

    ``gt_lab`` / ``pred_lab``: int label arrays of the same pixels (any shape, e.g. the pixels
    of a region of interest), 0 = background. Components are taken as labelled (a label split
    into several pieces stays one component); labels without a pixel are absent. Results are
    in increasing label order.
    """
    g = np.asarray(gt_lab, dtype=np.int64).ravel()
    p = np.asarray(pred_lab, dtype=np.int64).ravel()
    touched = (g > 0) | (p > 0)
    g, p = g[touched], p[touched]
    if g.size == 0:
        return np.zeros(0), np.zeros(0)
    n_gt, n_pred = int(g.max()), int(p.max())
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
    has_gt = size_gt[1:] > 0
    has_pred = size_pred[1:] > 0
    siou = inter[1:][has_gt] / (size_gt[1:][has_gt] + spill[1:][has_gt])
    ppv = (size_pred[1:][has_pred] - outside_gt[1:][has_pred]) / size_pred[1:][has_pred]
    return siou, ppv


def _touched(
    gt_lab: np.ndarray, pred_lab: np.ndarray, roi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The component labels of the region's pixels that lie in some component."""
    sel = (gt_lab > 0) | (pred_lab > 0)
    sel &= roi
    return gt_lab[sel], pred_lab[sel]


class ComponentMetrics(Accumulator):
    """Accumulates component-level metrics at one score ``threshold`` over a dataset.

    The usual threshold is the pooled best-F1 threshold, known only after a first pass
    (:meth:`hazardseg.metrics.ood.PooledOOD.compute`); feed the scores again (recomputed or
    saved) in a second pass. ``threshold_rule``: ``">="`` flags ``score >= threshold``
    (default, consistent with the pooled best-F1 threshold), ``">"`` flags ``score >
    threshold`` as SegmentMeIfYouCan does. ``min_pred_size`` / ``min_gt_size`` are SMIYC's size
    filters (500 / 100 on its anomaly track, 50 / 10 on its obstacle track; 0 = keep all, the
    default), applied as SMIYC applies them (module docstring).
    """

    def __init__(
        self,
        threshold: float,
        min_pred_size: int = 0,
        min_gt_size: int = 0,
        threshold_rule: str = ">=",
    ) -> None:
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold}")
        if threshold_rule not in THRESHOLD_RULES:
            raise ValueError(
                f"threshold_rule must be one of {', '.join(THRESHOLD_RULES)}, got "
                f"{threshold_rule!r}"
            )
        if min_pred_size < 0 or min_gt_size < 0:
            raise ValueError(
                f"min_pred_size and min_gt_size must be >= 0, got {min_pred_size}, {min_gt_size}"
            )
        super().__init__()
        self.threshold = float(threshold)
        self.min_pred_size = int(min_pred_size)
        self.min_gt_size = int(min_gt_size)
        self.threshold_rule = threshold_rule
        counts = torch.zeros(len(TAUS), dtype=torch.int64)
        self.tp: torch.Tensor
        self.fn: torch.Tensor
        self.fp: torch.Tensor
        self.add_state("tp", counts, "sum")
        self.add_state("fn", counts, "sum")
        self.add_state("fp", counts, "sum")
        self.siou_sum: torch.Tensor
        self.ppv_sum: torch.Tensor
        self.add_state("siou_sum", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("ppv_sum", torch.zeros((), dtype=torch.float64), "sum")
        self.num_gt: torch.Tensor
        self.num_pred: torch.Tensor
        self.add_state("num_gt", torch.zeros((), dtype=torch.int64), "sum")
        self.add_state("num_pred", torch.zeros((), dtype=torch.int64), "sum")

    @property
    def definition(self) -> str:
        """The definition these settings compute (see :func:`component_definition`)."""
        return component_definition(self.threshold_rule, self.min_pred_size, self.min_gt_size)

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

    def flagged(self, scores: np.ndarray) -> np.ndarray:
        """Bool mask of the pixels flagged anomalous (float32-rounded score vs threshold)."""
        s = np.asarray(scores)
        if s.dtype not in (np.float16, np.float32):
            s = s.astype(np.float32)
        t = np.float64(self.threshold)  # compared in float64, element by element
        return s > t if self.threshold_rule == ">" else s >= t

    def _update_image(self, s: np.ndarray, y: np.ndarray, v: np.ndarray) -> None:
        gt = y & v
        pred_lab, _ = ndimage.label(self.flagged(s) & v, structure=_STRUCTURE)
        if self.min_pred_size > 0:
            sizes = np.bincount(pred_lab.ravel())
            small = sizes < self.min_pred_size
            small[0] = False
            pred_lab[small[pred_lab]] = 0
        gt_lab, _ = ndimage.label(gt, structure=_STRUCTURE)
        roi = v
        if self.min_gt_size > 0:
            # label 0 (every non-anomaly pixel) takes part, as in SMIYC's code
            small = np.bincount(gt_lab.ravel()) < self.min_gt_size
            roi = v & ~small[gt_lab]
        # only pixels of some component count (label_scores drops the others)
        siou, ppv = label_scores(*_touched(gt_lab, pred_lab, roi))
        taus = np.asarray(TAUS)[:, None]
        self.tp += torch.from_numpy((siou[None, :] >= taus).sum(axis=1))
        self.fn += torch.from_numpy((siou[None, :] < taus).sum(axis=1))
        self.fp += torch.from_numpy((ppv[None, :] < taus).sum(axis=1))
        self.siou_sum += float(siou.sum())
        self.ppv_sum += float(ppv.sum())
        self.num_gt += int(siou.size)
        self.num_pred += int(ppv.size)

    def check_mergeable(self, other: Accumulator) -> None:
        """Only counts of the same threshold, rule and size filters add up."""
        super().check_mergeable(other)
        assert isinstance(other, ComponentMetrics)
        mine = (self.threshold, self.min_pred_size, self.min_gt_size, self.threshold_rule)
        theirs = (other.threshold, other.min_pred_size, other.min_gt_size, other.threshold_rule)
        if mine != theirs:
            raise ValueError(f"cannot merge component metrics with settings {theirs} into {mine}")

    def compute(self) -> dict[str, Any]:
        """Return ``mean_f1``, ``f1_per_tau`` ({"0.25": f1, ...}), ``mean_siou``, ``mean_ppv``,
        ``num_gt_components``, ``num_pred_components``, ``threshold``, ``threshold_rule``,
        ``min_pred_size``, ``min_gt_size`` and ``definition``.

        F1 at a tau is NaN when there is no component at all; means of no component are NaN.
        """
        tps, fns, fps = (t.cpu().numpy() for t in (self.tp, self.fn, self.fp))
        denom = 2 * tps + fns + fps
        f1 = [2 * tp / d if d else float("nan") for tp, d in zip(tps, denom, strict=True)]
        num_gt, num_pred = int(self.num_gt), int(self.num_pred)
        siou_sum, ppv_sum = float(self.siou_sum), float(self.ppv_sum)
        return {
            "mean_f1": float(np.mean(f1)),
            "f1_per_tau": {f"{tau:.2f}": float(v) for tau, v in zip(TAUS, f1, strict=True)},
            "mean_siou": siou_sum / num_gt if num_gt else float("nan"),
            "mean_ppv": ppv_sum / num_pred if num_pred else float("nan"),
            "num_gt_components": num_gt,
            "num_pred_components": num_pred,
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "min_pred_size": self.min_pred_size,
            "min_gt_size": self.min_gt_size,
            "definition": self.definition,
        }
