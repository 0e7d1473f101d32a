"""Reusable metric figures: ROC/PR curves, grouped bars, per-class IoU bars, training curves,
threshold sensitivity.

Every function builds a :class:`matplotlib.figure.Figure` drawn by the Agg canvas; figures are
never registered with pyplot, so nothing stays open. :func:`save_figure` writes one
atomically, :func:`figure_png` returns PNG bytes (for embedding in HTML).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from hazardseg.io import atomic_path

LOWER_IS_BETTER: frozenset[str] = frozenset({"fpr95"})
"""Metric keys where a smaller value is better."""

METRIC_LABELS: dict[str, str] = {
    "auroc": "AUROC",
    "aupr": "AUPR",
    "fpr95": "FPR95",
    "miou": "mIoU",
    "f1": "F1",
}


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Write ``fig`` atomically (format from the suffix, PNG by default), release it, return
    the path."""
    target = Path(path)
    fmt = target.suffix.lstrip(".").lower() or "png"
    try:
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
    finally:
        fig.clear()
    return target


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render ``fig`` to PNG bytes and release it."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        fig.clear()
    return buf.getvalue()


def _finite(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _empty_note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def plot_roc_pr(
    curves: Mapping[str, Mapping[str, Any]],
    title: str = "",
    summary: Mapping[str, Mapping[str, float | None]] | None = None,
) -> Figure:
    """ROC (left) and precision-recall (right) curves, one line per entry of ``curves``.

    ``curves[name]`` is a results.json ``curves`` object (``roc``: fpr/tpr, ``pr``:
    recall/precision). ``summary[name]`` may hold ``auroc``/``aupr`` for the legend.
    """
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    ax_roc, ax_pr = fig.subplots(1, 2)
    drawn = 0
    for name, c in curves.items():
        roc, pr = (c or {}).get("roc") or {}, (c or {}).get("pr") or {}
        s = (summary or {}).get(name) or {}
        fpr, tpr = _finite(roc.get("fpr", [])), _finite(roc.get("tpr", []))
        rec, prec = _finite(pr.get("recall", [])), _finite(pr.get("precision", []))
        if fpr.size:
            label = name if s.get("auroc") is None else f"{name} ({100 * s['auroc']:.1f})"
            order = np.argsort(fpr, kind="stable")
            ax_roc.plot(fpr[order], tpr[order], label=label, lw=1.5)
            drawn += 1
        if rec.size:
            label = name if s.get("aupr") is None else f"{name} ({100 * s['aupr']:.1f})"
            order = np.argsort(rec, kind="stable")
            ax_pr.plot(rec[order], prec[order], label=label, lw=1.5)
    ax_roc.plot([0, 1], [0, 1], ls=":", color="0.6", lw=1)
    ax_roc.axhline(0.95, color="0.75", lw=0.8, ls="--")  # FPR95 is read at TPR = 95%
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1))
    ax_roc.set(ylim=(0, 1.01), title="ROC (legend: AUROC %)")
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
    ax_pr.set(title="precision-recall (legend: AUPR %)")
    if drawn:
        ax_roc.legend(fontsize=8, loc="lower right")
        ax_pr.legend(fontsize=8, loc="upper right")
    else:
        _empty_note(ax_roc, "no curve data")
        _empty_note(ax_pr, "no curve data")
    if title:
        fig.suptitle(title)
    return fig


def plot_grouped_bars(
    values: Mapping[str, Mapping[str, Mapping[str, float | None]]],
    metrics: Sequence[str] = ("auroc", "aupr", "fpr95"),
    title: str = "",
) -> Figure:
    """One panel per metric: groups = methods, one bar per model (values in percent).

    ``values[metric][method][model]`` is a fraction or None (drawn as a missing bar).
    """
    fig = Figure(figsize=(max(6.0, 4.2 * len(metrics)), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    handles: dict[str, Any] = {}
    all_models = sorted({m for t in values.values() for row in t.values() for m in row})
    for ax, metric in zip(axes, metrics, strict=True):
        table = values.get(metric, {})
        methods = list(table)
        models = [m for m in all_models if any(m in row for row in table.values())]
        width = 0.8 / max(len(models), 1)
        x = np.arange(len(methods))
        top = 0.0
        for k, model in enumerate(models):
            ys = _finite([table[meth].get(model) for meth in methods]) * 100
            offset = (k - (len(models) - 1) / 2) * width
            color = f"C{all_models.index(model) % 10}"
            bars = ax.bar(x + offset, ys, width, label=model, color=color)
            handles.setdefault(model, bars)
            ax.bar_label(
                bars, labels=["" if np.isnan(v) else f"{v:.1f}" for v in ys], fontsize=7, padding=1
            )
            if np.isfinite(ys).any():
                top = max(top, float(np.nanmax(ys)))
        ax.set_xticks(x, methods, rotation=30, ha="right", fontsize=8)
        arrow = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        ax.set_title(f"{METRIC_LABELS.get(metric, metric)} (%) - {arrow}", fontsize=10)
        ax.set_ylim(0, min(100.0, top * 1.15) if top > 0 else 100.0)
        ax.grid(axis="y", alpha=0.3)
        if not methods:
            _empty_note(ax, "no data")
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncol=min(len(handles), 4),
            fontsize=8,
            title="model",
            title_fontsize=8,
        )
    if title:
        fig.suptitle(title)
    return fig


def plot_iou_bars(iou: Mapping[str, float | None], title: str = "per-class IoU") -> Figure:
    """Horizontal bars of per-class IoU in percent (None = class absent, shown as 'n/a')."""
    names = list(iou)
    vals = _finite([iou[n] for n in names]) * 100
    fig = Figure(figsize=(6.5, 0.32 * max(len(names), 3) + 1.2), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(names))
    ax.barh(y, np.nan_to_num(vals), color="#4c72b0")
    for yi, v in zip(y, vals, strict=True):
        ax.text(
            (0 if math.isnan(v) else v) + 1,
            yi,
            "n/a" if math.isnan(v) else f"{v:.1f}",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 105), xlabel="IoU (%)", title=title)
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_training_curves(rows: Sequence[Mapping[str, Any]], title: str = "") -> Figure:
    """Training loss (mean per epoch, and every logged value) and validation mIoU vs epoch.

    ``rows`` are metrics.jsonl rows (``kind`` "train" with ``loss``, "val" with ``miou``).
    """
    train = [r for r in rows if r.get("kind") == "train" and r.get("loss") is not None]
    val = [r for r in rows if r.get("kind") == "val" and r.get("miou") is not None]
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_loss, ax_val = fig.subplots(1, 2)
    if train:
        epochs = _finite([r.get("epoch", 0) for r in train])
        losses = _finite([r["loss"] for r in train])
        ax_loss.plot(epochs, losses, ".", ms=3, alpha=0.35, color="#4c72b0", label="logged")
        uniq = np.unique(epochs)
        means = [np.nanmean(losses[epochs == e]) for e in uniq]
        ax_loss.plot(uniq, means, "-o", ms=3, color="#4c72b0", label="epoch mean")
        ax_loss.legend(fontsize=8)
    else:
        _empty_note(ax_loss, "no training rows")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training loss")
    ax_loss.grid(alpha=0.3)
    if val:
        ep = _finite([r.get("epoch", 0) for r in val])
        miou = _finite([r["miou"] for r in val]) * 100
        ax_val.plot(ep, miou, "-o", ms=3, color="#dd8452", label="mIoU")
        best = int(np.nanargmax(miou))
        ax_val.plot(
            ep[best], miou[best], "*", ms=12, color="#c44e52", label=f"best {miou[best]:.2f}"
        )
        ax_val.legend(fontsize=8)
    else:
        _empty_note(ax_val, "no validation rows")
    ax_val.set(xlabel="epoch", ylabel="mIoU (%)", title="validation mIoU")
    ax_val.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_sensitivity(
    thresholds: Sequence[float],
    f1: Sequence[float],
    precision: Sequence[float],
    recall: Sequence[float],
    calibrated: float | None = None,
    oracle: float | None = None,
    title: str = "",
) -> Figure:
    """F1, precision and recall against the detection threshold, with the calibrated and the
    oracle (best-F1) thresholds marked."""
    t = _finite(thresholds)
    order = np.argsort(t, kind="stable")
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    for vals, label, color in (
        (f1, "F1", "#c44e52"),
        (precision, "precision", "#4c72b0"),
        (recall, "recall", "#55a868"),
    ):
        ax.plot(t[order], _finite(vals)[order], label=label, color=color, lw=1.6)
    if oracle is not None:
        ax.axvline(oracle, color="0.2", ls="--", lw=1, label=f"oracle best F1 ({oracle:.4g})")
    if calibrated is not None:
        ax.axvline(
            calibrated, color="#8172b3", ls="-.", lw=1.2, label=f"calibrated ({calibrated:.4g})"
        )
    ax.set(xlabel="threshold (score >= t is anomalous)", ylabel="value", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig
