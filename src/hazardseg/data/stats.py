"""Per-class pixel distribution of a split: counts, a text table and a log-scale bar chart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from hazardseg.data.classes import CLASS_NAMES, IGNORE_INDEX, PALETTE
from hazardseg.data.streethazards import discover_samples, load_label
from hazardseg.io import atomic_path

COUNT_LABELS: tuple[str, ...] = (*CLASS_NAMES, "ignore")
"""Names of the entries of :func:`class_pixel_counts`: class ids 0..13, then ignore."""


def class_pixel_counts(
    root: str | Path, split: str, max_images: int | None = None, progress: bool = False
) -> np.ndarray:
    """Count pixels per class over ``split``.

    Returns an int64 array of length 15: entries 0..13 are the pixels of class ids 0..13,
    entry 14 the ignore pixels (PNG value 0). ``max_images`` limits to the first N samples.
    """
    samples = discover_samples(root, split)
    if max_images is not None:
        samples = samples[:max_images]
    counts = np.zeros(256, dtype=np.int64)
    for sample in tqdm(samples, desc=f"counting {split}", unit="img", disable=not progress):
        counts += np.bincount(load_label(sample.label_path).ravel(), minlength=256)
    out = np.zeros(len(COUNT_LABELS), dtype=np.int64)
    out[: len(CLASS_NAMES)] = counts[: len(CLASS_NAMES)]
    out[-1] = counts[IGNORE_INDEX]
    return out


def format_counts(counts: np.ndarray) -> list[str]:
    """Table lines: name, pixel count and percentage of all pixels, ignore listed last."""
    total = int(counts.sum())
    width = max(len(n) for n in COUNT_LABELS)
    lines = [f"{'class':<{width}}  {'pixels':>14}  {'percent':>8}"]
    for i, (name, n) in enumerate(zip(COUNT_LABELS, counts.tolist(), strict=True)):
        if i == len(COUNT_LABELS) - 1:
            lines.append("-" * (width + 26))
        pct = 100.0 * n / total if total else 0.0
        lines.append(f"{name:<{width}}  {n:>14,d}  {pct:>7.3f}%")
    lines.append(f"{'total':<{width}}  {total:>14,d}")
    return lines


def plot_counts(counts: np.ndarray, out: str | Path, title: str = "") -> Path:
    """Write a log-scale bar chart of the class counts (PALETTE colours) to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(CLASS_NAMES)
    colors = [tuple(c / 255.0) for c in PALETTE] + [(1.0, 1.0, 1.0)]
    heights = np.maximum(counts.astype(float), 0)
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    try:
        ax.bar(range(n + 1), heights, color=colors, edgecolor="0.3", linewidth=0.8)
        ax.set_yscale("log")
        if heights.max() > 0:
            ax.set_ylim(bottom=0.8)
        ax.set_xticks(range(n + 1), COUNT_LABELS, rotation=45, ha="right")
        ax.set_ylabel("pixels (log scale)")
        total = heights.sum()
        for i, h in enumerate(heights):
            if h > 0 and total > 0:
                ax.text(i, h, f"{100 * h / total:.2g}%", ha="center", va="bottom", fontsize=7)
        ax.set_title(title or "class pixel distribution")
        fig.tight_layout()
        out = Path(out)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return out
