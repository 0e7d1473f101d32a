"""Comparison tables (models x methods, one per protocol) rendered from results.json files as
CSV, Markdown and JSON, and the whole comparison as one Markdown or JSON document.

Tables are built from the stored results only; nothing is recomputed from pixels. The results
files are found, loaded and labelled by :mod:`hazardseg.reports.sources`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hazardseg.reports.sources import (
    COMPARISON_KEYS,
    ResultsEntry,
    check_comparable,
    comparison_value,
    lookup,
)

PROTOCOLS: tuple[str, ...] = ("pooled", "per_image", "components", "smiyc", "open_set")
PROTOCOL_TITLES: dict[str, str] = {
    "pooled": "Pooled (one curve over all pixels of the split)",
    "per_image": "Per image (averaged over images with both classes; official protocol)",
    "components": (
        "Component level (SegmentMeIfYouCan, 8-connected components) at each row's threshold: "
        "'calibrated' = chosen on validation data at the target FPR, 'oracle' = the pooled "
        "best-F1 threshold of the evaluated split"
    ),
    "smiyc": (
        "SegmentMeIfYouCan's own numbers (PixBinaryClass binned pixel metrics; SegEval of the "
        "track at its best-F1 threshold)"
    ),
    "open_set": (
        "Open-set segmentation (DenseHybrid's open-mIoU: each test town thresholded at 95% TPR "
        "of the other)"
    ),
}


@dataclass(frozen=True)
class Column:
    """A metric column: ``better`` is "higher", "lower" or None (not ranked)."""

    key: str
    header: str
    better: str | None
    fmt: str
    """"pct" (fraction shown as percent), "num" (raw number), "int" or "text"."""


_MIOU = Column("miou", "mIoU", "higher", "pct")
_CURVE = (
    Column("auroc", "AUROC", "higher", "pct"),
    Column("aupr", "AUPR", "higher", "pct"),
    Column("fpr95", "FPR95", "lower", "pct"),
)
COLUMNS: dict[str, tuple[Column, ...]] = {
    "pooled": (
        _MIOU,
        *_CURVE,
        Column("f1", "F1 (oracle)", "higher", "pct"),
        Column("threshold", "threshold (oracle)", None, "num"),
        Column("f1_calibrated", "F1 (calibrated)", "higher", "pct"),
        Column("threshold_calibrated", "threshold (calibrated)", None, "num"),
    ),
    "per_image": (
        _MIOU,
        *_CURVE,
        Column("num_images", "images", None, "int"),
    ),
    "smiyc": (
        Column("aupr", "AP", "higher", "pct"),
        Column("auroc", "AUROC", "higher", "pct"),
        Column("fpr95", "FPR95", "lower", "pct"),
        Column("siou", "sIoU", "higher", "pct"),
        Column("ppv", "PPV", "higher", "pct"),
        Column("f1", "mean F1", "higher", "pct"),
        Column("track", "track", None, "text"),
    ),
    "open_set": (
        Column("closed_miou", "closed mIoU", "higher", "pct"),
        Column("open_miou", "open mIoU", "higher", "pct"),
        Column("miou_drop", "mIoU drop", "lower", "pct"),
        Column("anomaly_iou", "anomaly IoU", "higher", "pct"),
    ),
    "components": (
        _MIOU,
        Column("threshold_source", "threshold from", None, "text"),
        Column("f1", "mean F1", "higher", "pct"),
        Column("siou", "mean sIoU", "higher", "pct"),
        Column("ppv", "mean PPV", "higher", "pct"),
        Column("threshold", "threshold", None, "num"),
    ),
}


@dataclass
class Table:
    """A models x methods table for one protocol."""

    protocol: str
    id_columns: list[str]
    columns: tuple[Column, ...]
    rows: list[dict[str, Any]]
    best: dict[str, list[int]] = field(default_factory=dict)


def _method_values(results: dict[str, Any], m: dict[str, Any], protocol: str) -> dict[str, Any]:
    seg = results.get("segmentation") or {}
    out: dict[str, Any] = {"miou": seg.get("miou")}
    if protocol == "pooled":
        pooled, oracle, cal = m.get("pooled") or {}, m.get("oracle") or {}, m.get("calibrated")
        out.update(
            auroc=pooled.get("auroc"),
            aupr=pooled.get("aupr"),
            fpr95=pooled.get("fpr95"),
            f1=pooled.get("best_f1", oracle.get("f1")),
            threshold=pooled.get("best_f1_threshold", oracle.get("threshold")),
            f1_calibrated=(cal or {}).get("f1"),
            threshold_calibrated=(cal or {}).get("threshold"),
        )
    elif protocol == "per_image":
        per = m.get("per_image") or {}
        out.update(
            auroc=per.get("auroc"),
            aupr=per.get("aupr"),
            fpr95=per.get("fpr95"),
            num_images=per.get("num_images"),
        )
    elif protocol == "open_set":
        osr = m.get("open_set") or {}
        out.update(
            {k: osr.get(k) for k in ("closed_miou", "open_miou", "miou_drop", "anomaly_iou")}
        )
    elif protocol == "smiyc":
        sm = m.get("smiyc") or {}
        comp = sm.get("components") or {}
        out.update(
            aupr=sm.get("aupr"),
            auroc=sm.get("auroc"),
            fpr95=sm.get("fpr95"),
            siou=comp.get("mean_siou"),
            ppv=comp.get("mean_ppv"),
            f1=comp.get("mean_f1"),
            track=sm.get("track"),
        )
    else:
        comp = m.get("components") or {}
        out.update(
            threshold_source=comp.get("threshold_source") or "oracle",
            f1=comp.get("mean_f1"),
            siou=comp.get("mean_siou"),
            ppv=comp.get("mean_ppv"),
            threshold=comp.get("threshold"),
        )
    return out


def finite_number(v: Any) -> float | None:
    """``v`` as a float when it is a finite number (not a bool), else None."""
    if v is None or isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(float(v)) else None


def mark_best(
    rows: Sequence[dict[str, Any]], columns: Sequence[Column], group_by: str | None = None
) -> dict[str, list[int]]:
    """Indices of the rows holding the best value of each ranked column (ties all marked);
    with ``group_by``, the best within each group of rows sharing that column's value (numbers
    measured at different kinds of threshold are not ranked against each other)."""
    if group_by is not None:
        best: dict[str, list[int]] = {}
        for value in dict.fromkeys(r.get(group_by) for r in rows):
            idx = [i for i, r in enumerate(rows) if r.get(group_by) == value]
            part = mark_best([rows[i] for i in idx], columns)
            for key, found in part.items():
                best.setdefault(key, []).extend(idx[j] for j in found)
        return {k: sorted(v) for k, v in best.items()}
    best = {}
    for col in columns:
        if col.better is None:
            continue
        vals = [(i, finite_number(r.get(col.key))) for i, r in enumerate(rows)]
        vals = [(i, v) for i, v in vals if v is not None]
        if not vals:
            continue
        target = (max if col.better == "higher" else min)(v for _, v in vals)
        best[col.key] = [i for i, v in vals if abs(v - target) <= 1e-12]
    return best


def build_tables(entries: Sequence[ResultsEntry], allow_mixed: bool = False) -> dict[str, Table]:
    """One :class:`Table` per protocol, rows ordered by entry then method name."""
    mixed = check_comparable(entries, allow_mixed)
    id_columns = ["model", "method", *mixed]
    tables: dict[str, Table] = {}
    for protocol in PROTOCOLS:
        rows = []
        for e in entries:
            for name, m in (e.results.get("methods") or {}).items():
                if protocol in ("components", "smiyc", "open_set") and not m.get(protocol):
                    continue
                row: dict[str, Any] = {"model": e.label, "method": name}
                row.update({k: comparison_value(e.results, k) for k in mixed})
                row.update(_method_values(e.results, m, protocol))
                rows.append(row)
        if protocol in ("smiyc", "open_set") and not rows:
            continue  # no result measured this protocol
        cols = COLUMNS[protocol]
        group = "threshold_source" if protocol == "components" else None
        tables[protocol] = Table(protocol, id_columns, cols, rows, mark_best(rows, cols, group))
    return tables


def format_value(v: Any, fmt: str) -> str:
    """Display text of a value: "pct" -> percent with 2 decimals, "num" -> 4 significant
    digits, None -> "-"."""
    num = finite_number(v)
    if v is None or (num is None and isinstance(v, float)):
        return "-"
    if fmt == "pct" and num is not None:
        return f"{100 * num:.2f}"
    if fmt == "num" and num is not None:
        return f"{num:.4g}"
    return str(v)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_to_markdown(table: Table) -> str:
    """Markdown table: percentages with 2 decimals, best value of each column in bold."""
    headers = [
        *table.id_columns,
        *(c.header + (" ↓" if c.better == "lower" else "") for c in table.columns),
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for i, row in enumerate(table.rows):
        cells = [_md_cell(str(row.get(k))) for k in table.id_columns]
        for c in table.columns:
            text = format_value(row.get(c.key), c.fmt)
            if i in table.best.get(c.key, ()):
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    if not table.rows:
        lines.append("| " + " | ".join(["-"] * len(headers)) + " |")
    return "\n".join(lines) + "\n"


def table_to_csv(table: Table) -> str:
    """CSV with raw fractions and a ``best`` column listing the columns where the row is best."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*table.id_columns, *(c.key for c in table.columns), "best"])
    for i, row in enumerate(table.rows):
        best = ";".join(k for k, idx in table.best.items() if i in idx)
        values = ["" if row.get(c.key) is None else row.get(c.key) for c in table.columns]
        writer.writerow([*(row.get(k) for k in table.id_columns), *values, best])
    return buf.getvalue()


def table_to_json(table: Table) -> dict[str, Any]:
    """JSON form: column specs, rows (raw fractions) and ``best``: column -> value and rows."""
    return {
        "protocol": table.protocol,
        "title": PROTOCOL_TITLES[table.protocol],
        "columns": [{"key": c.key, "header": c.header, "better": c.better} for c in table.columns],
        "rows": [dict(r) for r in table.rows],
        "best": {
            key: {"value": table.rows[idx[0]].get(key), "rows": list(idx)}
            for key, idx in table.best.items()
        },
    }


def _source_lines(entries: Sequence[ResultsEntry]) -> list[str]:
    out = []
    for e in entries:
        d = e.results.get("data") or {}
        out.append(
            f"- **{e.label}**: `{e.path}` (split {d.get('split')}, {d.get('num_images')} images, "
            f"resize {d.get('resize', 'native')}, exclude_unlabeled "
            f"{lookup(e.results, 'protocol.exclude_unlabeled')})"
        )
    return out


def comparison_markdown(
    name: str, entries: Sequence[ResultsEntry], tables: dict[str, Table], mixed: Sequence[str]
) -> str:
    """The whole comparison as one Markdown document (sources and one table per protocol)."""
    parts = [
        f"# Comparison: {name}",
        "",
        "Values in percent; best per column in **bold** "
        "(FPR95 ↓: lower is better). Thresholds are raw scores.",
        "",
    ]
    if mixed:
        parts += [
            f"**Mixed comparison**: {', '.join(mixed)} differ between results; "
            "see the labelled columns.",
            "",
        ]
    parts += ["Sources:", *_source_lines(entries), ""]
    for protocol, table in tables.items():
        parts += [f"## {PROTOCOL_TITLES[protocol]}", "", table_to_markdown(table)]
    return "\n".join(parts)


def comparison_json(
    name: str, entries: Sequence[ResultsEntry], tables: dict[str, Table], mixed: Sequence[str]
) -> dict[str, Any]:
    """The whole comparison as a JSON-ready dict."""
    return {
        "kind": "comparison",
        "name": name,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "mixed": list(mixed),
        "sources": [
            {
                "label": e.label,
                "path": str(e.path),
                "model": lookup(e.results, "model.name"),
                **{k: comparison_value(e.results, k) for k in COMPARISON_KEYS},
            }
            for e in entries
        ],
        "tables": {p: table_to_json(t) for p, t in tables.items()},
    }
