"""Assemble results.json sections and the printed summary table."""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

from hazardseg import __version__
from hazardseg.data.classes import IGNORE_INDEX
from hazardseg.evaluation.accumulate import MethodAccumulator
from hazardseg.metrics.components import component_definition
from hazardseg.metrics.ood import protocol_definitions
from hazardseg.results import KIND, SCHEMA_VERSION

ORACLE_NOTE = "oracle: threshold chosen for the best F1 on the evaluated split itself"


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def protocol_section(
    exclude_unlabeled: bool, component_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The pixel protocol shared by every method's metrics, with each protocol's definition.

    ``component_options``: the ``ComponentMetrics`` options used (``threshold_rule``,
    ``min_pred_size``, ``min_gt_size``; defaults when None).
    """
    definitions = protocol_definitions(exclude_unlabeled)
    definitions["components"] = component_definition(**(component_options or {}))
    return {
        "positive": "anomaly",
        "negative": "known classes",
        "ignore": [IGNORE_INDEX],
        "exclude_unlabeled": bool(exclude_unlabeled),
        "pooled": "one curve over all evaluated pixels of the split (SegmentMeIfYouCan style)",
        "per_image": "metrics per image averaged over images with both classes (official "
        "StreetHazards definitions; the official pixel set when exclude_unlabeled is false)",
        "components": "8-connected components at each method's threshold: the one from "
        "calibrate (components.threshold_source 'calibrated', the default) or the pooled "
        "best-F1 threshold of the evaluated split ('oracle')",
        "definitions": definitions,
    }


def method_section(
    acc: MethodAccumulator,
    options: dict[str, Any],
    components: dict[str, Any] | None,
    calibrated: dict[str, Any] | None,
    pooled: dict[str, Any],
) -> dict[str, Any]:
    """One entry of ``results["methods"]``; ``pooled`` is ``acc.pooled.compute()``."""
    per = acc.per_image.compute()
    defined = pooled["undefined_reason"] is None
    oracle = None
    if defined:
        oracle = {
            "threshold": _num(pooled["best_f1_threshold"]),
            "f1": _num(pooled["best_f1"]),
            "precision": _num(pooled["best_f1_precision"]),
            "recall": _num(pooled["best_f1_recall"]),
            "note": ORACLE_NOTE,
        }
    cal = None
    if calibrated is not None and defined:
        at = acc.pooled.metrics_at_threshold(float(calibrated["threshold"]))
        cal = {
            "threshold": float(calibrated["threshold"]),
            "target": calibrated.get("target"),
            "split": calibrated.get("split"),
            "f1": _num(at["f1"]),
            "precision": _num(at["precision"]),
            "recall": _num(at["recall"]),
            "fpr": _num(at["fpr"]),
        }
    return {
        "options": dict(options),
        "pooled": {
            "auroc": _num(pooled["auroc"]),
            "aupr": _num(pooled["aupr"]),
            "fpr95": _num(pooled["fpr95"]),
            "best_f1": _num(pooled["best_f1"]),
            "best_f1_threshold": _num(pooled["best_f1_threshold"]),
            "num_pos": int(pooled["num_pos"]),
            "num_neg": int(pooled["num_neg"]),
            "exact": bool(pooled["exact"]),
            "error_bound": pooled["error_bound"],
            "undefined_reason": pooled["undefined_reason"],
        },
        "per_image": {
            "auroc": _num(per["auroc"]),
            "aupr": _num(per["aupr"]),
            "fpr95": _num(per["fpr95"]),
            "num_images": int(per["num_images"]),
            "num_skipped": int(per["num_skipped"]),
        },
        "components": components,
        "calibrated": cal,
        "oracle": oracle,
        "curves": pooled["curves"],
        "nonfinite": int(acc.nonfinite),
    }


def results_document(
    *,
    model: dict[str, Any],
    data: dict[str, Any],
    config: dict[str, Any],
    evaluation: dict[str, Any],
    exclude_unlabeled: bool,
    segmentation: dict[str, Any] | None,
    methods: dict[str, Any],
    timing: dict[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    """The complete results.json object (schema_version 1)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "hazardseg_version": __version__,
        "model": model,
        "data": data,
        "config": config,
        "evaluation": evaluation,
        "protocol": protocol_section(exclude_unlabeled),
        "segmentation": segmentation,
        "methods": methods,
        "timing": timing,
        "notes": notes,
    }


def _pct(x: Any) -> str:
    return "   -  " if x is None else f"{100 * x:6.2f}"


def summary_table(results: dict[str, Any]) -> str:
    """A plain-text table of the main numbers (percentages)."""
    lines = []
    seg = results.get("segmentation")
    if seg:
        lines.append(
            f"segmentation: mIoU {_pct(seg['miou']).strip()}  "
            f"pixel accuracy {_pct(seg['pixel_accuracy']).strip()}"
        )
    head = (
        f"{'method':<10} | {'pooled AUROC':>12} {'AUPR':>6} {'FPR95':>6} | "
        f"{'per-image AUROC':>15} {'AUPR':>6} {'FPR95':>6} | {'comp F1':>7} | "
        f"{'oracle F1':>9} {'calib F1':>8}"
    )
    lines += [head, "-" * len(head)]
    for name, m in results["methods"].items():
        p, q = m["pooled"], m["per_image"]
        comp = m["components"]["mean_f1"] if m["components"] else None
        oracle = m["oracle"]["f1"] if m["oracle"] else None
        cal = m["calibrated"]["f1"] if m["calibrated"] else None
        lines.append(
            f"{name:<10} | {_pct(p['auroc']):>12} {_pct(p['aupr'])} {_pct(p['fpr95'])} | "
            f"{_pct(q['auroc']):>15} {_pct(q['aupr'])} {_pct(q['fpr95'])} | {_pct(comp):>7} | "
            f"{_pct(oracle):>9} {_pct(cal):>8}"
        )
    t = results.get("timing") or {}
    if t.get("images_per_s"):
        lines.append(
            f"{results['data']['num_images']} images, {t['total_s']:.1f} s "
            f"({t['images_per_s']:.2f} images/s)"
        )
    lines.extend(f"note: {n}" for n in results.get("notes", []))
    return "\n".join(lines)
