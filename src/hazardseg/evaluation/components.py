"""Component-level metrics at each method's pooled best-F1 threshold (second, model-free pass)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hazardseg.evaluation import dist

if TYPE_CHECKING:
    from hazardseg.metrics.components import ComponentMetrics


def pooled_thresholds(pooled: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Each method's pooled best-F1 threshold (None when pooled metrics are undefined).

    ``pooled`` maps a method name to its ``PooledOOD.compute()`` result.
    """
    out: dict[str, float | None] = {}
    for name, res in pooled.items():
        t = res["best_f1_threshold"]
        out[name] = float(t) if res["undefined_reason"] is None and math.isfinite(t) else None
    return out


def component_pass(
    thresholds: dict[str, float | None],
    ids: list[str],
    get_scores: Callable[[str, str], np.ndarray],
    get_mask: Callable[[str], tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, ComponentMetrics | None]:
    """Feed every image's stored score map into a ComponentMetrics per method."""
    from hazardseg.metrics.components import ComponentMetrics

    metrics = {n: ComponentMetrics(t) if t is not None else None for n, t in thresholds.items()}
    for rel in ids:
        is_anom, valid = get_mask(rel)
        for name, cm in metrics.items():
            if cm is None:
                continue
            scores = torch.from_numpy(np.asarray(get_scores(name, rel), dtype=np.float32))
            cm.update(scores, is_anom, valid & torch.isfinite(scores))
    return metrics


def merge_component_accumulators(
    parts: dict[str, ComponentMetrics | None],
) -> dict[str, dict[str, Any] | None]:
    """Merge every rank's component accumulators and return the results.json sections."""
    gathered = dist.gather_objects(parts)
    out: dict[str, dict[str, Any] | None] = {}
    for name in parts:
        merged = None
        for rank_parts in gathered:
            cm = rank_parts[name]
            if cm is None:
                continue
            merged = cm if merged is None else merged.merge(cm)
        out[name] = None if merged is None else component_section(merged)
    return out


def component_section(cm: ComponentMetrics) -> dict[str, Any]:
    """The ``components`` block of one method."""
    res = cm.compute()
    keys = (
        "mean_f1",
        "f1_per_tau",
        "mean_siou",
        "mean_ppv",
        "num_gt_components",
        "num_pred_components",
        "threshold",
    )
    out = {k: res.get(k) for k in keys}
    for k in ("mean_f1", "mean_siou", "mean_ppv"):
        v = out[k]
        out[k] = None if v is None or not math.isfinite(float(v)) else float(v)
    if out["f1_per_tau"] is not None:
        out["f1_per_tau"] = {str(t): float(v) for t, v in dict(out["f1_per_tau"]).items()}
    return out
