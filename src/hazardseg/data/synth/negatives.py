"""Synthetic negative objects for outlier exposure: RGBA cut-outs drawn from shape families and
surfaces that the test-split anomalies (:mod:`hazardseg.data.synth.anomalies`) never use.

The test anomalies are irregular organic blobs (smooth polar outlines with 2-5 lobes) whose
surface is a patchwork, a soft blend or a gradient of known-class colours with colour
confetti. The negatives here are instead:

* shapes with straight edges and corners: random convex polygons (3-8 vertices), stars
  (5-9 points), rings (annuli) and crosses;
* surfaces: checkerboards, stripes at any angle, uniform per-pixel colour noise, and flat
  saturated colours; none mixes known-class colours.

So a model fine-tuned on them does not see the test anomalies' appearance; whatever it learns
has to generalise.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("polygon", "star", "ring", "cross")
SURFACES: tuple[str, ...] = ("checker", "stripes", "noise", "flat")


def outline(rng: np.random.Generator, shape: str, w: int, h: int) -> Image.Image:
    """A binary "L" mask (0/255) of one shape filling about a ``w`` x ``h`` box."""
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, rx, ry = w / 2, h / 2, w / 2 - 0.5, h / 2 - 0.5
    if shape == "polygon":
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        pts = [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]
        draw.polygon(pts, fill=255)
    elif shape == "star":
        n = int(rng.integers(5, 10))
        inner = rng.uniform(0.35, 0.6)
        angles = np.arange(2 * n) * np.pi / n + rng.uniform(0, np.pi)
        radii = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
        pts = [
            (cx + r * rx * np.cos(a), cy + r * ry * np.sin(a))
            for a, r in zip(angles, radii, strict=True)
        ]
        draw.polygon(pts, fill=255)
    elif shape == "ring":
        t = rng.uniform(0.2, 0.45)
        draw.ellipse((0, 0, w - 1, h - 1), fill=255)
        draw.ellipse((w * t, h * t, w * (1 - t) - 1, h * (1 - t) - 1), fill=0)
    else:  # cross
        a, b = rng.uniform(0.18, 0.4), rng.uniform(0.18, 0.4)
        draw.rectangle((w * (0.5 - a / 2), 0, w * (0.5 + a / 2), h - 1), fill=255)
        draw.rectangle((0, h * (0.5 - b / 2), w - 1, h * (0.5 + b / 2)), fill=255)
    return mask


def _saturated(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour: full value, random hue."""
    hue = rng.uniform(0, 6)
    c = np.clip(np.abs((hue + np.array([0.0, 4.0, 2.0])) % 6 - 3) - 1, 0, 1)
    return 255 * (0.15 + 0.85 * c)


def _surface(rng: np.random.Generator, surface: str, w: int, h: int) -> np.ndarray:
    """An (h, w, 3) float32 texture."""
    if surface == "noise":
        return rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    c1, c2 = _saturated(rng), _saturated(rng)
    if surface == "flat":
        return np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = max(2.0, rng.uniform(0.08, 0.3) * max(w, h))
    if surface == "checker":
        sel = ((xx // (period / 2)) + (yy // (period / 2))) % 2
    else:  # stripes
        a = rng.uniform(0, np.pi)
        sel = ((xx * np.cos(a) + yy * np.sin(a)) // (period / 2)) % 2
    return np.where(sel[..., None] > 0, c1, c2).astype(np.float32)


def draw_negative(rng: np.random.Generator, size: int) -> np.ndarray:
    """One negative object as an (h, w, 4) uint8 RGBA array whose longer side is ``size``
    pixels (at least 4); alpha 255 inside the shape, 0 outside."""
    size = max(4, int(size))
    aspect = rng.uniform(0.5, 2.0)
    w, h = (
        (size, max(4, round(size / aspect)))
        if aspect >= 1
        else (max(4, round(size * aspect)), size)
    )
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    surface = SURFACES[int(rng.integers(len(SURFACES)))]
    alpha = np.asarray(outline(rng, shape, w, h))
    rgb = _surface(rng, surface, w, h)
    out = np.empty((h, w, 4), np.uint8)
    out[..., :3] = np.clip(rgb, 0, 255).astype(np.uint8)
    out[..., 3] = alpha
    return out
