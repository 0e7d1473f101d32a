"""results.json: the document evaluate and eval-maps build, its schema version, atomic saving
and validated loading, and the printed summary table.

Metric values are fractions in [0, 1] or null (undefined, e.g. a class absent from the split).
Non-finite floats are written as null so the file is strict JSON.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hazardseg import __version__
from hazardseg.data.labels import IGNORE_INDEX
from hazardseg.data.registry import DatasetDef
from hazardseg.errors import DataError
from hazardseg.io import atomic_write_text
from hazardseg.metrics.collector import MethodAccumulator
from hazardseg.metrics.components import component_definition
from hazardseg.metrics.ood_protocol import protocol_definitions
from hazardseg.metrics.open_set import OPEN_SET_DEFINITION

SCHEMA_VERSION = 1
KIND = "evaluation"

_TOP_KEYS = ("schema_version", "kind", "model", "data", "protocol", "methods", "timing")
_POOLED_FRACTIONS = ("auroc", "aupr", "fpr95", "best_f1")
_PER_IMAGE_FRACTIONS = ("auroc", "aupr", "fpr95")
_COMPONENT_FRACTIONS = ("mean_f1", "mean_siou", "mean_ppv")
_SMIYC_FRACTIONS = ("aupr", "auroc", "fpr95", "best_f1")


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: tensors/arrays to lists, numpy scalars to numbers, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str | bytes):  # tensor, ndarray, np scalar
        return to_jsonable(obj.tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"results: cannot store a value of type {type(obj).__name__}")


def save_results(path: str | os.PathLike[str], obj: dict[str, Any]) -> dict[str, Any]:
    """Validate ``obj`` and write it as strict JSON to ``path`` atomically; return the JSON form."""
    data = to_jsonable(obj)
    validate_results(data, str(path))
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    return data


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a results.json file; problems raise DataError naming file and key."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise DataError(f"results file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{p}: not valid JSON ({exc})") from None
    validate_results(data, str(p))
    return data


def _fail(where: str, msg: str) -> None:
    raise DataError(f"{where}: {msg}")


def _check_fraction(value: Any, where: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(where, f"expected a number in [0, 1] or null, got {value!r}")
    if not (0.0 <= float(value) <= 1.0):
        _fail(where, f"expected a value in [0, 1], got {value!r}")


def _check_dict(value: Any, where: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(where, f"expected an object, got {type(value).__name__}")
    missing = [k for k in keys if k not in value]
    if missing:
        _fail(where, f"missing key(s) {', '.join(missing)}")
    return value


def validate_results(data: Any, source: str = "results") -> None:
    """Raise DataError unless ``data`` follows the results.json schema (version 1)."""
    top = _check_dict(data, source)
    version = top.get("schema_version")
    if version != SCHEMA_VERSION:
        if isinstance(version, int) and version > SCHEMA_VERSION:
            _fail(
                source,
                f"schema_version {version} is newer than this hazardseg supports "
                f"({SCHEMA_VERSION}); upgrade hazardseg",
            )
        _fail(source, f"schema_version: expected {SCHEMA_VERSION}, got {version!r}")
    _check_dict(top, source, _TOP_KEYS)
    if top["kind"] != KIND:
        _fail(f"{source}: kind", f"expected {KIND!r}, got {top['kind']!r}")
    _check_dict(top["model"], f"{source}: model", ("name",))
    _check_dict(top["data"], f"{source}: data", ("split", "num_images"))
    protocol = _check_dict(top["protocol"], f"{source}: protocol", ("exclude_unlabeled",))
    if "definitions" in protocol:
        defs = _check_dict(protocol["definitions"], f"{source}: protocol.definitions")
        for key, text in defs.items():
            if not isinstance(text, str) or not text:
                _fail(f"{source}: protocol.definitions.{key}", f"expected a text, got {text!r}")
    _check_dict(top["timing"], f"{source}: timing")
    seg = top.get("segmentation")
    if seg is not None:
        seg = _check_dict(seg, f"{source}: segmentation", ("miou", "iou"))
        for key in ("miou", "miou_no_unlabeled", "pixel_accuracy"):
            _check_fraction(seg.get(key), f"{source}: segmentation.{key}")
        for name, v in _check_dict(seg["iou"], f"{source}: segmentation.iou").items():
            _check_fraction(v, f"{source}: segmentation.iou.{name}")
    methods = _check_dict(top["methods"], f"{source}: methods")
    for name, m in methods.items():
        where = f"{source}: methods.{name}"
        _check_dict(m, where, ("pooled", "per_image", "components", "oracle", "nonfinite"))
        pooled = _check_dict(m["pooled"], f"{where}.pooled", (*_POOLED_FRACTIONS, "num_pos"))
        for key in _POOLED_FRACTIONS:
            _check_fraction(pooled[key], f"{where}.pooled.{key}")
        if m["per_image"] is not None:
            per_image = _check_dict(m["per_image"], f"{where}.per_image", _PER_IMAGE_FRACTIONS)
            for key in _PER_IMAGE_FRACTIONS:
                _check_fraction(per_image[key], f"{where}.per_image.{key}")
        if m.get("smiyc") is not None:
            smiyc = _check_dict(m["smiyc"], f"{where}.smiyc", _SMIYC_FRACTIONS)
            for key in _SMIYC_FRACTIONS:
                _check_fraction(smiyc[key], f"{where}.smiyc.{key}")
            if smiyc.get("components") is not None:
                sc = _check_dict(
                    smiyc["components"], f"{where}.smiyc.components", _COMPONENT_FRACTIONS
                )
                for key in _COMPONENT_FRACTIONS:
                    _check_fraction(sc[key], f"{where}.smiyc.components.{key}")
        if m["components"] is not None:
            comp = _check_dict(m["components"], f"{where}.components", _COMPONENT_FRACTIONS)
            for key in _COMPONENT_FRACTIONS:
                _check_fraction(comp[key], f"{where}.components.{key}")
        if m.get("open_set") is not None:
            osr = _check_dict(m["open_set"], f"{where}.open_set", ("open_miou", "closed_miou"))
            for key in ("open_miou", "closed_miou", "anomaly_iou"):
                _check_fraction(osr.get(key), f"{where}.open_set.{key}")
        for section in ("oracle", "calibrated"):
            sec = m.get(section)
            if sec is None:
                continue
            sec = _check_dict(sec, f"{where}.{section}", ("threshold", "f1"))
            for key in ("f1", "precision", "recall", "fpr"):
                _check_fraction(sec.get(key), f"{where}.{section}.{key}")
        if not isinstance(m["nonfinite"], int) or m["nonfinite"] < 0:
            _fail(f"{where}.nonfinite", f"expected a count >= 0, got {m['nonfinite']!r}")


# ---- building the document ----

ORACLE_NOTE = "oracle: threshold chosen for the best F1 on the evaluated split itself"


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def protocol_section(
    exclude_unlabeled: bool,
    component_options: dict[str, Any] | None = None,
    per_image_pixels: str | None = None,
    protocols: Sequence[str] = ("pooled", "per_image"),
    dataset: DatasetDef | None = None,
) -> dict[str, Any]:
    """The pixel protocol shared by every method's metrics, with each protocol's definition.

    ``component_options``: the ``ComponentMetrics`` options used (``threshold_rule``,
    ``min_pred_size``, ``min_gt_size``; defaults when None); ``protocols``: those measured
    (``smiyc`` adds its definitions, for ``dataset``'s track).
    """
    definitions = protocol_definitions(exclude_unlabeled, per_image_pixels)
    if "per_image" not in protocols:
        definitions.pop("per_image", None)
    definitions["components"] = component_definition(**(component_options or {}))
    if "smiyc" in protocols and dataset is not None:
        from hazardseg.evaluation.protocols import smiyc_definitions

        definitions.update(smiyc_definitions(dataset))
    if "open_miou" in protocols:
        definitions["open_miou"] = OPEN_SET_DEFINITION
    negative = "known classes"
    if dataset is not None and dataset.labels.normal_id is not None:
        negative = "normal pixels"
    return {
        "positive": "anomaly",
        "negative": negative,
        "ignore": [IGNORE_INDEX],
        "exclude_unlabeled": bool(exclude_unlabeled),
        "measured": list(protocols),
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
    smiyc: dict[str, Any] | None = None,
    open_set: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One entry of ``results["methods"]``; ``pooled`` is ``acc.pooled.compute()``,
    ``smiyc`` the SegmentMeIfYouCan block (when measured); ``per_image`` is None when that
    protocol was not measured."""
    per = acc.per_image.compute() if acc.per_image is not None else None
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
        "per_image": None
        if per is None
        else {
            "auroc": _num(per["auroc"]),
            "aupr": _num(per["aupr"]),
            "fpr95": _num(per["fpr95"]),
            "num_images": int(per["num_images"]),
            "num_skipped": int(per["num_skipped"]),
        },
        "smiyc": smiyc,
        "open_set": open_set,
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
    protocol: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The complete results.json object (schema_version 1); ``protocol`` default:
    :func:`protocol_section` of StreetHazards' pixel sets."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "hazardseg_version": __version__,
        "model": model,
        "data": data,
        "config": config,
        "evaluation": evaluation,
        "protocol": protocol or protocol_section(exclude_unlabeled),
        "segmentation": segmentation,
        "methods": methods,
        "timing": timing,
        "notes": notes,
    }


def _pct(x: Any) -> str:
    return "   -  " if x is None else f"{100 * x:6.2f}"


def summary_table(results: dict[str, Any]) -> str:
    """A plain-text table of the main numbers (percentages): pooled, per-image and
    SegmentMeIfYouCan columns for the protocols measured."""
    lines = []
    seg = results.get("segmentation")
    if seg:
        lines.append(
            f"segmentation: mIoU {_pct(seg['miou']).strip()}  "
            f"pixel accuracy {_pct(seg['pixel_accuracy']).strip()}"
        )
    methods = results["methods"]
    has_per = any(m.get("per_image") for m in methods.values())
    has_smiyc = any(m.get("smiyc") for m in methods.values())
    has_open = any(m.get("open_set") for m in methods.values())
    head = f"{'method':<10} | {'pooled AUROC':>12} {'AUPR':>6} {'FPR95':>6} | "
    if has_per:
        head += f"{'per-image AUROC':>15} {'AUPR':>6} {'FPR95':>6} | "
    if has_smiyc:
        head += f"{'SMIYC AP':>8} {'FPR95':>6} {'sIoU':>6} {'PPV':>6} {'F1':>6} | "
    if has_open:
        head += f"{'open mIoU':>9} | "
    head += f"{'comp F1':>7} | {'oracle F1':>9} {'calib F1':>8}"
    if methods:
        lines += [head, "-" * len(head)]
    for name, m in methods.items():
        p, q, sm = m["pooled"], m.get("per_image") or {}, m.get("smiyc") or {}
        comp = m["components"]["mean_f1"] if m["components"] else None
        oracle = m["oracle"]["f1"] if m["oracle"] else None
        cal = m["calibrated"]["f1"] if m["calibrated"] else None
        row = f"{name:<10} | {_pct(p['auroc']):>12} {_pct(p['aupr'])} {_pct(p['fpr95'])} | "
        if has_per:
            row += f"{_pct(q.get('auroc')):>15} {_pct(q.get('aupr'))} {_pct(q.get('fpr95'))} | "
        if has_smiyc:
            sc = sm.get("components") or {}
            row += (
                f"{_pct(sm.get('aupr')):>8} {_pct(sm.get('fpr95'))} {_pct(sc.get('mean_siou'))} "
                f"{_pct(sc.get('mean_ppv'))} {_pct(sc.get('mean_f1'))} | "
            )
        if has_open:
            row += f"{_pct((m.get('open_set') or {}).get('open_miou')):>9} | "
        row += f"{_pct(comp):>7} | {_pct(oracle):>9} {_pct(cal):>8}"
        lines.append(row)
    t = results.get("timing") or {}
    if t.get("images_per_s"):
        lines.append(
            f"{results['data']['num_images']} images, {t['total_s']:.1f} s "
            f"({t['images_per_s']:.2f} images/s)"
        )
    lines.extend(f"note: {n}" for n in results.get("notes", []))
    return "\n".join(lines)
