"""Name -> dataset registry: :func:`register_dataset` (a decorator on a :class:`DatasetDef`
subclass), :func:`get_dataset`, :func:`list_datasets` and :func:`detect_dataset`.

A dataset says what a benchmark's own code says of it, as data where it can: its known classes
and palette (none for anomaly-only sets), how a label file becomes mask ids
(:meth:`DatasetDef.decode`, :class:`hazardseg.data.labels.LabelSpec`), its splits, which of them
have public labels, how their files are found (:meth:`DatasetDef.samples`) and the protocols
and definitions that apply by default. Dataset modules register themselves; the
``hazardseg.data`` package imports every one, and this module imports none.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import NamedTuple, TypeVar

import numpy as np

from hazardseg.data.labels import IGNORE_INDEX, LabelSpec
from hazardseg.errors import DataError

IGNORE_COLOR: tuple[int, int, int] = (255, 255, 255)
"""RGB colour of ignored pixels in every dataset's drawings."""
ANOMALY_COLOR: tuple[int, int, int] = (255, 140, 0)
"""RGB colour of anomaly pixels where a dataset has no colour of its own."""
NORMAL_COLOR: tuple[int, int, int] = (90, 90, 90)
"""RGB colour of normal pixels without a class (anomaly-only sets)."""


class Sample(NamedTuple):
    """One image and its label file (None where the split's labels are not public); ``rel``
    names the sample in outputs (score maps ``<rel without suffix>.npy``)."""

    image_path: Path
    label_path: Path | None
    rel: str


@dataclass(frozen=True)
class SplitInfo:
    """One split of a dataset."""

    public_labels: bool = True
    """False where the benchmark keeps the labels (scoring refused; maps can be submitted)."""
    anomalies: bool = False
    """Whether the split's labels mark anomalies (test and validation sets of the benchmarks)."""
    submit: str | None = None
    """Where results on a split without public labels are scored."""


def split_table(**splits: SplitInfo) -> Mapping[str, SplitInfo]:
    """A dataset's splits, in order (read-only)."""
    return MappingProxyType(dict(splits))


class DatasetDef:
    """Base of every registered dataset; subclasses set the class attributes and implement
    :meth:`samples` and :meth:`decode` (and may refine the rest)."""

    name: str = ""
    title: str = ""
    source: str = ""
    """Where its layout and encoding were read (the benchmark's own code)."""
    labels: LabelSpec = LabelSpec(num_classes=0, anomaly_id=None)
    class_names: tuple[str, ...] = ()
    """Names of the known classes ``0..num_classes-1`` (empty for anomaly-only sets)."""
    palette: np.ndarray = np.zeros((0, 3), np.uint8)
    """RGB colour of each known class."""
    splits: Mapping[str, SplitInfo] = MappingProxyType({})
    train_split: str | None = None
    val_split: str | None = None
    eval_split: str = "test"
    protocols: tuple[str, ...] = ("pooled", "per_image")
    """Anomaly protocols computed by default (``pooled``, ``per_image``, ``smiyc``; empty for
    a dataset without anomalies). Component metrics are chosen by ``eval.components``."""
    component_track: str | None = None
    """SegmentMeIfYouCan component settings (``anomaly`` or ``obstacle``) when that protocol
    applies."""
    check_splits: tuple[str, ...] | None = None
    """Splits ``data check`` checks by default (None: every split)."""
    markers: tuple[tuple[str, ...], ...] = ()
    """Alternative groups of paths (relative to a root); the layout is present when every path
    of one group exists."""

    # ---------------------------------------------------------------- files
    def samples(self, root: Path, split: str) -> list[Sample]:
        """The split's samples, sorted as the benchmark sorts them."""
        raise NotImplementedError

    def decode(self, values: np.ndarray, path: Path) -> np.ndarray:
        """A label file's raw values (H, W) as uint8 mask ids (:attr:`labels`); DataError
        naming ``path``, the value and the allowed set for a value outside the encoding."""
        raise NotImplementedError

    def decode_table(self, values: np.ndarray, path: Path, table: np.ndarray) -> np.ndarray:
        """``table[values]`` as uint8 mask ids, where ``table`` (256 entries, int16) holds -1
        for the values outside the encoding; DataError naming ``path``, the value and the
        allowed set when ``values`` hold one."""
        v = np.asarray(values)
        allowed = table >= 0
        if v.dtype != np.uint8:
            if v.size and (int(v.min()) < 0 or int(v.max()) > 255):
                bad = np.unique(v[(v < 0) | (v > 255)])[:1]
                self.check_values(bad, path, np.flatnonzero(allowed).tolist())
            v = v.astype(np.uint8)
        present = np.bincount(v.ravel(), minlength=256) > 0
        if (present & ~allowed).any():
            self.check_values(np.flatnonzero(present), path, np.flatnonzero(allowed).tolist())
        return table.astype(np.uint8)[v]

    def read_label(self, path: Path) -> np.ndarray:
        """Load and decode a label file."""
        from hazardseg.data.imageio import open_image

        img = open_image(path)
        if img.mode not in ("L", "P", "I", "I;16", "1") and not self.label_has_channels:
            raise DataError(f"{path}: label has mode {img.mode}; expected a single-channel PNG")
        values = np.asarray(img)
        if values.ndim == 3:
            values = values[..., 0]
        return self.decode(values, path)

    label_has_channels: bool = False
    """Whether label files may be RGB images whose first channel holds the value."""

    open_set_groups: tuple[str, ...] = ()
    """Groups of the evaluation split for open-mIoU (each calibrated on the others); empty:
    the dataset has none."""

    def open_set_group(self, rel: str) -> str | None:
        """The open-mIoU group of an image (None: none)."""
        return None

    def frame_id(self, sample: Sample) -> str:
        """The benchmark's name of a frame (the image file's stem by default)."""
        return PurePosixPath(sample.rel).stem

    def submission_name(self, split: str) -> str | None:
        """The dataset name SegmentMeIfYouCan's evaluation files a frame's score map under
        (``anomaly_p/<method>/<name>/<frame>.hdf5``); None where it does not evaluate this
        dataset."""
        return None

    # ---------------------------------------------------------------- checks
    def split(self, split: str) -> SplitInfo:
        """The split's description; DataError naming the dataset's splits otherwise."""
        if split not in self.splits:
            raise DataError(
                f"dataset {self.name}: unknown split {split!r}; expected one of "
                f"{', '.join(self.splits)}"
            )
        return self.splits[split]

    def require_labels(self, split: str, what: str = "scoring") -> None:
        """DataError when the split's labels are not public (saying where to submit)."""
        info = self.split(split)
        if not info.public_labels:
            fmt = " --maps-format smiyc" if self.submission_name(split) else ""
            where = f" and submit them to {info.submit}" if info.submit else ""
            raise DataError(
                f"dataset {self.name}, split {split!r}: its labels are not public, so {what} "
                f"it here would be meaningless; write its score maps with `hazardseg evaluate "
                f"--save-maps{fmt}`{where}"
            )

    def missing(self, root: Path) -> list[str]:
        """What ``root`` lacks of this layout: the absent paths of the most complete marker
        group (empty when the layout matches)."""
        if not self.markers:
            return ["(no layout markers)"]
        gaps = [[m for m in group if not (root / m).exists()] for group in self.markers]
        return min(gaps, key=len)

    def detect(self, root: Path) -> bool:
        """Whether ``root`` holds this dataset's layout."""
        return bool(self.markers) and not self.missing(root)

    def check_values(self, values: np.ndarray, path: Path, allowed: Sequence[int]) -> None:
        """DataError naming ``path`` when ``values`` hold a value outside ``allowed``."""
        present = np.unique(values)
        bad = present[~np.isin(present, np.asarray(allowed))]
        if bad.size:
            shown = ", ".join(str(int(v)) for v in bad[:5])
            raise DataError(
                f"{path}: label value(s) {shown} outside the {self.title or self.name} encoding "
                f"(allowed: {_ranges(allowed)})"
            )

    # ---------------------------------------------------------------- drawing
    def colorize(self, ids: np.ndarray) -> np.ndarray:
        """An (H, W, 3) uint8 drawing of a mask (ignore white, anomaly orange)."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[:] = IGNORE_COLOR
        lut[: len(self.palette)] = self.palette
        for a in self.labels.anomaly_ids:
            lut[a] = ANOMALY_COLOR if a >= len(self.palette) else self.palette[a]
        if self.labels.normal_id is not None:
            lut[self.labels.normal_id] = NORMAL_COLOR
        lut[IGNORE_INDEX] = IGNORE_COLOR
        return lut[np.asarray(ids).astype(np.uint8, copy=False)]

    def per_image_pixels(self, exclude_unlabeled: bool) -> str | None:
        """The per-image protocol's pixel set in words (None: StreetHazards' text)."""
        labels = self.labels
        anomaly = "no anomaly id" if labels.anomaly_id is None else f"anomaly ({labels.anomaly_id})"
        if labels.per_image_ignore_is_normal and not exclude_unlabeled:
            return f"pixels: every pixel; {anomaly} positive, all others (ignore included) negative"
        negative = []
        if labels.num_classes:
            negative.append(f"known classes 0..{labels.num_classes - 1}")
        if labels.normal_id is not None:
            negative.append(f"normal ({labels.normal_id})")
        unlabeled = ""
        if exclude_unlabeled and labels.unlabeled_id is not None:
            unlabeled = f", unlabeled ({labels.unlabeled_id})"
        return (
            f"pixels: {anomaly} positive, {' and '.join(negative) or 'none'} negative; ignore "
            f"({IGNORE_INDEX}){unlabeled} excluded"
        )

    def id_names(self) -> dict[int, str]:
        """Name of every mask id (known classes, anomaly, normal, ignore)."""
        names = dict(enumerate(self.class_names))
        for a in self.labels.anomaly_ids:
            names[a] = "anomaly"
        if self.labels.normal_id is not None:
            names[self.labels.normal_id] = "normal"
        names[IGNORE_INDEX] = "ignore"
        return names

    def __repr__(self) -> str:
        return f"<dataset {self.name}>"


ANOMALY_ONLY = LabelSpec(num_classes=0, anomaly_id=1, normal_id=0)
"""Mask ids of the anomaly-only sets: 0 normal (no class), 1 anomaly, 255 ignored."""


def lookup_table(mapping: Mapping[int, int]) -> np.ndarray:
    """A 256-entry decode table: ``mapping`` (file value -> mask id), -1 elsewhere."""
    table = np.full(256, -1, dtype=np.int16)
    for value, mask_id in mapping.items():
        table[int(value)] = int(mask_id)
    return table


def sorted_files(folder: Path, pattern: str) -> list[Path]:
    """Regular files of ``folder`` matching the glob ``pattern``, sorted by path."""
    return sorted(p for p in folder.glob(pattern) if p.is_file())


def _ranges(values: Sequence[int]) -> str:
    vals = sorted(set(int(v) for v in values))
    parts, start = [], None
    for i, v in enumerate(vals):
        if start is None:
            start = v
        if i + 1 == len(vals) or vals[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)


DATASETS: dict[str, DatasetDef] = {}
"""Registered datasets (name -> definition), in registration order."""

D = TypeVar("D", bound=type[DatasetDef])


def register_dataset(cls: D) -> D:
    """Decorator registering a :class:`DatasetDef` subclass under its ``name``."""
    if not cls.name or cls.name in DATASETS:
        raise ValueError(f"dataset {cls.name!r} has no name or is registered twice")
    DATASETS[cls.name] = cls()
    return cls


def list_datasets() -> list[str]:
    """Names of the registered datasets."""
    return list(DATASETS)


def get_dataset(name: str | DatasetDef) -> DatasetDef:
    """The dataset ``name`` (a definition is returned as it is); DataError suggesting the
    closest name otherwise."""
    if isinstance(name, DatasetDef):
        return name
    if name not in DATASETS:
        close = difflib.get_close_matches(str(name), list(DATASETS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(f"unknown dataset {name!r}{hint} (registered: {', '.join(DATASETS)})")
    return DATASETS[name]


def detect_dataset(root: str | os.PathLike[str]) -> DatasetDef:
    """The one registered dataset whose layout ``root`` holds; DataError naming the closest
    layout and what it lacks when none (or several) match."""
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"{base}: dataset root not found")
    found = [d for d in DATASETS.values() if d.detect(base)]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(d.name for d in found)
        raise DataError(f"{base}: the layout matches several datasets ({names}); pass --dataset")

    def gap(d: DatasetDef) -> tuple[float, int]:
        group = min(d.markers, key=lambda g: sum(not (base / m).exists() for m in g))
        lacking = sum(not (base / m).exists() for m in group)
        return lacking / len(group), lacking

    ranked = sorted((d for d in DATASETS.values() if d.markers), key=gap)
    best = ranked[0]
    raise DataError(
        f"{base}: no registered dataset layout found; the closest is {best.name} "
        f"({best.title}), which lacks {', '.join(best.missing(base))}; pass --dataset NAME "
        f"(one of {', '.join(DATASETS)})"
    )


class _ModelClasses(DatasetDef):
    """The classes of a model whose training dataset is not registered (drawing only)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.name = "model"
        self.title = "the model's classes"
        self.class_names = tuple(names)
        self.labels = LabelSpec(num_classes=len(names), anomaly_id=None)
        rng = np.random.default_rng(0)
        self.palette = rng.integers(40, 230, (len(names), 3)).astype(np.uint8)


def model_classes(
    dataset: str | None, class_names: Sequence[str] | None, num_classes: int
) -> DatasetDef:
    """The dataset whose palette draws a model's predictions: its training dataset when that
    is registered with the same classes, else StreetHazards' when the classes are its,
    else a plain set named after ``class_names`` (or ``class_<i>``)."""
    names = list(class_names or [])
    for candidate in (dataset, "streethazards"):
        entry = DATASETS.get(candidate) if candidate else None
        if (
            entry is not None
            and entry.labels.num_classes == num_classes
            and (not names or names == list(entry.class_names))
        ):
            return entry
    return _ModelClasses(names or [f"class_{i}" for i in range(num_classes)])


def resolve_dataset(
    name: str | DatasetDef | None, root: str | os.PathLike[str] | None = None
) -> DatasetDef:
    """``name`` when given, else the layout detected at ``root`` (StreetHazards without one)."""
    if name is not None:
        return get_dataset(name)
    if root is not None:
        return detect_dataset(root)
    return get_dataset("streethazards")
