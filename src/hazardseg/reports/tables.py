"""Comparison tables (models x methods, one per protocol) rendered from results.json files,
written as CSV, Markdown and JSON; threshold-sensitivity rows from a method's PR curve.

Tables are built from the stored results only; nothing is recomputed from pixels.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hazardseg.errors import ConfigError, DataError

PROTOCOLS: tuple[str, ...] = ("pooled", "per_image", "components")
PROTOCOL_TITLES: dict[str, str] = {
    "pooled": "Pooled (one curve over all pixels of the split)",
    "per_image": "Per image (averaged over images with both classes; official protocol)",
    "components": "Component level (8-connected components at the best-F1 threshold)",
}
COMPARISON_KEYS: tuple[str, ...] = (
    "data.split",
    "data.num_images",
    "data.resize",
    "data.at_label_resolution",
    "protocol.exclude_unlabeled",
)
"""Fields that must agree between results compared in one table."""


@dataclass(frozen=True)
class Column:
    """A metric column: ``better`` is "higher", "lower" or None (not ranked)."""

    key: str
    header: str
    better: str | None
    fmt: str
    """"pct" (fraction shown as percent), "num" (raw number) or "int"."""


_MIOU = Column("miou", "mIoU", "higher", "pct")
COLUMNS: dict[str, tuple[Column, ...]] = {
    "pooled": (
        _MIOU,
        Column("auroc", "AUROC", "higher", "pct"),
        Column("aupr", "AUPR", "higher", "pct"),
        Column("fpr95", "FPR95", "lower", "pct"),
        Column("f1", "F1 (oracle)", "higher", "pct"),
        Column("threshold", "threshold (oracle)", None, "num"),
        Column("f1_calibrated", "F1 (calibrated)", "higher", "pct"),
        Column("threshold_calibrated", "threshold (calibrated)", None, "num"),
    ),
    "per_image": (
        _MIOU,
        Column("auroc", "AUROC", "higher", "pct"),
        Column("aupr", "AUPR", "higher", "pct"),
        Column("fpr95", "FPR95", "lower", "pct"),
        Column("num_images", "images", None, "int"),
    ),
    "components": (
        _MIOU,
        Column("f1", "mean F1", "higher", "pct"),
        Column("siou", "mean sIoU", "higher", "pct"),
        Column("ppv", "mean PPV", "higher", "pct"),
        Column("threshold", "threshold", None, "num"),
    ),
}


@dataclass
class ResultsEntry:
    """One loaded results file and the label it gets in tables."""

    path: Path
    results: dict[str, Any]
    label: str = ""


@dataclass
class Table:
    """A models x methods table for one protocol."""

    protocol: str
    id_columns: list[str]
    columns: tuple[Column, ...]
    rows: list[dict[str, Any]]
    best: dict[str, list[int]] = field(default_factory=dict)


def _get(obj: dict[str, Any], dotted: str) -> Any:
    node: Any = obj
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def find_results(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and directories (searched recursively for results.json) into a sorted,
    de-duplicated list of files; DataError for a missing path or when nothing is found."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            hits = sorted(p.rglob("results.json"))
            if not hits:
                raise DataError(f"{p}: no results.json found in this directory")
            found.extend(hits)
        else:
            raise DataError(f"results path not found: {p}")
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    if not unique:
        raise DataError("no results files given")
    return list(unique.values())


def _disambiguate(entries: list[ResultsEntry]) -> None:
    """Label entries by model name; files of the same model get the part of their folder path
    that tells them apart."""
    by_name: dict[str, list[ResultsEntry]] = {}
    for e in entries:
        e.label = str(_get(e.results, "model.name") or "model")
        by_name.setdefault(e.label, []).append(e)
    for group in by_name.values():
        if len(group) < 2:
            continue
        parts = [e.path.resolve().parent.parts for e in group]
        lead = 0
        while all(len(p) > lead for p in parts) and len({p[lead] for p in parts}) == 1:
            lead += 1
        tail = 0
        while all(len(p) - tail > lead for p in parts) and len({p[-1 - tail] for p in parts}) == 1:
            tail += 1
        for e, p in zip(group, parts, strict=True):
            diff = "/".join(p[lead : len(p) - tail]) or e.path.name
            e.label = f"{e.label} [{diff}]"


def load_entries(paths: Sequence[str | os.PathLike[str]]) -> list[ResultsEntry]:
    """Load and validate every results file under ``paths`` and give each a table label."""
    from hazardseg.evaluation.results import load_results

    entries = [ResultsEntry(p, load_results(p)) for p in find_results(paths)]
    _disambiguate(entries)
    return entries


def mixed_keys(entries: Sequence[ResultsEntry]) -> list[str]:
    """The :data:`COMPARISON_KEYS` whose values differ between ``entries``."""
    return [
        key for key in COMPARISON_KEYS if len({repr(_get(e.results, key)) for e in entries}) > 1
    ]


def check_comparable(entries: Sequence[ResultsEntry], allow_mixed: bool = False) -> list[str]:
    """Return the differing comparison keys; DataError when some differ and not ``allow_mixed``."""
    keys = mixed_keys(entries)
    if keys and not allow_mixed:
        key = keys[0]
        first = entries[0]
        other = next(
            e for e in entries if repr(_get(e.results, key)) != repr(_get(first.results, key))
        )
        raise DataError(
            f"results are not comparable: {key} is {_get(first.results, key)!r} in {first.path} "
            f"but {_get(other.results, key)!r} in {other.path}; pass --allow-mixed to compare "
            "them anyway (a column then labels each row)"
        )
    return keys


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
    else:
        comp = m.get("components") or {}
        out.update(
            f1=comp.get("mean_f1"),
            siou=comp.get("mean_siou"),
            ppv=comp.get("mean_ppv"),
            threshold=comp.get("threshold"),
        )
    return out


def _number(v: Any) -> float | None:
    if v is None or isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(float(v)) else None


def mark_best(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> dict[str, list[int]]:
    """Indices of the rows holding the best value of each ranked column (ties all marked)."""
    best: dict[str, list[int]] = {}
    for col in columns:
        if col.better is None:
            continue
        vals = [(i, _number(r.get(col.key))) for i, r in enumerate(rows)]
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
                if protocol == "components" and not m.get("components"):
                    continue
                row: dict[str, Any] = {"model": e.label, "method": name}
                row.update({k: _get(e.results, k) for k in mixed})
                row.update(_method_values(e.results, m, protocol))
                rows.append(row)
        cols = COLUMNS[protocol]
        tables[protocol] = Table(protocol, id_columns, cols, rows, mark_best(rows, cols))
    return tables


def format_value(v: Any, fmt: str) -> str:
    """Display text of a value: "pct" -> percent with 2 decimals, "num" -> 4 significant
    digits, None -> "-"."""
    num = _number(v)
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
            f"{_get(e.results, 'protocol.exclude_unlabeled')})"
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


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def slug(text: str) -> str:
    """File-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def check_name(name: str) -> str:
    """Validate a comparison name (used as a file-name prefix)."""
    if not _NAME.match(name):
        raise ConfigError(
            f"--name {name!r}: expected letters, digits, '.', '_' or '-' (a file-name prefix)"
        )
    return name


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
                "model": _get(e.results, "model.name"),
                **{k: _get(e.results, k) for k in COMPARISON_KEYS},
            }
            for e in entries
        ],
        "tables": {p: table_to_json(t) for p, t in tables.items()},
    }


# ----------------------------------------------------------------------------- sensitivity


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
        return "     -" if _number(v) is None else f"{100 * float(v):6.2f}"

    lines = [f"{'threshold':>12} {'F1':>6} {'P':>6} {'R':>6}  note"]
    for r in rows:
        lines.append(
            f"{r['threshold']:12.5g} {pct(r['f1'])} {pct(r['precision'])} {pct(r['recall'])}"
            f"  {r['note']}".rstrip()
        )
    return "\n".join(lines)
