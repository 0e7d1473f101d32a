"""The drawing surface of the scene generator: a label + colour canvas with clipped,
vectorised fill primitives, the class ids painted into it and random colour draws.

Every primitive writes the same pixels into both layers, so the label map always matches
what was drawn. Colours are float32 RGB in 0..255 before the final tone mapping.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hazardseg.data.classes import CLASS_NAMES

Color = np.ndarray | tuple[float, float, float]

# Class ids painted into the label layer.
UNLABELED = CLASS_NAMES.index("unlabeled")
BUILDING = CLASS_NAMES.index("building")
FENCE = CLASS_NAMES.index("fence")
OTHER = CLASS_NAMES.index("other")
PEDESTRIAN = CLASS_NAMES.index("pedestrian")
POLE = CLASS_NAMES.index("pole")
ROAD_LINE = CLASS_NAMES.index("road line")
ROAD = CLASS_NAMES.index("road")
SIDEWALK = CLASS_NAMES.index("sidewalk")
VEGETATION = CLASS_NAMES.index("vegetation")
CAR = CLASS_NAMES.index("car")
WALL = CLASS_NAMES.index("wall")
SIGN = CLASS_NAMES.index("traffic sign")


def pick(rng: np.random.Generator, options: tuple) -> np.ndarray:
    """One of ``options`` (RGB triples), drawn uniformly, as a float32 array."""
    return np.asarray(options[int(rng.integers(len(options)))], dtype=np.float32)


def jitter(rng: np.random.Generator, color: Color, amount: float = 10.0) -> np.ndarray:
    """``color`` plus independent uniform offsets in [-amount, amount] per channel."""
    return np.asarray(color, dtype=np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32)


class Canvas:
    """An (H, W) uint8 class-id map and an (H, W, 3) float32 colour image drawn together."""

    def __init__(self, width: int, height: int) -> None:
        self.w = width
        self.h = height
        self.label = np.zeros((height, width), dtype=np.uint8)
        self.color = np.zeros((height, width, 3), dtype=np.float32)

    def paint(self, x0: int, y0: int, mask: np.ndarray, cls: int, color: Color) -> None:
        """Paint ``mask`` (a boolean box whose top-left corner is at x0, y0) in ``cls``.

        ``color`` is one RGB triple or an array of the mask's shape plus a channel axis.
        Parts outside the canvas are clipped.
        """
        bh, bw = mask.shape
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + bw, self.w), min(y0 + bh, self.h)
        if cx0 >= cx1 or cy0 >= cy1:
            return
        sub = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        lab = self.label[cy0:cy1, cx0:cx1]
        col = self.color[cy0:cy1, cx0:cx1]
        lab[sub] = cls
        c = np.asarray(color, dtype=np.float32)
        if c.ndim == 1:
            col[sub] = c
        else:
            col[sub] = c[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0][sub]

    def rect(self, x0: float, y0: float, x1: float, y1: float, cls: int, color: Color) -> None:
        """Fill the axis-aligned box [x0, x1) x [y0, y1) (rounded, clipped)."""
        ix0, iy0 = max(round(x0), 0), max(round(y0), 0)
        ix1, iy1 = min(round(x1), self.w), min(round(y1), self.h)
        if ix0 >= ix1 or iy0 >= iy1:
            return
        self.label[iy0:iy1, ix0:ix1] = cls
        self.color[iy0:iy1, ix0:ix1] = np.asarray(color, dtype=np.float32)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, cls: int, color: Color) -> None:
        """Fill the ellipse centred at (cx, cy) with radii rx, ry (at least half a pixel)."""
        rx, ry = max(rx, 0.5), max(ry, 0.5)
        x0, y0 = int(np.floor(cx - rx)), int(np.floor(cy - ry))
        x1, y1 = int(np.ceil(cx + rx)) + 1, int(np.ceil(cy + ry)) + 1
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy) / ry
        xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx) / rx
        mask = ys[:, None] ** 2 + xs[None, :] ** 2 <= 1.0
        self.paint(x0, y0, mask, cls, color)

    def shade(self, cx: float, cy: float, rx: float, ry: float, factor: float) -> None:
        """Multiply the colour (not the label) inside an ellipse by ``factor`` (a shadow)."""
        rx, ry = max(rx, 0.5), max(ry, 0.5)
        x0, y0 = max(int(np.floor(cx - rx)), 0), max(int(np.floor(cy - ry)), 0)
        x1, y1 = min(int(np.ceil(cx + rx)) + 1, self.w), min(int(np.ceil(cy + ry)) + 1, self.h)
        if x0 >= x1 or y0 >= y1:
            return
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy) / ry
        xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx) / rx
        mask = ys[:, None] ** 2 + xs[None, :] ** 2 <= 1.0
        self.color[y0:y1, x0:x1][mask] *= factor

    def polygon(self, pts: np.ndarray, cls: int, color: Color) -> None:
        """Fill a convex polygon given as an (N, 2) array of (x, y) vertices."""
        pts = np.asarray(pts, dtype=np.float32)
        x0, y0 = int(np.floor(pts[:, 0].min())), int(np.floor(pts[:, 1].min()))
        x1, y1 = int(np.ceil(pts[:, 0].max())) + 1, int(np.ceil(pts[:, 1].max())) + 1
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
        area2 = float(
            np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1])
        )
        sign = 1.0 if area2 >= 0 else -1.0
        mask = np.ones((y1 - y0, x1 - x0), dtype=bool)
        for (ax, ay), (bx, by) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
            mask &= sign * ((bx - ax) * (ys - ay) - (by - ay) * (xs - ax)) >= 0
        self.paint(x0, y0, mask, cls, color)


def polar_mask(
    rx: float, ry: float, radius: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Box mask of a star-shaped region whose normalised radius at angle t is radius(t).

    Returns ``(mask, xx, yy, bx, by)``: the boolean box, the coordinates of its pixel centres
    divided by the radii ``rx``, ``ry``, and the pixel offsets of the centre in the box.
    """
    bx, by = int(np.ceil(rx * 1.5)) + 1, int(np.ceil(ry * 1.5)) + 1
    xs = (np.arange(-bx, bx, dtype=np.float32) + 0.5) / max(rx, 0.5)
    ys = (np.arange(-by, by, dtype=np.float32) + 0.5) / max(ry, 0.5)
    xx, yy = np.meshgrid(xs, ys)
    rho = np.sqrt(xx**2 + yy**2)
    theta = np.arctan2(yy, xx)
    return rho <= radius(theta), xx, yy, bx, by
