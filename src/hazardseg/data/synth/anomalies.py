"""Anomalies of test scenes: irregular objects unlike any known class, and where they stand.

They draw from their own generator (:func:`anomaly_rng`), so the known-class content of a
test scene is the same as without anomalies, apart from the pixels they cover.
"""

from __future__ import annotations

import numpy as np

from hazardseg.data.classes import ANOMALY_ID
from hazardseg.data.synth.canvas import Canvas, polar_mask
from hazardseg.data.synth.objects import Placement
from hazardseg.data.synth.street import Geometry

_ANOMALY_MIX = (
    (84, 84, 90),
    (95, 135, 60),
    (150, 140, 128),
    (168, 162, 156),
    (60, 112, 45),
    (128, 98, 70),
    (112, 112, 138),
    (125, 115, 105),
)
"""Road, grass, building, sidewalk, foliage, fence and wall colours that anomaly patchworks mix
(pulled towards mid-grey), so no single known class explains an anomaly pixel."""
_ANOMALY_MUTED = (
    (150, 110, 160),
    (90, 150, 140),
    (170, 140, 80),
    (125, 155, 85),
    (165, 105, 115),
    (95, 115, 165),
)
"""Mid-tone hues that lie between the class palettes, for gradient anomalies."""
_ANOMALY_STYLE_P = (0.7, 0.15, 0.15)
"""Probabilities of the patchwork, soft-blend and gradient anomaly appearances."""
_ANOMALY_CONFETTI = (65.0, 70.0, 80.0)
"""Amplitude (grey levels per channel) of the colour confetti laid over each appearance."""


def anomaly_rng(rng: np.random.Generator) -> np.random.Generator:
    """A generator for anomalies, derived from ``rng``'s state without advancing ``rng``."""
    try:
        return np.random.Generator(rng.bit_generator.jumped())
    except AttributeError:  # bit generators without jumps (SFC64)
        return rng.spawn(1)[0]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Bilinearly interpolated noise with features about ``cell`` pixels wide, std <= 1."""
    small = rng.standard_normal((int(h / cell) + 2, int(w / cell) + 2), dtype=np.float32)
    ys = np.arange(h, dtype=np.float32) / np.float32(cell)
    xs = np.arange(w, dtype=np.float32) / np.float32(cell)
    y0, x0 = ys.astype(np.intp), xs.astype(np.intp)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = small[y0][:, x0] * (1 - fx) + small[y0][:, x0 + 1] * fx
    bottom = small[y0 + 1][:, x0] * (1 - fx) + small[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _anomaly_palette(rng: np.random.Generator, k: int) -> np.ndarray:
    """``k`` distinct known-class colours with their brightness pulled towards mid-grey."""
    pal = np.asarray(_ANOMALY_MIX, np.float32)[rng.choice(len(_ANOMALY_MIX), k, replace=False)]
    return pal - 0.2 * (pal.mean(axis=1, keepdims=True) - 115.0)


def draw_anomaly(
    cv: Canvas, g: Geometry, rng: np.random.Generator, s: float, lat: float, d: float
) -> None:
    """An object unlike any known class, standing on the ground at (s, lat), about d px wide.

    The outline is an irregular organic blob. The surface is one of: a patchwork of 3-5 px
    cells and small rectangles mixing 5-8 known-class colours, a soft camouflage-like blend
    of such colours, or a smooth low-contrast gradient between hues that no class uses. None
    has the flat saturated areas or sharp stripes of signs, cars and road lines, so a model
    trained on the known classes finds no class that fits (low max logit) rather than a
    confident one.
    """
    x, y = g.ground(s, lat)
    aspect = rng.uniform(0.5, 1.8)
    rx, ry = d / 2 * np.sqrt(aspect), d / 2 / np.sqrt(aspect)
    ph = rng.uniform(0, 2 * np.pi, 3)
    lobes = int(rng.integers(2, 6))
    amp = rng.uniform(0.05, 0.22, 3)

    def radius(t: np.ndarray) -> np.ndarray:
        return (
            0.78
            + amp[0] * np.sin(lobes * t + ph[0])
            + amp[1] * np.sin((lobes + 2) * t + ph[1])
            + 0.5 * amp[2] * np.sin(t + ph[2])
        )

    mask, xx, yy, bx, by = polar_mask(rx, ry, radius)
    hh, ww = mask.shape
    style = int(rng.choice(3, p=_ANOMALY_STYLE_P))
    if style == 0:  # patchwork: a grid of 3-5 px cells plus scattered 2-8 px rectangles
        k = int(rng.integers(5, 9))
        pal = _anomaly_palette(rng, k)
        unit = g.h / 180.0
        cell = max(2, round(unit * rng.uniform(3.0, 5.0)))
        sel = rng.integers(0, k, (hh // cell + 1, ww // cell + 1))
        sel = np.repeat(np.repeat(sel, cell, axis=0), cell, axis=1)[:hh, :ww]
        n_rect = hh * ww // max(1, round(30 * unit * unit))
        sizes = np.maximum(1, np.round(rng.uniform(2.0, 9.0, (n_rect, 2)) * unit)).astype(np.intp)
        corners = rng.integers(0, (hh, ww), (n_rect, 2))
        values = rng.integers(0, k, n_rect)
        for (ry0, rx0), (rh, rw), v in zip(corners, sizes, values, strict=True):
            sel[ry0 : ry0 + rh, rx0 : rx0 + rw] = v
        col = pal[sel]
    elif style == 1:  # soft blend of known-class colours
        k = int(rng.integers(3, 5))
        pal = _anomaly_palette(rng, k)
        cell = max(2.0, g.h * rng.uniform(0.012, 0.028))
        f = np.stack([_smooth_noise(rng, hh, ww, cell) for _ in range(k)], axis=-1)
        wgt = np.exp(2.5 * f)
        col = (wgt / wgt.sum(axis=-1, keepdims=True)) @ pal
    else:  # smooth gradient between two in-between hues with low-contrast mottling
        i, j = rng.choice(len(_ANOMALY_MUTED), 2, replace=False)
        c1, c2 = (
            np.asarray(_ANOMALY_MUTED[i], np.float32),
            np.asarray(_ANOMALY_MUTED[j], np.float32),
        )
        t = np.clip((xx * np.cos(ph[2]) + yy * np.sin(ph[2])) * 0.5 + 0.5, 0.0, 1.0)[..., None]
        col = c1 * (1 - t) + c2 * t
        col += 10.0 * _smooth_noise(rng, hh, ww, max(2.0, min(hh, ww) / 4))[..., None]
    # Colour confetti: independent per-channel offsets on 3-5 px cells (at 180 rows).
    cell = max(2, round(g.h / 180.0 * rng.uniform(3.0, 5.0)))
    speck = rng.uniform(-1.0, 1.0, (hh // cell + 1, ww // cell + 1, 3)).astype(np.float32)
    amount = _ANOMALY_CONFETTI[style] * rng.uniform(0.8, 1.2)
    col = col + amount * np.repeat(np.repeat(speck, cell, axis=0), cell, axis=1)[:hh, :ww]
    cy = y - ry * rng.uniform(0.6, 1.0)
    cv.paint(round(x) - bx, round(cy) - by, mask, ANOMALY_ID, col.astype(np.float32))


def place_anomalies(g: Geometry, arng: np.random.Generator) -> list[Placement]:
    """Anomalies of one test scene (about 80% of scenes get 1-3), drawn from ``arng``."""
    objects: list[Placement] = []
    if arng.random() < 0.8:
        n = 1 + int(arng.random() < 0.3) + int(arng.random() < 0.1)
        d_max = float(np.sqrt(0.1 * g.w * g.h * 4 / np.pi))  # a disc of 10% of the image
        for _ in range(n):
            s = arng.uniform(0.15, 1.0)
            side = 1 if arng.random() < 0.5 else -1
            if arng.random() < 0.65:
                lat = arng.uniform(-0.85, 0.85) * g.rw
            else:
                lat = side * (g.rw + g.sw * arng.uniform(0.2, 0.8))
            d = float(
                np.clip(s * g.h * np.exp(arng.uniform(np.log(0.065), np.log(1.08))), 3.0, d_max)
            )
            objects.append((s, draw_anomaly, (lat, d)))
    return objects
