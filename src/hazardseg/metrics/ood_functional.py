"""AUROC, AP and FPR95 of one given set of pixels, computed at once (no accumulator).

:func:`exact_curve_metrics` uses the pooled definitions (the exact reference of
:class:`hazardseg.metrics.ood.PooledOOD`); :func:`image_metrics` the official per-image ones
that :class:`hazardseg.metrics.ood.PerImageOOD` averages. Scores are compared at float32
precision; NaN and +-inf scores are excluded and counted in ``num_nonfinite``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hazardseg.metrics._curve import curve_metrics, official_image_metrics
from hazardseg.metrics._image_curve import compact_roc_counts


def exact_curve_metrics(
    scores: torch.Tensor, is_anomaly: torch.Tensor, valid: torch.Tensor | None = None
) -> dict[str, Any]:
    """Exact AUROC / AP / FPR95 / best F1 of one set of pixels by sorting (float32 compare).

    The pooled definitions (FPR95:
    :data:`~hazardseg.metrics.ood_protocol.POOLED_FPR95_DEFINITION`); :func:`image_metrics`
    gives the official per-image ones.

    Also ``num_nonfinite`` (NaN / +-inf scores, excluded).
    """
    s = scores.detach().reshape(-1).to(torch.float32).cpu()
    y = is_anomaly.reshape(-1).cpu()
    keep = torch.isfinite(s)
    if valid is not None:
        v = valid.reshape(-1).cpu()
        nonfinite = int((v & ~keep).sum())
        keep &= v
    else:
        nonfinite = int((~keep).sum())
    s, y = s[keep], y[keep]
    # numpy's vectorised argsort is several times faster than torch.sort on the CPU; ties are
    # grouped below, so the order within equal scores does not matter
    s_np = s.numpy()
    order = np.argsort(s_np)[::-1]
    s_sorted = s_np[order].astype(np.float64)
    y_sorted = y.numpy()[order]
    if s_sorted.size == 0:
        res = curve_metrics(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    else:
        ends = np.concatenate((np.flatnonzero(np.diff(s_sorted)), [s_sorted.size - 1]))
        tps = np.cumsum(y_sorted, dtype=np.int64)[ends]
        fps = ends + 1 - tps
        res = curve_metrics(tps, fps, s_sorted[ends])
    res.pop("fpr95_index")
    res.pop("best_f1_index")
    res["num_nonfinite"] = nonfinite
    return res


_NUMPY_SORT_ON_CPU = True


def image_metrics(
    scores: torch.Tensor, is_anomaly: torch.Tensor, valid: torch.Tensor | None = None
) -> dict[str, Any]:
    """AUROC, AP and FPR95 of one image by the official definitions
    (:data:`~hazardseg.metrics.ood_protocol.PER_IMAGE_DEFINITION`).

    Sorting and cumulative sums run on the tensors' device (numpy's sort on the CPU); scores
    are compared at float32 precision. Returns ``auroc``, ``aupr``, ``fpr95`` (NaN when the
    pixels lack a class), ``num_pos``, ``num_neg``, ``num_nonfinite`` (NaN / +-inf scores on
    evaluated pixels, excluded) and ``undefined_reason``.
    """
    s = scores.detach().reshape(-1)
    if s.device.type == "mps":  # no float64 there
        s = s.cpu()
    if s.dtype != torch.float32:
        s = s.to(torch.float32)
    y = is_anomaly.reshape(-1).to(s.device)
    keep = torch.isfinite(s)
    if valid is not None:
        v = valid.reshape(-1).to(s.device)
        nonfinite = v & ~keep
        keep &= v
    else:
        nonfinite = ~keep
    num_kept, num_pos, num_nonfinite = (
        int(t) for t in torch.stack((keep.sum(), (y & keep).sum(), nonfinite.sum())).tolist()
    )
    if num_kept < s.numel():
        s, y = s[keep], y[keep]
    num_neg = num_kept - num_pos
    nan = float("nan")
    out: dict[str, Any] = {
        "auroc": nan,
        "aupr": nan,
        "fpr95": nan,
        "num_pos": num_pos,
        "num_neg": num_neg,
        "num_nonfinite": num_nonfinite,
        "undefined_reason": None,
    }
    if num_pos == 0 or num_neg == 0:
        missing = "anomaly (positive)" if num_pos == 0 else "normal (negative)"
        out["undefined_reason"] = f"no {missing} pixels among the evaluated pixels"
        return out
    if s.device.type == "cpu" and _NUMPY_SORT_ON_CPU:
        # on the CPU: exact counts without sorting every pixel (see _image_curve); the
        # compact curve gives the same official metrics as the full one
        tps_np, fps_np = compact_roc_counts(s.numpy(), y.numpy())
        tps, fps = torch.from_numpy(tps_np), torch.from_numpy(fps_np)
        out["auroc"], out["aupr"], out["fpr95"] = official_image_metrics(tps, fps)
        return out
    order = torch.argsort(s, descending=True)
    s_sorted, y_sorted = s[order], y[order]
    last = torch.ones_like(y_sorted)
    last[:-1] = s_sorted[1:] != s_sorted[:-1]
    ends = torch.nonzero(last).reshape(-1)
    tps = torch.cumsum(y_sorted, 0, dtype=torch.int64)[ends]
    fps = ends + 1 - tps
    out["auroc"], out["aupr"], out["fpr95"] = official_image_metrics(tps, fps)
    return out
