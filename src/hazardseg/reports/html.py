"""One self-contained HTML page per run directory: config, training curves, per-class IoU,
method tables, ROC/PR curves and the run's figures, all embedded as data URIs."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hazardseg import __version__
from hazardseg.errors import DataError, HazardsegError
from hazardseg.io import atomic_write_text
from hazardseg.reports import plots
from hazardseg.reports.sources import ResultsEntry
from hazardseg.reports.tables import PROTOCOL_TITLES, Table, build_tables, format_value
from hazardseg.run_folder import RunFolder

MAX_IMAGES_PER_SECTION = 60
"""At most this many PNG files are embedded per figure section (the rest are listed)."""

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1150px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.85em;max-height:32em}
img{max-width:100%;border:1px solid #eee;margin:.3em 0}
.note{color:#555;font-style:italic}.status{background:#eef5ff;padding:.6em 1em;border-radius:4px}
figure{margin:.6em 0}figcaption{font-size:.85em;color:#555}
"""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def data_uri_png(data: bytes) -> str:
    """A ``data:image/png;base64,...`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img(data: bytes, alt: str) -> str:
    return f'<img src="{data_uri_png(data)}" alt="{_esc(alt)}">'


def _figure(fig: Any, alt: str) -> str:
    return _img(plots.figure_png(fig), alt)


def html_table(table: Table) -> str:
    """A method table as HTML: percentages with 2 decimals, best per column in bold."""
    head = "".join(f'<th class="l">{_esc(k)}</th>' for k in table.id_columns)
    head += "".join(
        f"<th>{_esc(c.header)}{' ↓' if c.better == 'lower' else ''}</th>" for c in table.columns
    )
    body = []
    for i, row in enumerate(table.rows):
        cells = "".join(f'<td class="l">{_esc(row.get(k))}</td>' for k in table.id_columns)
        for c in table.columns:
            text = _esc(format_value(row.get(c.key), c.fmt))
            if i in table.best.get(c.key, ()):
                text = f"<strong>{text}</strong>"
            cells += f"<td>{text}</td>"
        body.append(f"<tr>{cells}</tr>")
    if not body:
        return '<p class="note">no rows</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _iou_section(iou: dict[str, Any], caption: str) -> str:
    rows = "".join(
        f'<tr><td class="l">{_esc(name)}</td><td>{_esc(format_value(v, "pct"))}</td></tr>'
        for name, v in iou.items()
    )
    table = '<table><thead><tr><th class="l">class</th><th>IoU (%)</th></tr></thead>'
    table += f"<tbody>{rows}</tbody></table>"
    fig = _figure(plots.plot_iou_bars(iou, caption), caption)
    return (
        '<div style="display:flex;gap:2em;align-items:flex-start;flex-wrap:wrap">'
        f"<div>{table}</div><div>{fig}</div></div>"
    )


def _training_section(run: Path) -> tuple[str, str]:
    """(HTML section, status line) for metrics.jsonl."""
    folder = RunFolder(run)
    if not folder.metrics_jsonl.is_file():
        return "", "No training log (metrics.jsonl) in this run directory."
    metric_rows = folder.metric_rows()
    rows, skipped = metric_rows.rows, metric_rows.skipped
    val = [r for r in rows if r.get("kind") == "val" and r.get("miou") is not None]
    train = [r for r in rows if r.get("kind") == "train"]
    parts = ["<h2>Training</h2>"]
    if skipped:
        parts.append(
            f'<p class="note">{skipped} unreadable line(s) or invalid value(s) of metrics.jsonl '
            "skipped.</p>"
        )
    parts.append(_figure(plots.plot_training_curves(rows), "training curves"))
    epochs = sorted({r.get("epoch") for r in train + val if r.get("epoch") is not None})
    status = f"Training: {len(epochs)} epoch(s) logged"
    if val:
        best = max(val, key=lambda r: r["miou"])
        status += f", best validation mIoU {100 * best['miou']:.2f}% (epoch {best.get('epoch')})"
        if best.get("iou"):
            parts.append(
                f"<h3>Per-class IoU, best validation epoch ({_esc(best.get('epoch'))})</h3>"
            )
            parts.append(_iou_section(best["iou"], "validation IoU (best epoch)"))
    else:
        status += ", no validation yet"
    return "\n".join(parts), status + "."


def _results_files(run: Path) -> list[Path]:
    ev = run / "eval"
    return sorted(ev.rglob("results.json")) if ev.is_dir() else []


def _evaluation_section(path: Path) -> tuple[str, str]:
    """(HTML section, status line) for one results.json."""
    from hazardseg.evaluation.results import load_results

    rel = path.parent.name
    try:
        res = load_results(path)
    except HazardsegError as exc:
        return (
            f"<h2>Evaluation: {_esc(rel)}</h2><p class='note'>could not read: {_esc(exc)}</p>",
            f"Evaluation {rel}: unreadable results.json.",
        )
    d = res.get("data") or {}
    split = d.get("split", rel)
    parts = [f"<h2>Evaluation: {_esc(split)} split</h2>"]
    parts.append(
        f"<p>{_esc(d.get('num_images'))} images, resize {_esc(d.get('resize', 'native'))}, "
        f"exclude_unlabeled {_esc((res.get('protocol') or {}).get('exclude_unlabeled'))}; "
        f"model {_esc((res.get('model') or {}).get('name'))}; file "
        f"<code>{_esc(path)}</code></p>"
    )
    seg = res.get("segmentation")
    if seg:
        parts.append(
            f"<p>mIoU <strong>{_esc(format_value(seg.get('miou'), 'pct'))}%</strong>, "
            f"pixel accuracy {_esc(format_value(seg.get('pixel_accuracy'), 'pct'))}%</p>"
        )
        if seg.get("iou"):
            parts.append(f"<h3>Per-class IoU ({_esc(split)})</h3>")
            parts.append(_iou_section(seg["iou"], f"IoU ({split})"))
    methods = res.get("methods") or {}
    if methods:
        tables = build_tables([ResultsEntry(path, res, str((res.get("model") or {}).get("name")))])
        for protocol, table in tables.items():
            if table.rows:
                parts.append(f"<h3>{_esc(PROTOCOL_TITLES[protocol])}</h3>{html_table(table)}")
        curves = {k: m.get("curves") or {} for k, m in methods.items()}
        summary = {k: m.get("pooled") or {} for k, m in methods.items()}
        parts.append(f"<h3>ROC and PR curves ({_esc(split)}, pooled)</h3>")
        parts.append(_figure(plots.plot_roc_pr(curves, "", summary), "ROC and PR curves"))
    else:
        parts.append('<p class="note">no anomaly methods evaluated.</p>')
    status = f"Evaluation on {split}: {len(methods)} method(s)"
    if seg and seg.get("miou") is not None:
        status += f", mIoU {100 * seg['miou']:.2f}%"
    return "\n".join(parts), status + "."


def _png_section(title: str, files: Sequence[Path], base: Path) -> str:
    if not files:
        return ""
    parts = [f"<h2>{_esc(title)}</h2>"]
    for f in files[:MAX_IMAGES_PER_SECTION]:
        try:
            data = f.read_bytes()
        except OSError:
            continue
        if not data.startswith(b"\x89PNG"):
            continue
        try:
            name = f.relative_to(base)
        except ValueError:
            name = f
        parts.append(
            f"<figure>{_img(data, str(name))}<figcaption>{_esc(name)}</figcaption></figure>"
        )
    if len(files) > MAX_IMAGES_PER_SECTION:
        rest = ", ".join(_esc(p.name) for p in files[MAX_IMAGES_PER_SECTION:])
        parts.append(
            f'<p class="note">not embedded ({len(files) - MAX_IMAGES_PER_SECTION}): {rest}</p>'
        )
    return "\n".join(parts)


def build_report_html(run_dir: str | os.PathLike[str], compare_dirs: Sequence[Path] = ()) -> str:
    """The report page of ``run_dir`` as an HTML string (works with any subset of the run)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"run directory not found: {run}")
    folder = RunFolder(run)
    config = folder.config
    results = _results_files(run)
    visual = sorted(folder.visualize.glob("*.png")) if folder.visualize.is_dir() else []
    if not (config.is_file() or folder.metrics_jsonl.is_file() or results or visual):
        raise DataError(
            f"{run}: not a run directory (expected config.yaml, metrics.jsonl, eval/ or visualize/)"
        )
    status: list[str] = []
    body: list[str] = []
    train_html, train_status = _training_section(run)
    status.append(train_status)
    body.append(train_html)
    if results:
        for p in results:
            section, line = _evaluation_section(p)
            body.append(section)
            status.append(line)
    else:
        status.append("No evaluation yet (no eval/*/results.json): this page shows training only.")
    body.append(_png_section("Sample panels (visualize/)", visual, run))
    extra_dirs = [run / "eval", run / "compare", *map(Path, compare_dirs)]
    extra: list[Path] = []
    for d in extra_dirs:
        if d.is_dir():
            extra.extend(p for p in sorted(d.rglob("*.png")) if p not in extra)
    body.append(_png_section("Other figures", extra, run))
    if config.is_file():
        raw = config.read_bytes()
        try:
            cfg_text, cfg_note = raw.decode("utf-8"), ""
        except UnicodeDecodeError:
            cfg_text = raw.decode("utf-8", errors="replace")
            cfg_note = (
                '<p class="note">config.yaml is not valid UTF-8; undecodable bytes are shown '
                "as replacement characters.</p>"
            )
            status.append("config.yaml is not valid UTF-8 (shown with replacement characters).")
        cfg_html = f"<h2>Configuration (config.yaml)</h2>{cfg_note}<pre>{_esc(cfg_text)}</pre>"
    else:
        cfg_html = '<h2>Configuration</h2><p class="note">no config.yaml in this run.</p>'
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    status_html = "".join(f"<li>{_esc(s)}</li>" for s in status)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>hazardseg report: {_esc(run.resolve().name)}</title><style>{_CSS}</style></head>"
        f"<body><h1>hazardseg report: {_esc(run.resolve().name)}</h1>"
        f"<p class='note'>{_esc(run.resolve())} - generated {now} by hazardseg {__version__}</p>"
        f"<div class='status'><ul>{status_html}</ul></div>"
        + "\n".join(b for b in body if b)
        + cfg_html
        + "</body></html>\n"
    )


def build_report(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    compare_dirs: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write the report page of ``run_dir`` atomically (default ``RUN_DIR/report.html``)."""
    page = build_report_html(run_dir, [Path(d) for d in compare_dirs])
    target = Path(out) if out is not None else Path(run_dir) / "report.html"
    atomic_write_text(target, page)
    return target
