"""StreetHazards class ids, names and colours: defined here once and imported everywhere.

Label PNGs store values 1..14; subtract one to get the ids below. PNG value 0 belongs to no
class and becomes :data:`IGNORE_INDEX`.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "unlabeled",
    "building",
    "fence",
    "other",
    "pedestrian",
    "pole",
    "road line",
    "road",
    "sidewalk",
    "vegetation",
    "car",
    "wall",
    "traffic sign",
    "anomaly",
)
"""Names of ids 0..13; the last one (anomaly) appears only in the test split."""

NUM_CLASSES: int = 13
"""Number of known classes a model predicts (ids 0..12)."""

KNOWN_CLASS_NAMES: tuple[str, ...] = CLASS_NAMES[:NUM_CLASSES]
ANOMALY_ID: int = 13
"""Id of the anomaly class (PNG value 14)."""

UNLABELED_ID: int = 0
"""Id of the "unlabeled" class (PNG value 1); a known class, counted in mIoU by default."""

IGNORE_INDEX: int = 255
"""Mask value for pixels that belong to no class (PNG value 0) and for padding."""

PNG_MAX_VALUE: int = 14
"""Largest valid value in an annotation PNG."""

PALETTE: np.ndarray = np.array(
    [
        [0, 0, 0],  # unlabeled
        [70, 70, 70],  # building
        [190, 153, 153],  # fence
        [250, 170, 160],  # other
        [220, 20, 60],  # pedestrian
        [153, 153, 153],  # pole
        [157, 234, 50],  # road line
        [128, 64, 128],  # road
        [244, 35, 232],  # sidewalk
        [107, 142, 35],  # vegetation
        [0, 0, 142],  # car
        [102, 102, 156],  # wall
        [220, 220, 0],  # traffic sign
        [255, 140, 0],  # anomaly
    ],
    dtype=np.uint8,
)
"""RGB colour of each id 0..13."""

IGNORE_COLOR: tuple[int, int, int] = (255, 255, 255)
"""RGB colour used to draw :data:`IGNORE_INDEX` pixels."""

SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train", "training"),
    "validation": ("train", "validation"),
    "test": ("test", "test"),
}
"""Split name -> (archive folder under the root, sub-folder under images/ and annotations/)."""

TOWNS: dict[str, tuple[str, ...]] = {
    "train": ("t1-3",),
    "validation": ("t4",),
    "test": ("t5", "t6"),
}
"""Town folders of each split in the official layout."""

ODGT_NAMES: dict[str, str] = {
    "train": "train/train.odgt",
    "validation": "train/validation.odgt",
    "test": "test/test.odgt",
}
"""Path of each split's .odgt index, relative to the dataset root."""


def png_to_ids(values: np.ndarray) -> np.ndarray:
    """Map annotation PNG values (0..14) to class ids (0..13) with 0 -> IGNORE_INDEX."""
    values = np.asarray(values)
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[1 : PNG_MAX_VALUE + 1] = np.arange(PNG_MAX_VALUE, dtype=np.uint8)
    return lut[values.astype(np.uint8, copy=False)]


def ids_to_png(ids: np.ndarray) -> np.ndarray:
    """Map class ids (0..13, IGNORE_INDEX) back to annotation PNG values (1..14, 0)."""
    ids = np.asarray(ids)
    lut = np.zeros(256, dtype=np.uint8)
    lut[:PNG_MAX_VALUE] = np.arange(1, PNG_MAX_VALUE + 1, dtype=np.uint8)
    return lut[ids.astype(np.uint8, copy=False)]


def colorize(ids: np.ndarray) -> np.ndarray:
    """Return an (H, W, 3) uint8 RGB image of a class-id map (ignore drawn in IGNORE_COLOR)."""
    ids = np.asarray(ids)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:] = IGNORE_COLOR
    lut[: len(PALETTE)] = PALETTE
    return lut[ids.astype(np.uint8, copy=False)]
