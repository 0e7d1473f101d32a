"""Component-level metrics inside the evaluation pass, at a threshold known before it starts.

``calibrated`` (default): each method's threshold stored by ``calibrate`` (chosen on
anomaly-free validation data), so the metrics are computed in the same single pass as
everything else and no score map is kept. ``oracle``: the pooled best-F1 threshold of the
evaluated split itself, which is known only after the pass; the caller then runs a second
pass over the data (a second forward, no disk).
"""

from __future__ import annotations

import math
from typing import Any

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


def component_section(cm: ComponentMetrics, source: str) -> dict[str, Any]:
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
    for k in ("threshold_rule", "min_pred_size", "min_gt_size", "definition"):
        if k in res:
            out[k] = res[k]
    for k in ("mean_f1", "mean_siou", "mean_ppv"):
        v = out[k]
        out[k] = None if v is None or not math.isfinite(float(v)) else float(v)
    if out["f1_per_tau"] is not None:
        out["f1_per_tau"] = {str(t): float(v) for t, v in dict(out["f1_per_tau"]).items()}
    out["threshold_source"] = source
    return out
