"""Preview grid of a split of any registered dataset: images beside their coloured label maps,
with a legend of the dataset's mask ids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hazardseg.data.registry import DatasetDef, resolve_dataset
from hazardseg.data.split import SplitDataset
from hazardseg.data.stats import count_ids, count_labels
from hazardseg.errors import DataError
from hazardseg.io import atomic_path

PAD = 4
"""Pixels between tiles and around the grid."""
CAPTION_H = 14
"""Height of the caption strip (sample path) above each row."""
LEGEND_ENTRY_W = 128
"""Width of one legend entry (swatch and class name)."""
LEGEND_ROW_H = 18
"""Height of one legend row."""


def legend(dataset: DatasetDef | str = "streethazards") -> list[tuple[str, tuple[int, int, int]]]:
    """(name, RGB colour) of every mask id the dataset's labels hold."""
    d = resolve_dataset(dataset)
    colors = d.colorize(np.asarray(count_ids(d)))
    return [
        (name, (int(c[0]), int(c[1]), int(c[2])))
        for name, c in zip(count_labels(d), colors, strict=True)
    ]


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow without FreeType support
        return ImageFont.load_default()


def preview_layout(
    n: int,
    image_size: tuple[int, int],
    tile_width: int = 256,
    cols: int = 2,
    legend_entries: int | None = None,
) -> tuple[int, int, int, int]:
    """Return (grid width, grid height, tile height, legend rows) of a preview of n samples."""
    w, h = image_size
    tile_h = max(1, round(tile_width * h / w))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    width = PAD + cols * (2 * tile_width + 2 * PAD)
    per_row = max(1, (width - PAD) // LEGEND_ENTRY_W)
    entries = len(legend()) if legend_entries is None else legend_entries
    legend_rows = math.ceil(entries / per_row)
    height = PAD + rows * (CAPTION_H + tile_h + PAD) + legend_rows * LEGEND_ROW_H + PAD
    return width, height, tile_h, legend_rows


def make_preview(
    root: str | Path,
    split: str,
    n: int = 8,
    seed: int = 0,
    tile_width: int = 256,
    cols: int = 2,
    dataset: DatasetDef | str | None = None,
) -> Image.Image:
    """Build a grid of ``n`` random samples of ``split`` of ``dataset`` (default: detected at
    ``root``): image | colour label map, and a legend."""
    if n < 1:
        raise DataError(f"n={n}; expected a positive number of samples")
    if tile_width < 16:
        raise DataError(f"tile_width={tile_width}; expected at least 16 pixels")
    ds = SplitDataset(root, split, dataset=dataset)
    entries = legend(ds.definition)
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(ds), size=min(n, len(ds)), replace=False).tolist())
    first, _ = ds.load(picks[0])
    width, height, tile_h, _ = preview_layout(
        len(picks), first.size, tile_width, cols, len(entries)
    )
    cols = max(1, min(cols, len(picks)))
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for k, idx in enumerate(picks):
        image, ids = ds.load(idx)
        r, c = divmod(k, cols)
        x = PAD + c * (2 * tile_width + 2 * PAD)
        y = PAD + r * (CAPTION_H + tile_h + PAD)
        draw.text((x, y), f"{split}/{ds.samples[idx].rel}", fill=(0, 0, 0), font=font)
        y += CAPTION_H
        canvas.paste(image.resize((tile_width, tile_h), Image.Resampling.BILINEAR), (x, y))
        label = Image.fromarray(ds.definition.colorize(ids)).resize(
            (tile_width, tile_h), Image.Resampling.NEAREST
        )
        canvas.paste(label, (x + tile_width + PAD, y))
    rows = math.ceil(len(picks) / cols)
    y0 = PAD + rows * (CAPTION_H + tile_h + PAD)
    per_row = max(1, (width - PAD) // LEGEND_ENTRY_W)
    for i, (name, color) in enumerate(entries):
        r, c = divmod(i, per_row)
        x, y = PAD + c * LEGEND_ENTRY_W, y0 + r * LEGEND_ROW_H
        draw.rectangle((x, y + 2, x + 12, y + 14), fill=color, outline=(80, 80, 80))
        draw.text((x + 17, y + 2), name, fill=(0, 0, 0), font=font)
    return canvas


def write_preview(
    root: str | Path,
    split: str,
    out: str | Path,
    n: int = 8,
    seed: int = 0,
    tile_width: int = 256,
    cols: int = 2,
    dataset: DatasetDef | str | None = None,
) -> Path:
    """Write :func:`make_preview` to ``out`` as PNG (atomically) and return the path."""
    canvas = make_preview(root, split, n, seed, tile_width, cols, dataset)
    out = Path(out)
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG")
    return out
