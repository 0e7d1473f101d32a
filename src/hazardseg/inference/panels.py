"""Qualitative per-sample panels and comparison grids, drawn from numpy arrays.

Everything here is pure: arrays in, RGB arrays or matplotlib figures out. Figures are built
with :class:`matplotlib.figure.Figure` and rendered by the Agg canvas; they are never
registered with pyplot, so nothing stays open after :func:`save_figure`.

Panel keys, in drawing order: ``input``, ``ground_truth``, ``prediction``, ``overlay``,
``confidence``, ``error`` and, when an anomaly score map is given, ``anomaly_score``,
``detection`` and ``tp_fp_fn``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from hazardseg.data.registry import ANOMALY_COLOR, IGNORE_COLOR, DatasetDef
from hazardseg.inference.render import (
    SCORE_CMAP,
    check_same_size,
    detection_overlay,
    drawing,
    error_map,
    overlay_segmentation,
    score_range,
)
from hazardseg.reports.plots import save_figure as save_figure

PANEL_TAG = "hazardseg-panel:"
"""Prefix of the label of every panel axes (colour-bar axes do not carry it)."""

BASE_PANELS: tuple[str, ...] = (
    "input",
    "ground_truth",
    "prediction",
    "overlay",
    "confidence",
    "error",
)
ANOMALY_PANELS: tuple[str, ...] = ("anomaly_score", "detection", "tp_fp_fn")

PANEL_TITLES: dict[str, str] = {
    "input": "input",
    "ground_truth": "ground truth",
    "prediction": "prediction",
    "overlay": "prediction overlay",
    "confidence": "confidence (max softmax)",
    "error": "error (red = wrong)",
    "anomaly_score": "anomaly score",
    "detection": "detection",
    "tp_fp_fn": "TP green / FP red / FN blue",
}

CONFIDENCE_CMAP = "viridis"


@dataclass
class PanelData:
    """Arrays of one sample, all (H, W) except ``image`` (H, W, 3) uint8.

    ``pred`` holds known-class ids (0..12), ``gt`` ids 0..13 and 255 (or None when there is no
    annotation), ``confidence`` values in [0, 1], ``score`` the anomaly score map (higher =
    more anomalous; None on splits without anomalies) and ``threshold`` the detection threshold
    with a short ``threshold_label`` saying where it comes from.
    """

    image: np.ndarray
    pred: np.ndarray
    confidence: np.ndarray
    gt: np.ndarray | None = None
    score: np.ndarray | None = None
    threshold: float | None = None
    threshold_label: str = ""
    name: str = ""
    miou: float | None = None
    ap: float | None = None
    gt_dataset: DatasetDef | None = None
    """The dataset whose ids ``gt`` holds (default: StreetHazards)."""
    pred_dataset: DatasetDef | None = None
    """The dataset of the model's classes, which ``pred`` holds (default: StreetHazards)."""


def panel_keys(has_gt: bool, has_score: bool) -> tuple[str, ...]:
    """Return the panel keys drawn for a sample with/without ground truth and score map."""
    keys = [k for k in BASE_PANELS if has_gt or k not in ("ground_truth", "error")]
    if has_score:
        keys += [k for k in ANOMALY_PANELS if has_gt or k != "tp_fp_fn"]
    return tuple(keys)


def _tag(ax: Axes, key: str) -> None:
    ax.set_label(PANEL_TAG + key)
    ax.set_xticks([])
    ax.set_yticks([])


def panel_axes(fig: Figure) -> list[Axes]:
    """Return the panel axes of a figure made here (colour bars excluded)."""
    return [ax for ax in fig.axes if str(ax.get_label()).startswith(PANEL_TAG)]


def _threshold_text(sample: PanelData) -> str:
    if sample.threshold is None:
        return "no threshold"
    label = f", {sample.threshold_label}" if sample.threshold_label else ""
    return f"thr {sample.threshold:.3g}{label}"


def _draw(
    fig: Figure,
    ax: Axes,
    key: str,
    s: PanelData,
    vrange: tuple[float, float],
    colorbar: bool,
    title: str | None,
) -> None:
    """Draw panel ``key`` of sample ``s`` into ``ax``."""
    _tag(ax, key)
    extra = ""
    cbar_im = None
    if key == "input":
        ax.imshow(s.image)
    elif key == "ground_truth":
        ax.imshow(drawing(s.gt_dataset).colorize(s.gt))
    elif key == "prediction":
        ax.imshow(drawing(s.pred_dataset).colorize(s.pred))
        if s.miou is not None:
            extra = f" (mIoU {100 * s.miou:.1f})"
    elif key == "overlay":
        ax.imshow(overlay_segmentation(s.image, s.pred, dataset=s.pred_dataset))
    elif key == "confidence":
        cbar_im = ax.imshow(s.confidence, cmap=CONFIDENCE_CMAP, vmin=0.0, vmax=1.0)
    elif key == "error":
        ax.imshow(error_map(s.image, s.gt, s.pred, dataset=s.gt_dataset))
        known = s.gt < drawing(s.gt_dataset).labels.num_classes
        if known.any():
            extra = f" {100 * float((s.pred[known] != s.gt[known]).mean()):.1f}%"
    elif key == "anomaly_score":
        score = np.where(np.isfinite(s.score), s.score, np.nan)
        cbar_im = ax.imshow(score, cmap=SCORE_CMAP, vmin=vrange[0], vmax=vrange[1])
        if s.ap is not None:
            extra = (
                f" (AP {100 * s.ap:.1f})" if np.isfinite(s.ap) else " (no anomaly: AP undefined)"
            )
    elif key == "detection":
        det = _detect(s)
        ax.imshow(det, cmap="gray", vmin=0, vmax=1)
        extra = f"\n{_threshold_text(s)}"
    elif key == "tp_fp_fn":
        img, counts = detection_overlay(s.image, _detect(s), s.gt, dataset=s.gt_dataset)
        ax.imshow(img)
        extra = f"\nTP {counts['tp']} FP {counts['fp']} FN {counts['fn']} px"
    else:  # pragma: no cover - keys come from panel_keys
        raise ValueError(f"unknown panel {key!r}")
    if title is not None:
        ax.set_title(title + extra, fontsize=9)
    if cbar_im is not None and colorbar:
        cb = fig.colorbar(cbar_im, ax=ax, fraction=0.046, pad=0.02)
        cb.ax.tick_params(labelsize=7)
        thr = s.threshold
        if key == "anomaly_score" and thr is not None and vrange[0] <= thr <= vrange[1]:
            cb.ax.axhline(thr, color="cyan", linewidth=1.5)


def _detect(s: PanelData) -> np.ndarray:
    if s.score is None or s.threshold is None:
        return np.zeros(s.pred.shape, dtype=bool)
    return np.nan_to_num(s.score, nan=-np.inf) >= s.threshold


def _legend(fig: Figure, with_anomaly: bool, ncol: int, dataset: DatasetDef | None = None) -> None:
    d = drawing(dataset)
    handles = [
        Patch(facecolor=d.palette[i] / 255.0, edgecolor="0.3", label=name)
        for i, name in enumerate(d.class_names)
    ]
    if with_anomaly:
        color = np.array(ANOMALY_COLOR) / 255.0
        handles.append(Patch(facecolor=color, edgecolor="0.3", label="anomaly"))
    handles.append(
        Patch(facecolor=np.array(IGNORE_COLOR) / 255.0, edgecolor="0.3", label="no label (ignored)")
    )
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)


def _panel_inches(shape: tuple[int, ...], width: float) -> float:
    h, w = shape[:2]
    return width * h / max(w, 1)


def sample_panel(sample: PanelData, title: str | None = None, panel_width: float = 3.2) -> Figure:
    """Return one figure with every panel of ``sample`` on a 3-column layout, a colour bar on
    the confidence and score panels, and the class legend underneath."""
    _validate(sample)
    keys = panel_keys(sample.gt is not None, sample.score is not None)
    ncols = 3
    nrows = -(-len(keys) // ncols)
    panel_h = _panel_inches(sample.image.shape, panel_width)
    fig = Figure(
        figsize=(ncols * panel_width + 0.8, nrows * (panel_h + 0.55) + 1.3), layout="constrained"
    )
    vrange = score_range([sample.score]) if sample.score is not None else (0.0, 1.0)
    if sample.score is not None and sample.threshold is not None and np.isfinite(sample.threshold):
        vrange = (min(vrange[0], sample.threshold), max(vrange[1], sample.threshold))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i < len(keys):
            _draw(fig, ax, keys[i], sample, vrange, True, PANEL_TITLES[keys[i]])
        else:
            fig.delaxes(ax)
    head = title if title is not None else sample.name
    if sample.miou is not None:
        head = f"{head}  |  mIoU {100 * sample.miou:.1f}"
    if head:
        fig.suptitle(head, fontsize=11)
    with_anomaly = sample.gt is not None and sample.score is not None
    _legend(fig, with_anomaly=with_anomaly, ncol=5, dataset=sample.pred_dataset)
    return fig


def comparison_grid(
    samples: Sequence[PanelData], title: str | None = None, panel_width: float = 2.2
) -> Figure:
    """Return one figure with a row per sample and a column per panel, sharing the colour
    scales (confidence 0..1; anomaly score over all samples) with one colour bar per column."""
    if not samples:
        raise ValueError("comparison_grid needs at least one sample")
    for s in samples:
        _validate(s)
    has_gt = all(s.gt is not None for s in samples)
    has_score = all(s.score is not None for s in samples)
    keys = panel_keys(has_gt, has_score)
    panel_h = max(_panel_inches(s.image.shape, panel_width) for s in samples)
    nrows, ncols = len(samples), len(keys)
    fig = Figure(
        figsize=(ncols * panel_width + 0.6, nrows * (panel_h + 0.5) + 2.0), layout="constrained"
    )
    vrange = score_range([s.score for s in samples]) if has_score else (0.0, 1.0)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for r, s in enumerate(samples):
        for c, key in enumerate(keys):
            ax = axes[r, c]
            row_title = PANEL_TITLES[key] if r == 0 else ""
            _draw(fig, ax, key, s, vrange, False, row_title)
            if key in ("detection", "tp_fp_fn", "prediction", "error", "anomaly_score"):
                # per-sample numbers go in every row, the panel name only in the first
                ax.set_title(ax.get_title(), fontsize=8)
        label = s.name
        if s.miou is not None:
            label += f"\nmIoU {100 * s.miou:.1f}"
        axes[r, 0].set_ylabel(label, fontsize=8)
    for key, cmap, lo, hi in (
        ("confidence", CONFIDENCE_CMAP, 0.0, 1.0),
        ("anomaly_score", SCORE_CMAP, *vrange),
    ):
        if key in keys:
            col = keys.index(key)
            mappable = ScalarMappable(norm=Normalize(lo, hi), cmap=cmap)
            cax = axes[-1, col].inset_axes((0.05, -0.16, 0.9, 0.07))
            cb = fig.colorbar(mappable, cax=cax, orientation="horizontal")
            cb.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    _legend(
        fig,
        with_anomaly=has_gt and has_score,
        ncol=min(8, max(5, ncols)),
        dataset=samples[0].pred_dataset,
    )
    return fig


def _validate(s: PanelData) -> None:
    if s.image.ndim != 3 or s.image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {s.image.shape}")
    check_same_size(s.image, s.pred, "pred")
    check_same_size(s.image, s.confidence, "confidence")
    if s.gt is not None:
        check_same_size(s.image, s.gt, "gt")
    if s.score is not None:
        check_same_size(s.image, s.score, "score")
