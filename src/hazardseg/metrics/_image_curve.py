"""Exact ROC counts of one image without sorting every pixel (the per-image protocol's hot loop).

The per-image metrics (AUROC, AP, FPR95) are functions of the ROC points at the distinct
scores. Points between two consecutive distinct *positive* scores that hold only negatives lie
on one horizontal segment of the ROC curve: they add nothing to AP, nothing to the trapezoid
AUROC beyond their segment's end, and among them FPR95 can only pick the lowest threshold
(the segment's end). :func:`compact_roc_counts` therefore returns, exactly, the ROC point at
every distinct positive score plus the end point of every negative-only run between them; the
official metrics computed from it equal those from the full curve.

It sorts only the positives (anomaly pixels, usually a few percent of an image). Negatives are
counted in a two-level histogram of their order-preserving float32 keys; only negatives that share
a histogram bin with a positive score are sorted, to split that bin exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from hazardseg.metrics._histogram import float_keys

COARSE_BITS = 16
"""Bits of the level-1 histogram (2**16 bins of 2**16 consecutive float32 values)."""
_SHIFT = 32 - COARSE_BITS
LEVEL2_COUNTERS = 1 << 18
"""Most counters of the level-2 histogram (over the level-1 bins that hold a positive)."""


def order_keys(scores: np.ndarray) -> np.ndarray:
    """uint32 keys whose integer order is the float32 order of ``scores`` (-0.0 == +0.0):
    :func:`~hazardseg.metrics._histogram.float_keys` shifted to unsigned."""
    s = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
    return float_keys(s).numpy().view(np.uint32) ^ np.uint32(0x80000000)


def _negatives_at_or_above(
    keys: np.ndarray, pos: np.ndarray, u: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each distinct positive key ``u_j`` (int64, descending): the negatives with keys
    ``>= u_j`` and ``> u_j`` (``keys`` uint32 of every pixel, ``pos`` their labels), exactly.

    Level 1 counts every negative in a 2**16-bin histogram. Negatives that share a level-1
    bin with a positive key are counted again in a level-2 histogram over those bins only, at
    up to 2**16 times the resolution; only negatives that still share a level-2 bin with a
    positive key are sorted.
    """
    n = int(pos.size - np.count_nonzero(pos))
    hb = (keys >> np.uint32(_SHIFT)).astype(np.int32)
    hist = np.bincount(hb, minlength=1 << COARSE_BITS)
    hist -= np.bincount(hb[pos], minlength=1 << COARSE_BITS)  # negatives only
    above = n - np.cumsum(hist)  # negatives in level-1 bins > b
    ub = u >> _SHIFT
    shared_bins = np.unique(ub)  # ascending
    rank = np.full(1 << COARSE_BITS, -1, dtype=np.int32)
    rank[shared_bins] = np.arange(shared_bins.size, dtype=np.int32)
    r = rank[hb]
    inside = r >= 0
    inside &= ~pos
    k1 = keys[inside]
    fine = int(min(_SHIFT, max(0, np.floor(np.log2(LEVEL2_COUNTERS / shared_bins.size)))))
    sub_shift = _SHIFT - fine
    idx = r[inside].astype(np.int64) << fine
    idx |= (k1 >> np.uint32(sub_shift)) & np.uint32((1 << fine) - 1)
    size = shared_bins.size << fine
    above2 = k1.size - np.cumsum(np.bincount(idx, minlength=size))  # in level-2 bins > i
    rho = rank[ub].astype(np.int64)
    u_idx = (rho << fine) | ((u >> sub_shift) & ((1 << fine) - 1))
    shared2 = np.zeros(size, dtype=bool)
    shared2[u_idx] = True
    sel = np.sort(k1[shared2[idx]]).astype(np.int64)  # negatives sharing a level-2 bin
    sub_end = ((u >> sub_shift) + 1) << sub_shift
    bin_end = np.searchsorted(sel, sub_end, side="left")
    # negatives above u_j = in level-1 bins above + in u_j's bin, level-2 bins above (level-2
    # counts above u_j's bin also hold the higher shared level-1 bins: subtract those) + in
    # u_j's level-2 bin at or above u_j (sorted ``sel``)
    higher_shared = k1.size - np.cumsum(hist[shared_bins])[rho]
    base = above[ub] + above2[u_idx] - higher_shared
    ge = base + bin_end - np.searchsorted(sel, u, side="left")
    gt = base + bin_end - np.searchsorted(sel, u, side="right")
    return ge, gt


def compact_roc_counts(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative ``(tps, fps)`` (int64, decreasing thresholds) of the compact ROC curve.

    ``scores`` are finite floats (compared as float32), ``positive`` bools of the same size;
    both classes must be present. See the module docstring for which points are kept.
    """
    keys = order_keys(scores.reshape(-1))
    pos = positive.reshape(-1)
    kp = np.sort(keys[pos])[::-1]  # positives, descending
    n = int(pos.size - kp.size)
    starts = np.concatenate(([0], np.flatnonzero(kp[1:] != kp[:-1]) + 1))
    u = kp[starts].astype(np.int64)  # distinct positive keys, descending
    tp = np.diff(np.concatenate((starts, [kp.size]))).cumsum()
    ge, gt = _negatives_at_or_above(keys, pos, u)
    # end of the negative-only run above u_j (negatives strictly between u_j and u_{j-1})
    prev_tp = np.concatenate(([0], tp[:-1]))
    prev_ge = np.concatenate(([0], ge[:-1]))
    run = gt > prev_ge
    tps = np.stack((prev_tp, tp), axis=1).reshape(-1)
    fps = np.stack((gt, ge), axis=1).reshape(-1)
    keep = np.stack((run, np.ones_like(run)), axis=1).reshape(-1)
    tps, fps = tps[keep], fps[keep]
    if fps[-1] < n:  # negatives below the lowest positive score
        tps = np.append(tps, tp[-1])
        fps = np.append(fps, n)
    return tps.astype(np.int64), fps.astype(np.int64)
