"""Preview grid of a split: images beside their coloured label maps, with a class legend."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hazardseg.data.classes import CLASS_NAMES, IGNORE_COLOR, PALETTE, colorize
from hazardseg.data.streethazards import StreetHazards
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

_LEGEND = [*zip(CLASS_NAMES, (tuple(int(v) for v in c) for c in PALETTE), strict=True)]
_LEGEND.append(("ignore", IGNORE_COLOR))


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow without FreeType support
        return ImageFont.load_default()


def preview_layout(
    n: int, image_size: tuple[int, int], tile_width: int = 256, cols: int = 2
) -> tuple[int, int, int, int]:
    """Return (grid width, grid height, tile height, legend rows) of a preview of n samples."""
    w, h = image_size
    tile_h = max(1, round(tile_width * h / w))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    width = PAD + cols * (2 * tile_width + 2 * PAD)
    per_row = max(1, (width - PAD) // LEGEND_ENTRY_W)
    legend_rows = math.ceil(len(_LEGEND) / per_row)
    height = PAD + rows * (CAPTION_H + tile_h + PAD) + legend_rows * LEGEND_ROW_H + PAD
    return width, height, tile_h, legend_rows


def make_preview(
    root: str | Path,
    split: str,
    n: int = 8,
    seed: int = 0,
    tile_width: int = 256,
    cols: int = 2,
) -> Image.Image:
    """Build a grid of ``n`` random samples of ``split`` (image | colour label map) + legend."""
    if n < 1:
        raise DataError(f"n={n}; expected a positive number of samples")
    if tile_width < 16:
        raise DataError(f"tile_width={tile_width}; expected at least 16 pixels")
    ds = StreetHazards(root, split)
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(ds), size=min(n, len(ds)), replace=False).tolist())
    first, _ = ds.load(picks[0])
    width, height, tile_h, _ = preview_layout(len(picks), first.size, tile_width, cols)
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
        label = Image.fromarray(colorize(ids)).resize(
            (tile_width, tile_h), Image.Resampling.NEAREST
        )
        canvas.paste(label, (x + tile_width + PAD, y))
    rows = math.ceil(len(picks) / cols)
    y0 = PAD + rows * (CAPTION_H + tile_h + PAD)
    per_row = max(1, (width - PAD) // LEGEND_ENTRY_W)
    for i, (name, color) in enumerate(_LEGEND):
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
) -> Path:
    """Write :func:`make_preview` to ``out`` as PNG (atomically) and return the path."""
    canvas = make_preview(root, split, n=n, seed=seed, tile_width=tile_width, cols=cols)
    out = Path(out)
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG")
    return out
