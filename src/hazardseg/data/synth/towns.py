"""Per-town appearance of synthetic scenes: palettes, lighting, haze and texture strength.

Each official town folder gets its own look, so validation (t4) and test (t5, t6) are
shifted from training (t1-3, which mixes three sub-towns) the way CARLA towns differ.
The shifts are moderate: every class keeps its hue family, texture and place in the layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hazardseg.errors import ConfigError

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class TownStyle:
    """Appearance parameters of one town."""

    name: str
    sky_top: RGB
    sky_horizon: RGB
    tint: RGB
    """Per-channel multiplier applied to the whole image."""
    brightness: float
    contrast: float
    noise: float
    """Multiplier of every class's texture-noise amplitude."""
    haze: float
    """Blend weight towards the horizon colour at the horizon (0 = none)."""
    buildings: tuple[RGB, ...]
    road: RGB
    sidewalk: RGB
    grass: RGB
    foliage: RGB
    wall: RGB
    fence: RGB
    car_density: float
    """Multiplier of the expected number of cars."""


_BUILDINGS_A: tuple[RGB, ...] = (
    (150, 140, 128),
    (125, 115, 105),
    (170, 160, 146),
    (112, 104, 98),
    (150, 100, 80),
    (135, 135, 140),
)
_BUILDINGS_B: tuple[RGB, ...] = (
    (160, 150, 125),
    (140, 128, 110),
    (180, 170, 150),
    (120, 110, 100),
    (160, 110, 85),
    (145, 140, 135),
)

TOWN_STYLES: dict[str, TownStyle] = {
    "t1": TownStyle(
        "t1",
        (110, 160, 225),
        (190, 215, 240),
        (1.0, 1.0, 1.0),
        1.0,
        1.0,
        1.0,
        0.15,
        _BUILDINGS_A,
        (82, 80, 88),
        (168, 162, 156),
        (95, 135, 60),
        (60, 112, 45),
        (112, 112, 138),
        (128, 98, 70),
        1.0,
    ),
    "t2": TownStyle(
        "t2",
        (125, 165, 215),
        (200, 212, 228),
        (1.02, 1.0, 0.96),
        1.06,
        0.95,
        0.9,
        0.2,
        _BUILDINGS_B,
        (90, 88, 92),
        (176, 170, 160),
        (102, 140, 62),
        (66, 118, 48),
        (118, 116, 140),
        (136, 104, 72),
        0.8,
    ),
    "t3": TownStyle(
        "t3",
        (100, 150, 215),
        (180, 205, 235),
        (0.97, 1.0, 1.04),
        0.94,
        1.05,
        1.1,
        0.12,
        _BUILDINGS_A,
        (76, 76, 84),
        (160, 156, 152),
        (88, 128, 58),
        (56, 106, 44),
        (106, 108, 134),
        (120, 92, 66),
        1.2,
    ),
    # Validation town: slightly warmer light, paler buildings, more haze.
    "t4": TownStyle(
        "t4",
        (120, 160, 210),
        (210, 210, 215),
        (1.05, 1.0, 0.93),
        1.04,
        0.95,
        1.0,
        0.25,
        _BUILDINGS_B,
        (88, 84, 86),
        (172, 164, 152),
        (104, 136, 58),
        (70, 116, 46),
        (120, 114, 136),
        (138, 100, 70),
        1.0,
    ),
    # Test towns: a cooler overcast one and a darker warm-evening one.
    "t5": TownStyle(
        "t5",
        (150, 165, 185),
        (205, 210, 215),
        (0.95, 0.99, 1.06),
        0.97,
        0.9,
        1.15,
        0.3,
        _BUILDINGS_A,
        (84, 84, 92),
        (158, 158, 160),
        (90, 128, 66),
        (58, 104, 52),
        (104, 108, 136),
        (122, 96, 72),
        1.1,
    ),
    "t6": TownStyle(
        "t6",
        (95, 125, 190),
        (230, 190, 160),
        (1.08, 0.98, 0.9),
        0.9,
        1.08,
        1.05,
        0.18,
        _BUILDINGS_B,
        (80, 76, 82),
        (170, 160, 148),
        (108, 134, 56),
        (72, 110, 42),
        (116, 110, 132),
        (132, 96, 64),
        0.9,
    ),
}
"""Style of each town folder name; ``t1-3`` picks one of t1, t2, t3 per image."""

TRAIN_SUBTOWNS: tuple[str, ...] = ("t1", "t2", "t3")


def town_style(town: str, rng: np.random.Generator) -> TownStyle:
    """Return the style of ``town`` (``t1-3`` draws one of its three sub-towns from ``rng``)."""
    if town == "t1-3":
        return TOWN_STYLES[TRAIN_SUBTOWNS[int(rng.integers(len(TRAIN_SUBTOWNS)))]]
    if town not in TOWN_STYLES:
        known = ", ".join(["t1-3", *TOWN_STYLES])
        raise ConfigError(f"unknown town {town!r}; expected one of {known}")
    return TOWN_STYLES[town]
