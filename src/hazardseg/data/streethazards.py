"""StreetHazards on disk: layout discovery (.odgt index or folder scan) and the Dataset.

The class ids, names and colours are defined in :mod:`hazardseg.data.classes` and re-exported
here for convenience.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from hazardseg.data.classes import (
    ANOMALY_ID,
    CLASS_NAMES,
    IGNORE_COLOR,
    IGNORE_INDEX,
    KNOWN_CLASS_NAMES,
    NUM_CLASSES,
    ODGT_NAMES,
    PALETTE,
    PNG_MAX_VALUE,
    SPLITS,
    TOWNS,
    UNLABELED_ID,
    colorize,
    ids_to_png,
    png_to_ids,
)
from hazardseg.data.imageio import load_image, open_image
from hazardseg.data.labels import LabelSpec
from hazardseg.data.odgt import index_path, read_odgt, read_odgt_entries
from hazardseg.data.registry import (
    DatasetDef,
    Sample,
    SplitInfo,
    register_dataset,
    split_table,
)
from hazardseg.data.split import SplitDataset, Transform
from hazardseg.errors import DataError

__all__ = [
    "ANOMALY_ID",
    "CLASS_NAMES",
    "IGNORE_COLOR",
    "IGNORE_INDEX",
    "KNOWN_CLASS_NAMES",
    "NUM_CLASSES",
    "ODGT_NAMES",
    "PALETTE",
    "PNG_MAX_VALUE",
    "SPLITS",
    "TOWNS",
    "UNLABELED_ID",
    "Sample",
    "StreetHazards",
    "StreetHazardsDataset",
    "check_split_name",
    "colorize",
    "discover_samples",
    "ids_to_png",
    "index_path",
    "index_sample",
    "load_image",
    "load_label",
    "load_label_values",
    "natural_key",
    "png_to_ids",
    "read_odgt",
    "read_odgt_entries",
    "split_dirs",
]

log = logging.getLogger(__name__)


_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key that orders embedded numbers by value (``t5/2.png`` before ``t5/10.png``)."""
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(text))


def check_split_name(split: str) -> str:
    """Return ``split`` if it is a known split name, else raise :class:`DataError`."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


def split_dirs(root: str | Path, split: str) -> tuple[Path, Path]:
    """Return the (images, annotations) folders of ``split`` below ``root``."""
    top, sub = SPLITS[check_split_name(split)]
    base = Path(root) / top
    return base / "images" / sub, base / "annotations" / sub


def index_sample(
    root: Path, split: str, entry: dict[str, Any], where: str
) -> tuple[Path, Path, str]:
    """The (image path, label path, rel) of one index entry; DataError when a path leaves the
    root or the image is not below the split's image folder."""
    top, sub = SPLITS[split]
    image_rel = index_path(root, entry["fpath_img"], where, "fpath_img")
    label_rel = index_path(root, entry["fpath_segm"], where, "fpath_segm")
    try:
        rel = image_rel.relative_to(PurePosixPath(top, "images", sub)).as_posix()
    except ValueError:
        raise DataError(
            f"{where}: fpath_img {entry['fpath_img']!r} is not below {top}/images/{sub}; "
            "expected paths relative to the dataset root"
        ) from None
    return root / image_rel, root / label_rel, rel


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise DataError(
            f"{root}: dataset root not found; expected a folder containing train/ and/or test/"
        )


def _require_regular(path: Path, what: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise DataError(f"{path}: {what} not found") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: {what} is not a regular file (a folder, FIFO or device); refused")


def _samples_from_odgt(root: Path, split: str, odgt: Path) -> list[Sample]:
    samples = []
    first: dict[str, str] = {}
    for where, entry in read_odgt_entries(odgt):
        image_path, label_path, rel = index_sample(root, split, entry, where)
        if rel in first:
            # the same image twice would be evaluated twice and share its output names
            log.warning("%s: %s is listed again (first at %s); ignored", where, rel, first[rel])
            continue
        first[rel] = where
        _require_regular(image_path, f"image listed at {where}")
        _require_regular(label_path, f"annotation of {image_path}")
        samples.append(Sample(image_path, label_path, rel))
    return samples


def _samples_from_scan(split: str, image_dir: Path, label_dir: Path) -> list[Sample]:
    if not image_dir.is_dir():
        raise DataError(
            f"{image_dir}: folder of split {split!r} not found and no .odgt index; "
            "expected the official StreetHazards layout"
        )
    samples = []
    for image_path in image_dir.rglob("*.png"):
        if not image_path.is_file():
            if not image_path.is_dir():
                _require_regular(image_path, "image")
            continue
        rel = image_path.relative_to(image_dir).as_posix()
        label_path = label_dir / rel
        _require_regular(label_path, f"annotation of {image_path}")
        samples.append(Sample(image_path, label_path, rel))
    return samples


def discover_samples(root: str | Path, split: str, use_odgt: bool = True) -> list[Sample]:
    """List the samples of ``split``, from its .odgt index when present, else by folder scan.

    Samples are sorted naturally by ``rel``. Raises :class:`DataError` when the root or split
    is missing, an index is malformed, or an image has no annotation.
    """
    root = Path(root)
    check_split_name(split)
    _check_root(root)
    image_dir, label_dir = split_dirs(root, split)
    odgt = root / ODGT_NAMES[split]
    if use_odgt and odgt.is_file():
        samples = _samples_from_odgt(root, split, odgt)
    else:
        samples = _samples_from_scan(split, image_dir, label_dir)
    samples.sort(key=lambda s: natural_key(s.rel))
    return samples


def load_label_values(path: str | Path) -> np.ndarray:
    """Load an annotation PNG as an (H, W) uint8 array of raw PNG values (0..14)."""
    path = Path(path)
    img = open_image(path)
    if img.mode not in ("L", "P", "I", "I;16", "1"):
        raise DataError(f"{path}: annotation has mode {img.mode}; expected a single-channel PNG")
    values = np.asarray(img)
    if values.size and int(values.max()) > PNG_MAX_VALUE:
        bad = np.unique(values[values > PNG_MAX_VALUE])[:5].tolist()
        raise DataError(
            f"{path}: label values {bad} outside 0..{PNG_MAX_VALUE}; expected StreetHazards PNG"
        )
    return values.astype(np.uint8, copy=False)


def load_label(path: str | Path) -> np.ndarray:
    """Load an annotation PNG as an (H, W) uint8 id map (0..13, 255 = ignore)."""
    return png_to_ids(load_label_values(path))


@register_dataset
class StreetHazardsDataset(DatasetDef):
    """StreetHazards (Hendrycks et al.): CARLA scenes, 13 known classes, anomalies in test."""

    name = "streethazards"
    title = "StreetHazards"
    source = "hendrycks/anomaly-seg (eval_ood.py, create_dataset.py)"
    labels = LabelSpec(
        num_classes=NUM_CLASSES,
        anomaly_id=ANOMALY_ID,
        unlabeled_id=UNLABELED_ID,
        per_image_ignore_is_normal=True,
    )
    class_names = KNOWN_CLASS_NAMES
    palette = PALETTE
    splits = split_table(train=SplitInfo(), validation=SplitInfo(), test=SplitInfo(anomalies=True))
    train_split, val_split, eval_split = "train", "validation", "test"
    markers = (("train/images/training",), ("train/images/validation",), ("test/images/test",))

    open_set_groups = TOWNS["test"]

    def samples(self, root: Path, split: str) -> list[Sample]:
        return discover_samples(root, split)

    def open_set_group(self, rel: str) -> str | None:
        town = rel.split("/")[0]
        return town if town in self.open_set_groups else None

    def per_image_pixels(self, exclude_unlabeled: bool) -> str | None:
        return None  # the official protocol's own words (hazardseg.metrics.ood_protocol)

    def decode(self, values: np.ndarray, path: Path) -> np.ndarray:
        if values.size and int(values.max()) > PNG_MAX_VALUE:
            bad = np.unique(values[values > PNG_MAX_VALUE])[:5].tolist()
            raise DataError(
                f"{path}: label values {bad} outside 0..{PNG_MAX_VALUE}; expected StreetHazards PNG"
            )
        return png_to_ids(values.astype(np.uint8, copy=False))


class StreetHazards(SplitDataset):
    """A StreetHazards split (``train``, ``validation`` or ``test``): :class:`SplitDataset` of
    the StreetHazards entry (mask ids 0..13 and 255)."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        max_images: int | None = None,
    ) -> None:
        check_split_name(split)
        super().__init__(root, split, transform, max_images, dataset="streethazards")
