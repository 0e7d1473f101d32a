"""Known-class objects standing on the ground: trees, poles with signs or lamps, pedestrians,
cars and sidewalk clutter, and where a scene places them.

Sizes scale with depth, so every object class keeps one shape, colour family and place in
the layout whatever the town.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hazardseg.data.synth.canvas import (
    CAR,
    OTHER,
    PEDESTRIAN,
    POLE,
    SIGN,
    VEGETATION,
    Canvas,
    jitter,
    pick,
    polar_mask,
)
from hazardseg.data.synth.street import Geometry
from hazardseg.data.synth.towns import TownStyle

Placement = tuple[float, Callable[..., None], tuple]
"""An object to draw: (depth scale, draw function, its arguments after the depth scale)."""

_CAR_COLORS = ((165, 28, 30), (32, 52, 140), (218, 218, 222), (32, 32, 36), (150, 152, 158))
_SHIRTS = ((42, 44, 92), (120, 34, 36), (200, 198, 188), (62, 62, 64), (34, 84, 64), (150, 120, 80))
_TROUSERS = ((40, 40, 52), (92, 80, 62), (30, 30, 34), (70, 76, 98))
_SKIN = ((205, 165, 135), (150, 105, 80), (110, 75, 55))


def _tree(cv: Canvas, g: Geometry, rng: np.random.Generator, s: float, lat: float, foliage):
    x, y = g.ground(s, lat)
    tw = max(2.0, s * g.h * 0.03)
    th = s * g.h * rng.uniform(0.25, 0.4)
    cv.rect(x - tw / 2, y - th, x + tw / 2, y, VEGETATION, jitter(rng, (92, 66, 46), 6))
    r = s * g.h * rng.uniform(0.12, 0.2)
    ph = rng.uniform(0, 6.3, 3)
    mask, *_, bx, by = polar_mask(
        r,
        r * rng.uniform(0.8, 1.1),
        lambda t: (
            0.85
            + 0.1 * np.sin(3 * t + ph[0])
            + 0.07 * np.sin(5 * t + ph[1])
            + 0.05 * np.sin(9 * t + ph[2])
        ),
    )
    cy = y - th - 0.5 * r
    cv.paint(round(x) - bx, round(cy) - by, mask, VEGETATION, jitter(rng, foliage, 8))


def _sign(cv: Canvas, rng: np.random.Generator, x: float, y: float, size: float) -> None:
    kind = int(rng.integers(3))
    if kind == 0:  # round: red ring, white disc
        cv.ellipse(x, y, size / 2, size / 2, SIGN, (200, 32, 36))
        cv.ellipse(x, y, size * 0.32, size * 0.32, SIGN, (236, 236, 236))
    elif kind == 1:  # blue rectangle with a white symbol
        cv.rect(
            x - size * 0.5, y - size * 0.42, x + size * 0.5, y + size * 0.42, SIGN, (34, 76, 176)
        )
        cv.rect(
            x - size * 0.15, y - size * 0.2, x + size * 0.15, y + size * 0.2, SIGN, (236, 236, 236)
        )
    else:  # white triangle with a red border
        tri = np.array(
            [
                [x, y - size * 0.55],
                [x + size * 0.55, y + size * 0.4],
                [x - size * 0.55, y + size * 0.4],
            ]
        )
        cv.polygon(tri, SIGN, (200, 32, 36))
        inner = (tri - [x, y]) * 0.55 + [x, y + size * 0.05]
        cv.polygon(inner, SIGN, (238, 238, 238))


def _pole(cv: Canvas, g: Geometry, rng: np.random.Generator, s: float, lat: float, side: int):
    x, y = g.ground(s, lat)
    pw = max(2.0, s * g.h * 0.022)
    metal = jitter(rng, (128, 128, 134), 8)
    if rng.random() < 0.55:  # sign post
        ph = s * g.h * rng.uniform(0.5, 0.65)
        cv.rect(x - pw / 2, y - ph, x + pw / 2, y, POLE, metal)
        size = max(5.0, s * g.h * 0.16)
        _sign(cv, rng, x, y - ph, size)
    else:  # street lamp, arm towards the road
        ph = s * g.h * rng.uniform(0.9, 1.2)
        cv.rect(x - pw / 2, y - ph, x + pw / 2, y, POLE, metal)
        arm = s * g.h * 0.18
        x_end = x - side * arm
        cv.rect(
            min(x, x_end), y - ph, max(x, x_end) + pw / 2, y - ph + max(2.0, pw * 0.7), POLE, metal
        )


def _pedestrian(cv: Canvas, g: Geometry, rng: np.random.Generator, s: float, lat: float):
    x, y = g.ground(s, lat)
    hp = s * g.h * rng.uniform(0.34, 0.42)
    wp = max(3.0, hp * 0.3)
    cv.shade(x, y, wp * 0.7, max(1.0, wp * 0.15), 0.7)
    skin, shirt, trousers = (
        pick(rng, _SKIN),
        jitter(rng, pick(rng, _SHIRTS), 8),
        pick(rng, _TROUSERS),
    )
    stride = wp * rng.uniform(0.0, 0.25)
    hip = y - hp * 0.47
    cv.rect(x - wp * 0.45 - stride, hip, x - wp * 0.05, y, PEDESTRIAN, trousers)
    cv.rect(x + wp * 0.05, hip, x + wp * 0.45 + stride, y, PEDESTRIAN, trousers)
    r = max(1.2, hp * 0.085)
    cv.rect(x - wp / 2, y - hp + 1.8 * r, x + wp / 2, hip + 1, PEDESTRIAN, shirt)
    arm = max(1.0, wp * 0.16)
    cv.rect(x - wp / 2 - arm, y - hp + 2.0 * r, x - wp / 2, hip, PEDESTRIAN, shirt * 0.9)
    cv.rect(x + wp / 2, y - hp + 2.0 * r, x + wp / 2 + arm, hip, PEDESTRIAN, shirt * 0.9)
    cv.ellipse(x, y - hp + r, r, r, PEDESTRIAN, skin)
    cv.rect(x - r, y - hp, x + r, y - hp + r * 0.7, PEDESTRIAN, (40, 30, 25))  # hair


def _car(cv: Canvas, g: Geometry, rng: np.random.Generator, s: float, lat: float):
    x, y = g.ground(s, lat)
    wc = max(6.0, s * g.rw * rng.uniform(0.7, 0.85))
    hc = wc * rng.uniform(0.68, 0.85)
    cv.shade(x, y, wc * 0.62, max(1.0, hc * 0.1), 0.55)
    body = jitter(rng, pick(rng, _CAR_COLORS), 8)
    x0, x1 = x - wc / 2, x + wc / 2
    dark = np.array([22, 22, 24], np.float32)
    cv.rect(x0 + wc * 0.05, y - hc * 0.18, x0 + wc * 0.25, y, CAR, dark)
    cv.rect(x1 - wc * 0.25, y - hc * 0.18, x1 - wc * 0.05, y, CAR, dark)
    cv.rect(x0, y - hc * 0.62, x1, y - hc * 0.12, CAR, body)
    cv.rect(x0, y - hc * 0.22, x1, y - hc * 0.12, CAR, dark * 2.0)  # bumper
    cab = np.array(
        [
            [x0 + wc * 0.08, y - hc * 0.6],
            [x1 - wc * 0.08, y - hc * 0.6],
            [x1 - wc * 0.2, y - hc],
            [x0 + wc * 0.2, y - hc],
        ]
    )
    cv.polygon(cab, CAR, body)
    win = (cab - [x, y - hc * 0.8]) * [0.82, 0.65] + [x, y - hc * 0.8]
    cv.polygon(win, CAR, jitter(rng, (52, 62, 78), 5))
    lh = max(1.0, hc * 0.08)
    red = np.array([190, 20, 20], np.float32)
    cv.rect(x0 + wc * 0.03, y - hc * 0.52, x0 + wc * 0.16, y - hc * 0.52 + lh, CAR, red)
    cv.rect(x1 - wc * 0.16, y - hc * 0.52, x1 - wc * 0.03, y - hc * 0.52 + lh, CAR, red)
    cv.rect(x - wc * 0.12, y - hc * 0.36, x + wc * 0.12, y - hc * 0.27, CAR, (225, 225, 215))


def _clutter(cv: Canvas, g: Geometry, rng: np.random.Generator, s: float, lat: float):
    """ "Other" objects on the sidewalk: bins, stacked crates and benches."""
    x, y = g.ground(s, lat)
    b = max(3.0, s * g.h * rng.uniform(0.07, 0.11))
    kind = int(rng.integers(3))
    cv.shade(x, y, b * 0.8, max(1.0, b * 0.15), 0.7)
    if kind == 0:  # bin with a lid
        c = jitter(rng, (44, 82, 60), 6)
        cv.rect(x - b / 2, y - 1.5 * b, x + b / 2, y, OTHER, c)
        cv.rect(x - b * 0.6, y - 1.7 * b, x + b * 0.6, y - 1.45 * b, OTHER, c * 0.7)
    elif kind == 1:  # crates
        c = jitter(rng, (178, 136, 84), 8)
        cv.rect(x - b, y - b, x + b * 0.1, y, OTHER, c)
        cv.rect(x - b * 0.1, y - b * 0.9, x + b, y, OTHER, c * 0.9)
        cv.rect(x - b * 0.7, y - 1.8 * b, x + b * 0.3, y - b, OTHER, c * 1.05)
        cv.rect(x - b * 0.6, y - 0.55 * b, x - b * 0.4, y - 0.45 * b, OTHER, c * 0.6)
    else:  # bench
        c = jitter(rng, (122, 84, 52), 6)
        cv.rect(x - 1.4 * b, y - 0.9 * b, x + 1.4 * b, y - 0.6 * b, OTHER, c)
        cv.rect(x - 1.4 * b, y - 1.5 * b, x + 1.4 * b, y - 1.2 * b, OTHER, c * 0.9)
        leg = max(1.0, b * 0.15)
        cv.rect(x - 1.3 * b, y - 0.6 * b, x - 1.3 * b + leg, y, OTHER, (50, 50, 50))
        cv.rect(x + 1.3 * b - leg, y - 0.6 * b, x + 1.3 * b, y, OTHER, (50, 50, 50))


def place_objects(g: Geometry, st: TownStyle, rng: np.random.Generator) -> list[Placement]:
    """Random trees, poles, pedestrians, cars and clutter for one scene, in drawing order."""
    objects: list[Placement] = []

    def sidewalk_lat(side: int, lo: float, hi: float) -> float:
        return side * (g.rw + g.sw * rng.uniform(lo, hi))

    def any_side() -> int:
        return 1 if rng.random() < 0.5 else -1

    s_small = min(0.8, 10.0 / (0.38 * g.h))  # depth where a pedestrian is about 10 px tall
    for _ in range(int(rng.integers(1, 5))):
        objects.append(
            (rng.uniform(0.12, 1.0), _tree, (sidewalk_lat(any_side(), 0.6, 0.9), st.foliage))
        )
    for _ in range(int(rng.integers(2, 6))):
        side = any_side()
        s = rng.uniform(max(0.15, s_small), 1.0)
        objects.append((s, _pole, (sidewalk_lat(side, 0.08, 0.2), side)))
    for _ in range(int(rng.integers(1, 5))):
        if rng.random() < 0.85:
            lat = sidewalk_lat(any_side(), 0.25, 0.85)
        else:
            lat = rng.uniform(-0.8, 0.8) * g.rw
        objects.append((rng.uniform(max(0.15, s_small), 0.85), _pedestrian, (lat,)))
    for _ in range(int(rng.integers(1, 7) * st.car_density + 0.5)):
        if rng.random() < 0.6:
            lat = any_side() * 0.5 * g.rw + rng.uniform(-0.08, 0.08) * g.rw
        else:
            lat = any_side() * g.rw * rng.uniform(0.55, 0.7)
        objects.append((rng.uniform(0.06, 0.95), _car, (lat,)))
    for _ in range(int(rng.integers(1, 5))):
        lat = sidewalk_lat(any_side(), 0.3, 0.85)
        objects.append((rng.uniform(max(0.15, s_small), 0.95), _clutter, (lat,)))
    return objects
