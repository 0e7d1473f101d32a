"""Threshold sensitivity of one anomaly method: F1, precision and recall around its calibrated
and oracle thresholds, read from the PR curve stored in results.json (nothing recomputed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hazardseg.errors import DataError
from hazardseg.reports.tables import finite_number


def method_entry(results: dict[str, Any], method: str, source: str = "results") -> dict[str, Any]:
    """The ``methods[method]`` section; DataError naming the available methods if absent."""
    methods = results.get("methods") or {}
    if method not in methods:
        avail = ", ".join(sorted(methods)) or "none"
        raise DataError(f"{source}: method {method!r} not found; available: {avail}")
    return methods[method]


def threshold_sweep(m: dict[str, Any], source: str = "method") -> dict[str, np.ndarray]:
    """Thresholds (ascending) with precision, recall and F1 = 2PR/(P+R) from the PR curve."""
    pr = (m.get("curves") or {}).get("pr") or {}
    t = np.asarray(pr.get("thresholds") or [], dtype=np.float64)
    p = np.asarray([np.nan if v is None else v for v in pr.get("precision") or []], np.float64)
    r = np.asarray([np.nan if v is None else v for v in pr.get("recall") or []], np.float64)
    if t.size == 0 or not (t.size == p.size == r.size):
        raise DataError(
            f"{source}: curves.pr needs equally long, non-empty thresholds/precision/recall "
            "(a split without anomaly pixels has no PR curve)"
        )
    order = np.argsort(t, kind="stable")
    t, p, r = t[order], p[order], r[order]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return {"thresholds": t, "precision": p, "recall": r, "f1": f1}


def sensitivity_rows(
    m: dict[str, Any], sweep: dict[str, np.ndarray], steps: int = 3
) -> list[dict[str, Any]]:
    """F1/precision/recall at the calibrated and oracle thresholds (stored values) and at
    curve points spread around the reference threshold (calibrated, else oracle)."""
    t = sweep["thresholds"]
    cal, oracle = m.get("calibrated"), m.get("oracle")
    ref = (cal or {}).get("threshold")
    if ref is None:
        ref = (oracle or {}).get("threshold")
    if ref is None:
        ref = float(t[int(np.nanargmax(sweep["f1"]))])
    centre = int(np.clip(np.searchsorted(t, ref), 0, t.size - 1))
    step = max(1, t.size // 20)
    idx = sorted({int(np.clip(centre + k * step, 0, t.size - 1)) for k in range(-steps, steps + 1)})
    rows = [
        {
            "threshold": float(t[i]),
            "f1": float(sweep["f1"][i]),
            "precision": float(sweep["precision"][i]),
            "recall": float(sweep["recall"][i]),
            "note": "",
        }
        for i in idx
    ]
    for sec, note in ((oracle, "oracle best F1"), (cal, "calibrated")):
        if sec and sec.get("threshold") is not None:
            rows.append(
                {
                    "threshold": float(sec["threshold"]),
                    "f1": sec.get("f1"),
                    "precision": sec.get("precision"),
                    "recall": sec.get("recall"),
                    "note": note,
                }
            )
    rows.sort(key=lambda r: (r["threshold"], r["note"]))
    return rows


def sensitivity_text(rows: Sequence[dict[str, Any]]) -> str:
    """A small plain-text table of the sensitivity rows (percentages)."""

    def pct(v: Any) -> str:
        return "     -" if finite_number(v) is None else f"{100 * float(v):6.2f}"

    lines = [f"{'threshold':>12} {'F1':>6} {'P':>6} {'R':>6}  note"]
    for r in rows:
        lines.append(
            f"{r['threshold']:12.5g} {pct(r['f1'])} {pct(r['precision'])} {pct(r['recall'])}"
            f"  {r['note']}".rstrip()
        )
    return "\n".join(lines)
