"""Threshold-curve metrics from cumulative counts; shared by the pooled and per-image paths.

Inputs are the points of the ROC curve in decreasing-threshold order: ``tps[i]`` / ``fps[i]``
are the numbers of positives / negatives with score >= ``thresholds[i]``, one point per
distinct score (all pixels with the same score form one step, as in scikit-learn).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

FPR_AT_TPR = 0.95
"""TPR level of the FPR95 metric."""


def curve_metrics(
    tps: np.ndarray, fps: np.ndarray, thresholds: np.ndarray, pure: np.ndarray | None = None
) -> dict[str, Any]:
    """AUROC, average precision, FPR at 95% TPR and best F1 of one curve.

    ``pure[i]`` False marks a point that merges several distinct scores (a histogram bin);
    inside such a step AP and FPR95 assume positives and negatives evenly interleaved (linear
    interpolation), which equals the tie treatment for AUROC. ``pure=None``: every point is
    one distinct score and the results are exact. Returns NaN metrics and an
    ``undefined_reason`` when positives or negatives are missing.
    """
    tps = np.asarray(tps, dtype=np.int64)
    fps = np.asarray(fps, dtype=np.int64)
    p = int(tps[-1]) if tps.size else 0
    n = int(fps[-1]) if fps.size else 0
    out: dict[str, Any] = {"num_pos": p, "num_neg": n, "undefined_reason": None}
    nan = float("nan")
    if p == 0 or n == 0:
        missing = "anomaly (positive)" if p == 0 else "normal (negative)"
        out.update(
            auroc=nan,
            aupr=nan,
            fpr95=nan,
            best_f1=nan,
            best_f1_threshold=nan,
            best_f1_precision=nan,
            best_f1_recall=nan,
            fpr95_index=-1,
            best_f1_index=-1,
            undefined_reason=f"no {missing} pixels among the evaluated pixels",
        )
        return out
    tpr = tps / p
    fpr = fps / n
    # Trapezoidal area under the ROC curve starting at (0, 0).
    tpr0 = np.concatenate(([0.0], tpr))
    fpr0 = np.concatenate(([0.0], fpr))
    auroc = float(np.sum(np.diff(fpr0) * (tpr0[1:] + tpr0[:-1])) / 2.0)
    precision = tps / (tps + fps)
    pos = np.diff(np.concatenate(([0], tps)))
    step_precision = precision
    if pure is not None and not pure.all():
        fp0 = np.concatenate(([0], fps[:-1]))
        step_precision = np.where(pure, precision, _mean_precision(tps, fps, pos, fp0))
    aupr = float(np.sum(pos / p * step_precision))
    i95 = int(np.searchsorted(tpr, FPR_AT_TPR, side="left"))
    fpr95 = float(fpr[i95])
    if pure is not None and not pure[i95]:
        fpr95 = _interpolated_fpr95(tps, fps, i95, p, n)
    f1 = 2 * tps / (tps + fps + p)
    ib = int(np.argmax(f1))
    out.update(
        auroc=auroc,
        aupr=aupr,
        fpr95=fpr95,
        best_f1=float(f1[ib]),
        best_f1_threshold=float(thresholds[ib]),
        best_f1_precision=float(precision[ib]),
        best_f1_recall=float(tpr[ib]),
        fpr95_index=i95,
        best_f1_index=ib,
    )
    return out


def _mean_precision(
    tps: np.ndarray, fps: np.ndarray, pos: np.ndarray, fp0: np.ndarray
) -> np.ndarray:
    """Expected mean precision of the positives of a step holding several distinct scores.

    The step's ``b`` positives and ``m`` negatives are taken as evenly interleaved: the
    ``i``-th positive follows ``m i / (b + 1)`` of the negatives, so its precision is
    ``(a + i) / (c + i + m i / (b + 1))`` with ``a = TP0`` and ``c = TP0 + FP0`` before the
    step. Steps with at most :data:`_DISCRETE_MAX` positives sum this exactly; larger ones use
    the midpoint-rule integral over ``i`` in ``[1/2, b + 1/2]``.
    """
    a = (tps - pos).astype(np.float64)
    b = pos.astype(np.float64)
    c = a + fp0
    r = 1.0 + (fps - fp0) / (b + 1.0)  # growth of the denominator per positive
    total = np.zeros_like(b)
    for i in range(1, _DISCRETE_MAX + 1):
        use = (b >= i) & (b <= _DISCRETE_MAX)
        total[use] += (a[use] + i) / (c[use] + i * r[use])
    big = b > _DISCRETE_MAX
    if big.any():
        ab, bb, cb, rb = a[big], b[big], c[big], r[big]

        def antiderivative(x: np.ndarray) -> np.ndarray:
            # integral of (a + x) / (c + r x) dx
            return x / rb + (ab - cb / rb) * np.log(cb + rb * x) / rb

        total[big] = antiderivative(bb + 0.5) - antiderivative(np.full_like(bb, 0.5))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, total / b, 0.0)


_DISCRETE_MAX = 8


def _fpr95_fraction(tps: np.ndarray, i: int, p: int) -> float:
    """Share of step ``i``'s negatives placed before the positive that reaches 95% TPR.

    The step's positives and negatives are taken as evenly interleaved: the ``j``-th of its
    ``b`` positives follows ``j / (b + 1)`` of its negatives.
    """
    tp0 = int(tps[i - 1]) if i > 0 else 0
    need = int(np.ceil(FPR_AT_TPR * p))  # smallest TP count whose TPR (float64) is >= 0.95
    while need > 0 and (need - 1) / p >= FPR_AT_TPR:
        need -= 1
    while need / p < FPR_AT_TPR:
        need += 1
    return (need - tp0) / (int(tps[i]) - tp0 + 1)


def _interpolated_fpr95(tps: np.ndarray, fps: np.ndarray, i: int, p: int, n: int) -> float:
    """FPR where the TPR reaches 95% inside step ``i`` (several distinct scores)."""
    fp0 = int(fps[i - 1]) if i > 0 else 0
    return float((fp0 + _fpr95_fraction(tps, i, p) * (int(fps[i]) - fp0)) / n)


def error_bounds(
    tps: np.ndarray,
    fps: np.ndarray,
    pos: np.ndarray,
    neg: np.ndarray,
    pure: np.ndarray,
    fpr95_index: int,
) -> dict[str, float]:
    """Largest possible difference to the exact metrics caused by impure bins.

    A bin holding several distinct scores is one step of the curve instead of several; the
    exact curve passes through the same bin-boundary points, so only the inside of impure
    bins can differ (see docs/metrics.md, "Exactness and memory" for the derivation).
    """
    p = int(tps[-1]) if tps.size else 0
    n = int(fps[-1]) if fps.size else 0
    if p == 0 or n == 0:
        nan = float("nan")
        return {"auroc": nan, "aupr": nan, "fpr95": nan}
    imp = ~pure
    auroc = float(np.sum(pos[imp].astype(np.float64) * neg[imp]) / (2.0 * p * n))
    tp0 = (tps - pos).astype(np.float64)
    fp0 = (fps - neg).astype(np.float64)
    tp1 = tps.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pmax = np.where(tp1 + fp0 > 0, tp1 / (tp1 + fp0), 1.0)
        pmin = np.where(tp0 + 1 + fps > 0, (tp0 + 1) / (tp0 + 1 + fps), 0.0)
    spread = np.clip(pmax - pmin, 0.0, 1.0)
    aupr = float(np.sum(np.where(imp & (pos > 0), pos / p * spread, 0.0)))
    fpr95 = 0.0
    if not pure[fpr95_index]:
        frac = _fpr95_fraction(tps, fpr95_index, p)
        fpr95 = float(max(frac, 1.0 - frac) * neg[fpr95_index] / n)
    return {"auroc": auroc, "aupr": aupr, "fpr95": fpr95}


def downsample_curves(
    tps: np.ndarray,
    fps: np.ndarray,
    thresholds: np.ndarray,
    keep: tuple[int, ...] = (),
    max_points: int = 1000,
) -> dict[str, dict[str, list[float]]]:
    """ROC and PR curves with at most ``max_points`` points, spread evenly along the curve.

    The first and last points and the indices in ``keep`` (e.g. FPR95 and best-F1 points)
    are always included. Returns ``{"roc": {fpr, tpr, thresholds}, "pr": {recall, precision,
    thresholds}}`` with plain float lists.
    """
    p, n = int(tps[-1]) if tps.size else 0, int(fps[-1]) if fps.size else 0
    if p == 0 or n == 0:
        return {
            "roc": {"fpr": [], "tpr": [], "thresholds": []},
            "pr": {"recall": [], "precision": [], "thresholds": []},
        }
    tpr = tps / p
    fpr = fps / n
    extra = [i for i in keep if 0 <= i < tps.size]
    if tps.size <= max_points:
        idx = np.arange(tps.size)
    else:
        budget = max(max_points - 2 - len(extra), 2)
        walk = fpr + tpr
        grid = np.linspace(walk[0], walk[-1], budget)
        idx = np.searchsorted(walk, grid, side="left").clip(0, tps.size - 1)
        idx = np.unique(np.concatenate((idx, [0, tps.size - 1], extra)).astype(np.int64))
    precision = tps[idx] / (tps[idx] + fps[idx])
    th = [float(t) for t in thresholds[idx]]
    return {
        "roc": {"fpr": fpr[idx].tolist(), "tpr": tpr[idx].tolist(), "thresholds": th},
        "pr": {"recall": tpr[idx].tolist(), "precision": precision.tolist(), "thresholds": th},
    }


def official_image_metrics(tps: torch.Tensor, fps: torch.Tensor) -> tuple[float, float, float]:
    """AUROC, AP and FPR95 of one image as the official StreetHazards code computes them.

    ``tps`` / ``fps`` (int64 tensors on any device, decreasing thresholds, one point per
    distinct score, both classes present) are the cumulative counts of the ROC points.
    AUROC and AP follow scikit-learn's ``roc_auc_score`` / ``average_precision_score``;
    FPR95 follows ``fpr_and_fdr_at_recall`` in anomaly-seg's ``anom_utils.py``: among the ROC
    points from the highest threshold down to the first one with full recall, the point whose
    recall ``tps / P`` is closest to 0.95 (float64 ``|recall - 0.95|``), and among equally
    close points the one with the lowest threshold. Computed on the tensors' device; only the
    three numbers move to the CPU.
    """
    tp = tps.to(torch.float64)
    fp = fps.to(torch.float64)
    p, n = tp[-1], fp[-1]
    zero = tp.new_zeros(1)
    tp_prev = torch.cat((zero, tp[:-1]))
    fp_prev = torch.cat((zero, fp[:-1]))
    auroc = ((fp - fp_prev) * (tp + tp_prev)).sum() / (2 * p * n)  # trapezoids
    ap = ((tp - tp_prev) * (tp / (tp + fp))).sum() / p
    # candidates: the ROC points up to (and including) the first one with full recall
    last = int((tps < tps[-1]).sum())
    gap = torch.abs(tp[: last + 1] / p - FPR_AT_TPR)
    closest = torch.nonzero(gap == gap.min())[-1, 0]  # the lowest threshold among ties
    fpr95 = fp[closest] / n
    auroc_v, ap_v, fpr95_v = torch.stack((auroc, ap, fpr95)).tolist()
    return auroc_v, ap_v, fpr95_v
