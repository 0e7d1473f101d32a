"""Procedural street scenes in perspective with pixel-exact labels (:func:`render_scene`).

A scene is a straight street seen from a car: ground-plane coordinates (lateral offset,
depth) give road, road lines, sidewalks and grass; facades along both sidewalks are split
into lots (buildings with windows, tree rows, walls, fences, gaps); objects standing on the
ground (trees, poles with signs, pedestrians, cars, clutter, anomalies) are drawn far to
near. Sizes scale with depth, so every object class keeps one shape, colour family and place
in the layout, while the town style shifts palette, lighting, haze and texture strength.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hazardseg.data.classes import ANOMALY_ID, CLASS_NAMES
from hazardseg.data.synth_canvas import Canvas
from hazardseg.data.synth_towns import TownStyle, town_style
from hazardseg.errors import ConfigError

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

MIN_SIZE = (32, 24)
"""Smallest (width, height) a scene can be rendered at."""
MAX_SIZE = (4096, 4096)

# Texture-noise amplitude (grey levels) of fine grain and of 4-pixel blotches, per class id.
_GRAIN = np.array([2, 5, 6, 5, 5, 3, 4, 6, 5, 10, 3, 6, 2, 4], dtype=np.float32)
_BLOTCH = np.array([3, 4, 4, 3, 2, 1, 2, 5, 4, 16, 2, 5, 1, 2], dtype=np.float32)

_CAR_COLORS = ((165, 28, 30), (32, 52, 140), (218, 218, 222), (32, 32, 36), (150, 152, 158))
_SHIRTS = ((42, 44, 92), (120, 34, 36), (200, 198, 188), (62, 62, 64), (34, 84, 64), (150, 120, 80))
_TROUSERS = ((40, 40, 52), (92, 80, 62), (30, 30, 34), (70, 76, 98))
_SKIN = ((205, 165, 135), (150, 105, 80), (110, 75, 55))
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


@dataclass(frozen=True)
class _Geometry:
    """Street layout in pixels: horizon row, vanishing column, road and sidewalk widths.

    Ground point (lateral ``lat``, depth scale ``s`` in (0, 1]) projects to
    x = vx + s * (dx + lat), y = yh + s * (h - yh); ``rw`` and ``sw`` are the road half-width
    and the sidewalk width at s = 1 (the bottom row).
    """

    w: int
    h: int
    yh: float
    vx: float
    dx: float
    rw: float
    sw: float

    def ground(self, s: float, lat: float) -> tuple[float, float]:
        """Image (x, y) of the ground point at depth scale ``s`` and lateral offset ``lat``."""
        return self.vx + s * (self.dx + lat), self.yh + s * (self.h - self.yh)


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


def _pick(rng: np.random.Generator, options: tuple) -> np.ndarray:
    return np.asarray(options[int(rng.integers(len(options)))], dtype=np.float32)


def _jitter(rng: np.random.Generator, color, amount: float = 10.0) -> np.ndarray:
    return np.asarray(color, dtype=np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32)


# ----------------------------------------------------------------------------- background


def _draw_sky(cv: Canvas, g: _Geometry, st: TownStyle) -> None:
    t = np.clip((np.arange(g.h, dtype=np.float32) + 0.5) / max(g.yh, 1.0), 0.0, 1.0)[:, None]
    grad = np.asarray(st.sky_top, np.float32) * (1 - t) + np.asarray(st.sky_horizon, np.float32) * t
    cv.color[:] = grad[:, None, :]
    cv.label[:] = UNLABELED


def _draw_skyline(cv: Canvas, g: _Geometry, st: TownStyle, rng: np.random.Generator) -> None:
    """Distant blocks of buildings and tree tops just above the horizon."""
    x = 0.0
    horizon = np.asarray(st.sky_horizon, np.float32)
    while x < g.w:
        bw = g.w * rng.uniform(0.03, 0.12)
        if rng.random() < 0.7:
            bh = g.h * rng.uniform(0.02, 0.11)
            color = 0.55 * _pick(rng, st.buildings) + 0.45 * horizon
            cv.rect(x, g.yh - bh, x + bw, g.yh + 1, BUILDING, color)
        elif rng.random() < 0.6:
            r = g.h * rng.uniform(0.015, 0.05)
            color = 0.6 * np.asarray(st.foliage, np.float32) + 0.4 * horizon
            cv.ellipse(x + bw / 2, g.yh, bw / 2, r, VEGETATION, color)
        x += bw


def _draw_ground(cv: Canvas, g: _Geometry, st: TownStyle, rng: np.random.Generator) -> None:
    """Road, road lines, sidewalks and grass from ground-plane coordinates of every pixel."""
    y0 = max(int(np.ceil(g.yh - 0.5)), 0)
    if y0 >= g.h:
        return
    ys = np.arange(y0, g.h, dtype=np.float32) + 0.5
    s = ((ys - g.yh) / (g.h - g.yh))[:, None]
    z = 1.0 / s
    xs = np.arange(g.w, dtype=np.float32)[None, :] + 0.5
    lat = (xs - g.vx) / s - g.dx
    alat = np.abs(lat)
    road = alat < g.rw
    side = ~road & (alat < g.rw + g.sw)

    lab = np.full(lat.shape, VEGETATION, dtype=np.uint8)
    col = np.empty((*lat.shape, 3), dtype=np.float32)
    col[:] = _jitter(rng, st.grass, 6)
    lab[side] = SIDEWALK
    walk = _jitter(rng, st.sidewalk, 6)
    tile = g.sw / rng.uniform(2.5, 4.0)
    tiles = (np.mod(z * rng.uniform(2.5, 4.0), 1.0) < 0.07) | (np.mod(alat / tile, 1.0) < 0.07)
    col[side] = walk
    col[side & tiles] = walk * 0.86
    curb = side & (alat < g.rw + 0.07 * g.sw)
    col[curb] = walk * 1.1
    lab[road] = ROAD
    col[road] = _jitter(rng, st.road, 5)

    lw = g.h * rng.uniform(0.018, 0.024)
    white = _jitter(rng, (228, 228, 218), 6)
    lines = np.zeros(lat.shape, dtype=bool)
    centre = 0.0 if rng.random() < 0.8 else rng.uniform(-0.1, 0.1) * g.rw
    dash = np.mod(z * rng.uniform(0.9, 1.5) + rng.random(), 1.0) < 0.5
    solid_centre = rng.random() < 0.3
    lines |= (np.abs(lat - centre) < lw / 2) & (dash | solid_centre)
    if rng.random() < 0.75:
        lines |= np.abs(alat - g.rw * 0.92) < lw / 2
    if rng.random() < 0.35:
        zc = rng.uniform(1.4, 2.6)
        band = (z > zc) & (z < zc + rng.uniform(0.25, 0.45))
        lines |= band & (np.mod(lat / (g.rw / 4.5), 1.0) < 0.5)
    lines &= road
    lab[lines] = ROAD_LINE
    col[lines] = white
    if solid_centre and rng.random() < 0.5:
        yellow = np.abs(lat - centre) < lw / 2
        col[lines & yellow] = _jitter(rng, (215, 185, 70), 6)

    cv.label[y0:] = lab
    cv.color[y0:] = col


# ----------------------------------------------------------------------------- facades

_LOT_BUILDING, _LOT_TREES, _LOT_WALL, _LOT_FENCE, _LOT_GAP = range(5)
_LOT_CLASS = np.array([BUILDING, VEGETATION, WALL, FENCE, UNLABELED], dtype=np.uint8)
_LOT_P = np.array([0.56, 0.12, 0.12, 0.12, 0.08])


def _draw_facades(
    cv: Canvas, g: _Geometry, st: TownStyle, rng: np.random.Generator, side: int, shade: float
) -> None:
    """Facades standing on the outer sidewalk edge of one side (-1 left, +1 right)."""
    xs = np.arange(g.w, dtype=np.float32) + 0.5
    s_col = (xs - g.vx) / (g.dx + side * (g.rw + g.sw))
    valid = np.nonzero(s_col > 0.03)[0]
    if valid.size == 0:
        return
    c0, c1 = int(valid.min()), int(valid.max()) + 1
    s = s_col[c0:c1]
    z = 1.0 / s

    starts, kinds, heights, colors, fronts, front_h = [], [], [], [], [], []
    zc = float(z.min()) - rng.uniform(0.0, 0.8)
    zmax = float(z.max())
    while zc < zmax:
        kind = int(rng.choice(5, p=_LOT_P))
        starts.append(zc)
        kinds.append(kind)
        if kind == _LOT_BUILDING:
            heights.append(g.h * rng.uniform(0.7, 2.2))
            colors.append(_jitter(rng, _pick(rng, st.buildings), 8))
        elif kind == _LOT_TREES:
            heights.append(g.h * rng.uniform(0.35, 0.7))
            colors.append(_jitter(rng, st.foliage, 8))
        elif kind == _LOT_WALL:
            heights.append(g.h * rng.uniform(0.16, 0.3))
            colors.append(_jitter(rng, st.wall, 8))
        elif kind == _LOT_FENCE:
            heights.append(g.h * rng.uniform(0.14, 0.24))
            colors.append(_jitter(rng, st.fence, 8))
        else:
            heights.append(0.0)
            colors.append(np.zeros(3, np.float32))
        front = 0
        if kind == _LOT_BUILDING and rng.random() < 0.4:
            front = 1 if rng.random() < 0.55 else 2
        fronts.append(front)
        front_h.append(g.h * rng.uniform(0.12, 0.22))
        zc += rng.uniform(0.5, 1.8) if kind != _LOT_GAP else rng.uniform(0.2, 0.6)
    starts_a = np.asarray(starts, np.float32)
    li = np.clip(np.searchsorted(starts_a, z, side="right") - 1, 0, len(starts) - 1)
    kind_c = np.asarray(kinds)[li]
    height_c = np.asarray(heights, np.float32)[li]
    if np.any(kind_c == _LOT_TREES):
        wobble = 1.0 + 0.18 * np.sin(z * 9.0 + rng.uniform(0, 6)) + 0.08 * np.sin(z * 31.0)
        height_c = np.where(kind_c == _LOT_TREES, height_c * wobble, height_c)
    yg = g.yh + s * (g.h - g.yh)
    top = yg - s * height_c
    r0 = max(int(np.floor(top.min())), 0)
    r1 = min(int(np.ceil(yg.max())), g.h)
    if r0 >= r1:
        return
    ys = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
    mask = (ys >= top[None, :]) & (ys < yg[None, :]) & (kind_c != _LOT_GAP)[None, :]
    # From here on only the facade pixels are processed, as flat arrays.
    rows, cols = np.nonzero(mask)
    v = (yg[cols] - ys[rows, 0]) / s[cols]  # height above ground, in pixels at s = 1
    uc = z - starts_a[li]  # distance along the facade from the lot start, per column
    u = uc[cols]
    kind = kind_c[cols]
    height = height_c[cols]
    lab = _LOT_CLASS[kind]
    col = np.asarray(colors, np.float32)[li][cols]

    floor = g.h * rng.uniform(0.1, 0.15)
    per_z = rng.uniform(3.0, 5.0)
    wu = np.mod(u * per_z, 1.0)
    wv = np.mod(v / floor, 1.0)
    windows = (
        (kind == _LOT_BUILDING)
        & (wu > 0.3)
        & (wu < 0.75)
        & (wv > 0.3)
        & (wv < 0.78)
        & (v > floor)
        & (v < height - 0.3 * floor)
    )
    col[windows] = _jitter(rng, (62, 74, 92), 6)
    course = np.mod(v / (g.h * 0.035), 1.0) < 0.14
    slat = np.mod(u * 16.0, 1.0) < 0.25
    col[(kind == _LOT_WALL) & course] *= 0.8
    col[(kind == _LOT_FENCE) & (slat | (np.abs(v - height * 0.8) < g.h * 0.012))] *= 0.7

    front = np.asarray(fronts)[li][cols]
    low = (front > 0) & (v < np.asarray(front_h, np.float32)[li][cols])
    if low.any():
        fwall = low & (front == 1)
        ffence = low & (front == 2)
        lab[fwall] = WALL
        col[fwall] = _jitter(rng, st.wall, 6)
        col[fwall & course] *= 0.8
        lab[ffence] = FENCE
        col[ffence] = _jitter(rng, st.fence, 6)
        col[ffence & slat] *= 0.7

    col *= shade
    cv.label[r0 + rows, c0 + cols] = lab
    cv.color[r0 + rows, c0 + cols] = col


# ----------------------------------------------------------------------------- objects


def _polar_mask(rx: float, ry: float, radius: Callable[[np.ndarray], np.ndarray]):
    """Box mask of a star-shaped region whose normalised radius at angle t is radius(t)."""
    bx, by = int(np.ceil(rx * 1.5)) + 1, int(np.ceil(ry * 1.5)) + 1
    xs = (np.arange(-bx, bx, dtype=np.float32) + 0.5) / max(rx, 0.5)
    ys = (np.arange(-by, by, dtype=np.float32) + 0.5) / max(ry, 0.5)
    xx, yy = np.meshgrid(xs, ys)
    rho = np.sqrt(xx**2 + yy**2)
    theta = np.arctan2(yy, xx)
    return rho <= radius(theta), rho, theta, xx, yy, bx, by


def _tree(cv: Canvas, g: _Geometry, rng: np.random.Generator, s: float, lat: float, foliage):
    x, y = g.ground(s, lat)
    tw = max(2.0, s * g.h * 0.03)
    th = s * g.h * rng.uniform(0.25, 0.4)
    cv.rect(x - tw / 2, y - th, x + tw / 2, y, VEGETATION, _jitter(rng, (92, 66, 46), 6))
    r = s * g.h * rng.uniform(0.12, 0.2)
    ph = rng.uniform(0, 6.3, 3)
    mask, *_, bx, by = _polar_mask(
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
    cv.paint(round(x) - bx, round(cy) - by, mask, VEGETATION, _jitter(rng, foliage, 8))


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


def _pole(cv: Canvas, g: _Geometry, rng: np.random.Generator, s: float, lat: float, side: int):
    x, y = g.ground(s, lat)
    pw = max(2.0, s * g.h * 0.022)
    metal = _jitter(rng, (128, 128, 134), 8)
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


def _pedestrian(cv: Canvas, g: _Geometry, rng: np.random.Generator, s: float, lat: float):
    x, y = g.ground(s, lat)
    hp = s * g.h * rng.uniform(0.34, 0.42)
    wp = max(3.0, hp * 0.3)
    cv.shade(x, y, wp * 0.7, max(1.0, wp * 0.15), 0.7)
    skin, shirt, trousers = (
        _pick(rng, _SKIN),
        _jitter(rng, _pick(rng, _SHIRTS), 8),
        _pick(rng, _TROUSERS),
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


def _car(cv: Canvas, g: _Geometry, rng: np.random.Generator, s: float, lat: float):
    x, y = g.ground(s, lat)
    wc = max(6.0, s * g.rw * rng.uniform(0.7, 0.85))
    hc = wc * rng.uniform(0.68, 0.85)
    cv.shade(x, y, wc * 0.62, max(1.0, hc * 0.1), 0.55)
    body = _jitter(rng, _pick(rng, _CAR_COLORS), 8)
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
    cv.polygon(win, CAR, _jitter(rng, (52, 62, 78), 5))
    lh = max(1.0, hc * 0.08)
    red = np.array([190, 20, 20], np.float32)
    cv.rect(x0 + wc * 0.03, y - hc * 0.52, x0 + wc * 0.16, y - hc * 0.52 + lh, CAR, red)
    cv.rect(x1 - wc * 0.16, y - hc * 0.52, x1 - wc * 0.03, y - hc * 0.52 + lh, CAR, red)
    cv.rect(x - wc * 0.12, y - hc * 0.36, x + wc * 0.12, y - hc * 0.27, CAR, (225, 225, 215))


def _clutter(cv: Canvas, g: _Geometry, rng: np.random.Generator, s: float, lat: float):
    """ "Other" objects on the sidewalk: bins, stacked crates and benches."""
    x, y = g.ground(s, lat)
    b = max(3.0, s * g.h * rng.uniform(0.07, 0.11))
    kind = int(rng.integers(3))
    cv.shade(x, y, b * 0.8, max(1.0, b * 0.15), 0.7)
    if kind == 0:  # bin with a lid
        c = _jitter(rng, (44, 82, 60), 6)
        cv.rect(x - b / 2, y - 1.5 * b, x + b / 2, y, OTHER, c)
        cv.rect(x - b * 0.6, y - 1.7 * b, x + b * 0.6, y - 1.45 * b, OTHER, c * 0.7)
    elif kind == 1:  # crates
        c = _jitter(rng, (178, 136, 84), 8)
        cv.rect(x - b, y - b, x + b * 0.1, y, OTHER, c)
        cv.rect(x - b * 0.1, y - b * 0.9, x + b, y, OTHER, c * 0.9)
        cv.rect(x - b * 0.7, y - 1.8 * b, x + b * 0.3, y - b, OTHER, c * 1.05)
        cv.rect(x - b * 0.6, y - 0.55 * b, x - b * 0.4, y - 0.45 * b, OTHER, c * 0.6)
    else:  # bench
        c = _jitter(rng, (122, 84, 52), 6)
        cv.rect(x - 1.4 * b, y - 0.9 * b, x + 1.4 * b, y - 0.6 * b, OTHER, c)
        cv.rect(x - 1.4 * b, y - 1.5 * b, x + 1.4 * b, y - 1.2 * b, OTHER, c * 0.9)
        leg = max(1.0, b * 0.15)
        cv.rect(x - 1.3 * b, y - 0.6 * b, x - 1.3 * b + leg, y, OTHER, (50, 50, 50))
        cv.rect(x + 1.3 * b - leg, y - 0.6 * b, x + 1.3 * b, y, OTHER, (50, 50, 50))


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


def _anomaly(cv: Canvas, g: _Geometry, rng: np.random.Generator, s: float, lat: float, d: float):
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

    mask, _, _, xx, yy, bx, by = _polar_mask(rx, ry, radius)
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


# ----------------------------------------------------------------------------- finishing


def _upsampled_noise(rng: np.random.Generator, w: int, h: int, cell: int) -> np.ndarray:
    """Blocky noise with ``cell``-pixel blocks, standard deviation about 1."""
    small = rng.standard_normal((h // cell + 1, w // cell + 1), dtype=np.float32)
    return np.repeat(np.repeat(small, cell, axis=0), cell, axis=1)[:h, :w]


def _finish(cv: Canvas, g: _Geometry, st: TownStyle, rng: np.random.Generator) -> np.ndarray:
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


# ----------------------------------------------------------------------------- scene


def _anomaly_rng(rng: np.random.Generator) -> np.random.Generator:
    """A generator for anomalies, derived from ``rng``'s state without advancing ``rng``."""
    try:
        return np.random.Generator(rng.bit_generator.jumped())
    except AttributeError:  # bit generators without jumps (SFC64)
        return rng.spawn(1)[0]


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
    g = _Geometry(
        w=w,
        h=h,
        yh=h * rng.uniform(0.36, 0.46),
        vx=w * rng.uniform(0.42, 0.58),
        dx=w * rng.uniform(-0.1, 0.1),
        rw=w * rng.uniform(0.36, 0.5),
        sw=w * rng.uniform(0.16, 0.26),
    )
    cv = Canvas(w, h)
    _draw_sky(cv, g, st)
    _draw_skyline(cv, g, st, rng)
    _draw_ground(cv, g, st, rng)
    sun = 1 if rng.random() < 0.5 else -1
    for side in (-1, 1):
        _draw_facades(cv, g, st, rng, side, 1.08 if side == sun else 0.82)

    # Each entry: (depth scale, draw function, its arguments after the depth scale).
    objects: list[tuple[float, Callable[..., None], tuple]] = []

    def sidewalk_lat(side: int, lo: float, hi: float) -> float:
        return side * (g.rw + g.sw * rng.uniform(lo, hi))

    def any_side() -> int:
        return 1 if rng.random() < 0.5 else -1

    s_small = min(0.8, 10.0 / (0.38 * h))  # depth where a pedestrian is about 10 px tall
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
    arng = rng
    if anomalies:
        # Anomalies draw from their own generator, so the known-class content of a test
        # scene is the same as without anomalies (apart from the pixels they cover).
        arng = _anomaly_rng(rng)
        if arng.random() < 0.8:
            n = 1 + int(arng.random() < 0.3) + int(arng.random() < 0.1)
            d_max = float(np.sqrt(0.1 * w * h * 4 / np.pi))  # a disc of 10% of the image
            for _ in range(n):
                s = arng.uniform(0.15, 1.0)
                side = 1 if arng.random() < 0.5 else -1
                if arng.random() < 0.65:
                    lat = arng.uniform(-0.85, 0.85) * g.rw
                else:
                    lat = side * (g.rw + g.sw * arng.uniform(0.2, 0.8))
                d = float(
                    np.clip(s * h * np.exp(arng.uniform(np.log(0.065), np.log(1.08))), 3.0, d_max)
                )
                objects.append((s, _anomaly, (lat, d)))

    # Far to near, so nearer objects occlude farther ones; sorting is stable, so the order
    # (and every random draw made while drawing) depends only on the seed.
    objects.sort(key=lambda o: o[0])
    for s, draw, args in objects:
        draw(cv, g, arng if draw is _anomaly else rng, s, *args)
    return _finish(cv, g, st, rng), cv.label
