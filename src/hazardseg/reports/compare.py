"""Write a comparison (tables + figures) of several results files, and a threshold-sensitivity
figure for one method."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hazardseg.errors import ConfigError, DataError
from hazardseg.io import atomic_write_json, atomic_write_text
from hazardseg.reports import plots
from hazardseg.reports.sensitivity import method_entry, sensitivity_rows, threshold_sweep
from hazardseg.reports.sources import ResultsEntry, load_entries, mixed_keys
from hazardseg.reports.tables import (
    Table,
    build_tables,
    comparison_json,
    comparison_markdown,
    table_to_csv,
)

BAR_METRICS: tuple[str, ...] = ("auroc", "aupr", "fpr95")


@dataclass
class Comparison:
    """What :func:`write_comparison` produced."""

    files: list[Path]
    tables: dict[str, Table]
    entries: list[ResultsEntry]
    mixed: list[str]


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


def bar_values(
    table: Table, metrics: Sequence[str] = BAR_METRICS
) -> dict[str, dict[str, dict[str, Any]]]:
    """``values[metric][method][model]`` from a table, for :func:`plots.plot_grouped_bars`."""
    out: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in metrics}
    for row in table.rows:
        model = " / ".join([str(row["model"])] + [f"{k}={row[k]}" for k in table.id_columns[2:]])
        for metric in metrics:
            out[metric].setdefault(str(row["method"]), {})[model] = row.get(metric)
    return out


def _planned_files(out: Path, name: str, entries: Sequence[ResultsEntry]) -> dict[str, Path]:
    files = {
        "markdown": out / f"{name}.md",
        "json": out / f"{name}.json",
        "csv_pooled": out / f"{name}_pooled.csv",
        "csv_per_image": out / f"{name}_per_image.csv",
        "csv_components": out / f"{name}_components.csv",
        "bars_pooled": out / f"{name}_bars_pooled.png",
        "bars_per_image": out / f"{name}_bars_per_image.png",
    }
    for protocol in ("smiyc", "open_set"):
        methods = (m for e in entries for m in (e.results.get("methods") or {}).values())
        if any(m.get(protocol) for m in methods):
            files[f"csv_{protocol}"] = out / f"{name}_{protocol}.csv"
    for e in entries:
        files[f"curves:{e.label}"] = out / f"{name}_curves_{slug(e.label)}.png"
    return files


def write_comparison(
    results: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    name: str = "comparison",
    overwrite: bool = False,
    allow_mixed: bool = False,
) -> Comparison:
    """Compare results files (or directories holding them) and write tables and figures.

    Writes ``NAME.md``, ``NAME.json``, ``NAME_<protocol>.csv``, ``NAME_bars_<protocol>.png``
    and ``NAME_curves_<model>.png`` into ``out_dir``. Refuses (DataError) to replace existing
    files unless ``overwrite``, and to mix splits/protocols unless ``allow_mixed``.
    """
    check_name(name)
    entries = load_entries(results)
    tables = build_tables(entries, allow_mixed)
    mixed = mixed_keys(entries)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: exists and is not a directory")
    planned = _planned_files(out, name, entries)
    existing = [p for p in planned.values() if p.exists()]
    if existing and not overwrite:
        raise DataError(
            f"{existing[0]} already exists (comparison {name!r}); pass --overwrite to replace "
            "it or choose another --name"
        )
    atomic_write_text(planned["markdown"], comparison_markdown(name, entries, tables, mixed))
    atomic_write_json(planned["json"], comparison_json(name, entries, tables, mixed))
    for protocol, table in tables.items():
        atomic_write_text(planned[f"csv_{protocol}"], table_to_csv(table))
    for protocol in ("pooled", "per_image"):
        fig = plots.plot_grouped_bars(
            bar_values(tables[protocol]), BAR_METRICS, title=f"{name}: {protocol} protocol"
        )
        plots.save_figure(fig, planned[f"bars_{protocol}"])
    for e in entries:
        methods = e.results.get("methods") or {}
        curves = {k: m.get("curves") or {} for k, m in methods.items()}
        summary = {k: m.get("pooled") or {} for k, m in methods.items()}
        split = (e.results.get("data") or {}).get("split")
        fig = plots.plot_roc_pr(curves, f"{e.label} ({split}, pooled)", summary)
        plots.save_figure(fig, planned[f"curves:{e.label}"])
    return Comparison(list(planned.values()), tables, entries, mixed)


@dataclass
class Sensitivity:
    """What :func:`write_sensitivity` produced."""

    figure: Path
    rows: list[dict[str, Any]]


def write_sensitivity(
    results: str | os.PathLike[str], method: str, out: str | os.PathLike[str] | None = None
) -> Sensitivity:
    """Plot F1, precision and recall against the threshold for ``method``; default output
    ``sensitivity_<method>.png`` beside the results file."""
    from hazardseg.evaluation.results import load_results

    src = Path(results)
    data = load_results(src)
    src_file = src / "results.json" if src.is_dir() else src
    m = method_entry(data, method, str(src_file))
    sweep = threshold_sweep(m, f"{src_file}: methods.{method}")
    rows = sensitivity_rows(m, sweep)
    cal = (m.get("calibrated") or {}).get("threshold")
    oracle = (m.get("oracle") or {}).get("threshold")
    target = Path(out) if out is not None else src_file.parent / f"sensitivity_{slug(method)}.png"
    fig = plots.plot_sensitivity(
        sweep["thresholds"],
        sweep["f1"],
        sweep["precision"],
        sweep["recall"],
        calibrated=cal,
        oracle=oracle,
        title=f"{method}: threshold sensitivity ({(data.get('data') or {}).get('split')})",
    )
    plots.save_figure(fig, target)
    return Sensitivity(target, rows)
