"""Procedural street scenes in perspective with pixel-exact labels (:func:`render_scene`).

A scene is the street (:mod:`~hazardseg.data.synth.street`), then the objects standing on
it (:mod:`~hazardseg.data.synth.objects`, :mod:`~hazardseg.data.synth.anomalies`) drawn far
to near, then haze, texture noise and lighting. Every object class keeps one shape, colour
family and place in the layout, while the town style (:mod:`~hazardseg.data.synth.towns`)
shifts palette, lighting, haze and texture strength.
"""

from __future__ import annotations

import numpy as np

from hazardseg.data.synth.anomalies import anomaly_rng, draw_anomaly, place_anomalies
from hazardseg.data.synth.canvas import UNLABELED, Canvas
from hazardseg.data.synth.objects import place_objects
from hazardseg.data.synth.street import Geometry, draw_street, street_geometry
from hazardseg.data.synth.towns import TownStyle, town_style
from hazardseg.errors import ConfigError

MIN_SIZE = (32, 24)
"""Smallest (width, height) a scene can be rendered at."""
MAX_SIZE = (4096, 4096)

# Texture-noise amplitude (grey levels) of fine grain and of 4-pixel blotches, per class id.
_GRAIN = np.array([2, 5, 6, 5, 5, 3, 4, 6, 5, 10, 3, 6, 2, 4], dtype=np.float32)
_BLOTCH = np.array([3, 4, 4, 3, 2, 1, 2, 5, 4, 16, 2, 5, 1, 2], dtype=np.float32)


def _as_rng(seed_or_rng: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    if isinstance(seed_or_rng, bool) or not isinstance(seed_or_rng, int | np.integer):
        raise ConfigError(f"seed must be an int or numpy Generator, got {seed_or_rng!r}")
    if seed_or_rng < 0:
        raise ConfigError(f"seed must be >= 0, got {seed_or_rng}")
    return np.random.default_rng(int(seed_or_rng))


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Validate a (width, height) pair and return it as ints."""
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size must be a (width, height) pair of ints, got {size!r}") from None
    if not (MIN_SIZE[0] <= w <= MAX_SIZE[0] and MIN_SIZE[1] <= h <= MAX_SIZE[1]):
        raise ConfigError(
            f"size {w}x{h} is out of range; expected width {MIN_SIZE[0]}..{MAX_SIZE[0]} "
            f"and height {MIN_SIZE[1]}..{MAX_SIZE[1]}"
        )
    return w, h


def _upsampled_noise(rng: np.random.Generator, w: int, h: int, cell: int) -> np.ndarray:
    """Blocky noise with ``cell``-pixel blocks, standard deviation about 1."""
    small = rng.standard_normal((h // cell + 1, w // cell + 1), dtype=np.float32)
    return np.repeat(np.repeat(small, cell, axis=0), cell, axis=1)[:h, :w]


def _finish(cv: Canvas, g: Geometry, st: TownStyle, rng: np.random.Generator) -> np.ndarray:
    """Haze, texture noise, lighting and contrast; returns the uint8 RGB image."""
    col = cv.color
    lab = cv.label
    # Haze only reaches rows within 0.35 H of the horizon; sky pixels keep their colour.
    band = 0.35 * g.h
    r0, r1 = max(int(g.yh - band), 0), min(int(np.ceil(g.yh + band)), g.h)
    ys = np.arange(r0, r1, dtype=np.float32) + 0.5
    haze = (st.haze * np.clip(1.0 - np.abs(ys - g.yh) / band, 0.0, 1.0) ** 2).astype(np.float32)
    haze_w = np.where(lab[r0:r1] == UNLABELED, np.float32(0.0), haze[:, None])[..., None]
    col[r0:r1] += haze_w * (np.asarray(st.sky_horizon, np.float32) - col[r0:r1])

    noise = rng.standard_normal((g.h, g.w), dtype=np.float32) * _GRAIN[lab]
    noise += _upsampled_noise(rng, g.w, g.h, max(2, g.h // 40)) * _BLOTCH[lab]
    noise *= st.noise
    noise += _upsampled_noise(rng, g.w, g.h, max(4, g.h // 6)) * 4.0

    # Contrast around mid-grey, then tint and brightness: one affine map per channel.
    gain = np.asarray(st.tint, np.float32) * np.float32(st.brightness * rng.uniform(0.9, 1.1))
    scale = gain * np.float32(st.contrast)
    offset = gain * np.float32(128.0 * (1.0 - st.contrast))
    col += noise[..., None]
    col *= scale
    col += offset
    np.clip(col, 0, 255, out=col)
    return col.astype(np.uint8)


def render_scene(
    seed_or_rng: int | np.random.Generator,
    size: tuple[int, int],
    town: str,
    anomalies: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one street scene.

    Args:
        seed_or_rng: an int seed (>= 0) or a numpy Generator (advanced in place).
        size: (width, height) in pixels.
        town: town folder name (``t1-3``, ``t4``, ``t5``, ``t6``) that sets the appearance.
        anomalies: whether to place anomaly objects (about 80% of such scenes get 1-3);
            the rest of the scene is the same either way.

    Returns:
        ``(rgb, ids)``: uint8 (H, W, 3) image and uint8 (H, W) class ids 0..13
        (13 = anomaly, only when ``anomalies``).
    """
    w, h = check_size(size)
    rng = _as_rng(seed_or_rng)
    st = town_style(town, rng)
    g = street_geometry(w, h, rng)
    cv = Canvas(w, h)
    draw_street(cv, g, st, rng)
    objects = place_objects(g, st, rng)
    arng = rng
    if anomalies:
        arng = anomaly_rng(rng)
        objects += place_anomalies(g, arng)

    # Far to near, so nearer objects occlude farther ones; sorting is stable, so the order
    # (and every random draw made while drawing) depends only on the seed.
    objects.sort(key=lambda o: o[0])
    for s, draw, args in objects:
        draw(cv, g, arng if draw is draw_anomaly else rng, s, *args)
    return _finish(cv, g, st, rng), cv.label
