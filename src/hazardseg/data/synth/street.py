"""The street a scene is set in: perspective geometry, sky, skyline, ground and facades.

A scene is a straight street seen from a car: ground-plane coordinates (lateral offset,
depth) give road, road lines, sidewalks and grass; facades along both sidewalks are split
into lots (buildings with windows, tree rows, walls, fences, gaps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hazardseg.data.synth.canvas import (
    BUILDING,
    FENCE,
    ROAD,
    ROAD_LINE,
    SIDEWALK,
    UNLABELED,
    VEGETATION,
    WALL,
    Canvas,
    jitter,
    pick,
)
from hazardseg.data.synth.towns import TownStyle


@dataclass(frozen=True)
class Geometry:
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


def street_geometry(w: int, h: int, rng: np.random.Generator) -> Geometry:
    """A random street layout for a ``w`` x ``h`` image."""
    return Geometry(
        w=w,
        h=h,
        yh=h * rng.uniform(0.36, 0.46),
        vx=w * rng.uniform(0.42, 0.58),
        dx=w * rng.uniform(-0.1, 0.1),
        rw=w * rng.uniform(0.36, 0.5),
        sw=w * rng.uniform(0.16, 0.26),
    )


def draw_street(cv: Canvas, g: Geometry, st: TownStyle, rng: np.random.Generator) -> None:
    """Sky, skyline, ground and both rows of facades (the sunny side lighter)."""
    _draw_sky(cv, g, st)
    _draw_skyline(cv, g, st, rng)
    _draw_ground(cv, g, st, rng)
    sun = 1 if rng.random() < 0.5 else -1
    for side in (-1, 1):
        _draw_facades(cv, g, st, rng, side, 1.08 if side == sun else 0.82)


def _draw_sky(cv: Canvas, g: Geometry, st: TownStyle) -> None:
    t = np.clip((np.arange(g.h, dtype=np.float32) + 0.5) / max(g.yh, 1.0), 0.0, 1.0)[:, None]
    grad = np.asarray(st.sky_top, np.float32) * (1 - t) + np.asarray(st.sky_horizon, np.float32) * t
    cv.color[:] = grad[:, None, :]
    cv.label[:] = UNLABELED


def _draw_skyline(cv: Canvas, g: Geometry, st: TownStyle, rng: np.random.Generator) -> None:
    """Distant blocks of buildings and tree tops just above the horizon."""
    x = 0.0
    horizon = np.asarray(st.sky_horizon, np.float32)
    while x < g.w:
        bw = g.w * rng.uniform(0.03, 0.12)
        if rng.random() < 0.7:
            bh = g.h * rng.uniform(0.02, 0.11)
            color = 0.55 * pick(rng, st.buildings) + 0.45 * horizon
            cv.rect(x, g.yh - bh, x + bw, g.yh + 1, BUILDING, color)
        elif rng.random() < 0.6:
            r = g.h * rng.uniform(0.015, 0.05)
            color = 0.6 * np.asarray(st.foliage, np.float32) + 0.4 * horizon
            cv.ellipse(x + bw / 2, g.yh, bw / 2, r, VEGETATION, color)
        x += bw


def _draw_ground(cv: Canvas, g: Geometry, st: TownStyle, rng: np.random.Generator) -> None:
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
    col[:] = jitter(rng, st.grass, 6)
    lab[side] = SIDEWALK
    walk = jitter(rng, st.sidewalk, 6)
    tile = g.sw / rng.uniform(2.5, 4.0)
    tiles = (np.mod(z * rng.uniform(2.5, 4.0), 1.0) < 0.07) | (np.mod(alat / tile, 1.0) < 0.07)
    col[side] = walk
    col[side & tiles] = walk * 0.86
    curb = side & (alat < g.rw + 0.07 * g.sw)
    col[curb] = walk * 1.1
    lab[road] = ROAD
    col[road] = jitter(rng, st.road, 5)

    lw = g.h * rng.uniform(0.018, 0.024)
    white = jitter(rng, (228, 228, 218), 6)
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
        col[lines & yellow] = jitter(rng, (215, 185, 70), 6)

    cv.label[y0:] = lab
    cv.color[y0:] = col


_LOT_BUILDING, _LOT_TREES, _LOT_WALL, _LOT_FENCE, _LOT_GAP = range(5)
_LOT_CLASS = np.array([BUILDING, VEGETATION, WALL, FENCE, UNLABELED], dtype=np.uint8)
_LOT_P = np.array([0.56, 0.12, 0.12, 0.12, 0.08])


def _draw_facades(
    cv: Canvas, g: Geometry, st: TownStyle, rng: np.random.Generator, side: int, shade: float
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
            colors.append(jitter(rng, pick(rng, st.buildings), 8))
        elif kind == _LOT_TREES:
            heights.append(g.h * rng.uniform(0.35, 0.7))
            colors.append(jitter(rng, st.foliage, 8))
        elif kind == _LOT_WALL:
            heights.append(g.h * rng.uniform(0.16, 0.3))
            colors.append(jitter(rng, st.wall, 8))
        elif kind == _LOT_FENCE:
            heights.append(g.h * rng.uniform(0.14, 0.24))
            colors.append(jitter(rng, st.fence, 8))
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
    col[windows] = jitter(rng, (62, 74, 92), 6)
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
        col[fwall] = jitter(rng, st.wall, 6)
        col[fwall & course] *= 0.8
        lab[ffence] = FENCE
        col[ffence] = jitter(rng, st.fence, 6)
        col[ffence & slat] *= 0.7

    col *= shade
    cv.label[r0 + rows, c0 + cols] = lab
    cv.color[r0 + rows, c0 + cols] = col
