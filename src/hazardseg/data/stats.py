"""Per-class pixel distribution of a split: counts, a text table and a log-scale bar chart, for
every registered dataset (its known classes, anomaly, normal and ignore ids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from hazardseg.data.labels import IGNORE_INDEX
from hazardseg.data.registry import DatasetDef, get_dataset, resolve_dataset
from hazardseg.io import atomic_path


def count_ids(dataset: DatasetDef | str = "streethazards") -> list[int]:
    """The mask ids counted, in display order: known classes, anomaly, normal, ignore."""
    d = get_dataset(dataset)
    ids = [*range(d.labels.num_classes), *d.labels.anomaly_ids]
    if d.labels.normal_id is not None:
        ids.append(d.labels.normal_id)
    return [*ids, IGNORE_INDEX]


def count_labels(dataset: DatasetDef | str = "streethazards") -> list[str]:
    """Names of the entries of :func:`class_pixel_counts`."""
    names = get_dataset(dataset).id_names()
    return [names[i] for i in count_ids(dataset)]


COUNT_LABELS: tuple[str, ...] = tuple(count_labels("streethazards"))
"""StreetHazards' entries of :func:`class_pixel_counts`: class ids 0..13, then ignore."""


def class_pixel_counts(
    root: str | Path,
    split: str,
    max_images: int | None = None,
    progress: bool = False,
    dataset: DatasetDef | str | None = None,
) -> np.ndarray:
    """Count pixels per mask id over ``split`` of ``dataset`` (default: detected at ``root``).

    Returns an int64 array aligned with :func:`count_ids` (StreetHazards: entries 0..13 are
    the pixels of class ids 0..13, entry 14 the ignore pixels). ``max_images`` limits to the
    first N samples.
    """
    d = resolve_dataset(dataset, root)
    d.require_labels(split, "counting the classes of")
    samples = d.samples(Path(root), split)
    if max_images is not None:
        samples = samples[:max_images]
    counts = np.zeros(256, dtype=np.int64)
    for sample in tqdm(samples, desc=f"counting {split}", unit="img", disable=not progress):
        assert sample.label_path is not None
        counts += np.bincount(d.read_label(sample.label_path).ravel(), minlength=256)
    return counts[count_ids(d)]


def format_counts(counts: np.ndarray, dataset: DatasetDef | str = "streethazards") -> list[str]:
    """Table lines: name, pixel count and percentage of all pixels, ignore listed last."""
    labels = count_labels(dataset)
    total = int(counts.sum())
    width = max(len(n) for n in labels)
    lines = [f"{'class':<{width}}  {'pixels':>14}  {'percent':>8}"]
    for i, (name, n) in enumerate(zip(labels, counts.tolist(), strict=True)):
        if i == len(labels) - 1:
            lines.append("-" * (width + 26))
        pct = 100.0 * n / total if total else 0.0
        lines.append(f"{name:<{width}}  {n:>14,d}  {pct:>7.3f}%")
    lines.append(f"{'total':<{width}}  {total:>14,d}")
    return lines


def plot_counts(
    counts: np.ndarray,
    out: str | Path,
    title: str = "",
    dataset: DatasetDef | str = "streethazards",
) -> Path:
    """Write a log-scale bar chart of the counts (the dataset's colours) to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = get_dataset(dataset)
    labels = count_labels(d)
    colors = [tuple(c / 255.0) for c in d.colorize(np.asarray(count_ids(d)))]
    heights = np.maximum(counts.astype(float), 0)
    fig, ax = plt.subplots(figsize=(max(9, 0.45 * len(labels)), 4.5), dpi=100)
    try:
        ax.bar(range(len(labels)), heights, color=colors, edgecolor="0.3", linewidth=0.8)
        ax.set_yscale("log")
        if heights.max() > 0:
            ax.set_ylim(bottom=0.8)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
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
