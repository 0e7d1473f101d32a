"""Verification of a dataset tree: layout, pairing, readability, sizes and label values.

StreetHazards gets its own thorough check (.odgt indexes, towns, files without a pair); every
other registered dataset is checked through its loader (:meth:`DatasetDef.samples`) and its
label encoding (:meth:`DatasetDef.decode`).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from hazardseg.data.classes import ODGT_NAMES, PNG_MAX_VALUE, SPLITS
from hazardseg.data.imageio import check_image_size
from hazardseg.data.inputs import is_regular_file
from hazardseg.data.registry import DatasetDef, detect_dataset, get_dataset
from hazardseg.data.streethazards import (
    check_split_name,
    index_sample,
    natural_key,
    read_odgt_entries,
    split_dirs,
)
from hazardseg.errors import DataError

ANOMALY_PNG_VALUE = PNG_MAX_VALUE
"""PNG value of the anomaly class; allowed only in the test split."""

_LABEL_MODES = ("L", "P", "I", "I;16", "1")


@dataclass
class SplitSummary:
    """What was found in one split."""

    split: str
    num_images: int = 0
    num_annotations: int = 0
    towns: list[str] = field(default_factory=list)
    image_sizes: dict[tuple[int, int], int] = field(default_factory=dict)
    label_values: list[int] = field(default_factory=list)
    odgt: bool = False
    dataset: str = "streethazards"

    def describe(self) -> str:
        """One line: counts, towns, image sizes (WxH: count) and PNG label values seen (for
        other datasets: the mask ids the labels decode to)."""
        sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(self.image_sizes.items()))
        values = ",".join(str(v) for v in self.label_values)
        if self.dataset != "streethazards":
            return (
                f"{self.split}: {self.num_images} images, {self.num_annotations} labels, "
                f"sizes [{sizes}], mask ids [{values}]"
            )
        return (
            f"{self.split}: {self.num_images} images, {self.num_annotations} annotations, "
            f"towns [{', '.join(self.towns)}], sizes [{sizes}], PNG label values [{values}]"
            f"{', .odgt index' if self.odgt else ', no .odgt index'}"
        )


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`: per-split summaries and one line per problem."""

    root: Path
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


class _PairResult(NamedTuple):
    image_size: tuple[int, int] | None
    label_size: tuple[int, int] | None
    label_values: tuple[int, ...]
    problems: tuple[str, ...]


def _open_checked(path: str) -> Image.Image:
    """Open an image lazily after checking its header size; DataError for bombs."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"{path}: refused as a decompression bomb ({exc})") from None
    try:
        check_image_size(img.width, img.height, path)
    except DataError:
        img.close()
        raise
    return img


def _verify_image(path: str, problems: list[str], kind: str) -> tuple[int, int] | None:
    """An image's size after reading its header and verifying it (no pixel decode); a
    problem line (and None) when it is unreadable, too large or not RGB/RGBA."""
    try:
        with _open_checked(path) as img:
            size, mode = img.size, img.mode
            img.verify()
    except DataError as exc:
        problems.append(str(exc))
        return None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        problems.append(f"{path}: unreadable or corrupt {kind} ({exc})")
        return None
    if mode not in ("RGB", "RGBA"):
        problems.append(f"{path}: image mode {mode}; expected RGB or RGBA")
    return size


def _inspect_pair(job: tuple[str, str, bool]) -> _PairResult:
    """Read one image header (+ CRC verify) and decode its annotation."""
    image_path, label_path, anomaly_allowed = job
    problems: list[str] = []
    image_size = label_size = None
    values: tuple[int, ...] = ()
    arr = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image_size = _verify_image(image_path, problems, "PNG")
        try:
            with _open_checked(label_path) as lab:
                lab.load()
                label_size = lab.size
                if lab.mode not in _LABEL_MODES:
                    problems.append(
                        f"{label_path}: annotation mode {lab.mode}; expected single-channel PNG"
                    )
                else:
                    arr = np.asarray(lab)
        except DataError as exc:
            problems.append(str(exc))
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            problems.append(f"{label_path}: unreadable or corrupt PNG ({exc})")
    if arr is not None:
        values = tuple(int(v) for v in np.unique(arr))
        bad = [v for v in values if v < 0 or v > PNG_MAX_VALUE]
        if bad:
            problems.append(f"{label_path}: label values {bad[:5]} outside 0..{PNG_MAX_VALUE}")
        if not anomaly_allowed and ANOMALY_PNG_VALUE in values:
            n = int((arr == ANOMALY_PNG_VALUE).sum())
            problems.append(
                f"{label_path}: {n} anomaly pixels (PNG value {ANOMALY_PNG_VALUE}); "
                "expected anomalies only in the test split"
            )
    if image_size and label_size and image_size != label_size:
        problems.append(
            f"{label_path}: size {label_size[0]}x{label_size[1]} differs from image "
            f"{image_size[0]}x{image_size[1]}"
        )
    return _PairResult(image_size, label_size, values, tuple(problems))


def _inspect_registered(job: tuple[str, str, str, bool]) -> _PairResult:
    """Read one image header (+ CRC verify) and decode its label with its dataset's
    encoding (no label: image only)."""
    import hazardseg.data  # noqa: F401  (registers the datasets in a worker process)
    from hazardseg.data.registry import get_dataset

    image_path, label_path, dataset, anomaly_allowed = job
    problems: list[str] = []
    image_size = label_size = None
    values: tuple[int, ...] = ()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image_size = _verify_image(image_path, problems, "image")
    if label_path:
        d = get_dataset(dataset)
        try:
            ids = d.read_label(Path(label_path))
            label_size = (ids.shape[1], ids.shape[0])
            values = tuple(int(v) for v in np.flatnonzero(np.bincount(ids.ravel())))
            n = int(np.isin(ids, d.labels.anomaly_ids).sum()) if d.labels.anomaly_ids else 0
            if n and not anomaly_allowed:
                problems.append(f"{label_path}: {n} anomaly pixels; expected none in this split")
        except DataError as exc:
            problems.append(str(exc))
    if image_size and label_size and image_size != label_size:
        problems.append(
            f"{label_path}: size {label_size[0]}x{label_size[1]} differs from image "
            f"{image_size[0]}x{image_size[1]}"
        )
    return _PairResult(image_size, label_size, values, tuple(problems))


def check_registered(
    root: Path,
    dataset: DatasetDef,
    splits: Iterable[str] | None = None,
    *,
    workers: int = 1,
    progress: bool = False,
) -> CheckReport:
    """Check ``splits`` (default: every split of the dataset) of a registered dataset's tree
    through its loader and label encoding (see :func:`check_dataset`)."""
    names = list(dict.fromkeys(splits)) if splits else list(dataset.check_splits or dataset.splits)
    for name in names:
        dataset.split(name)
    report = CheckReport(root=root)
    jobs: list[tuple[str, str, str, bool]] = []
    owners: list[str] = []
    for split in names:
        summary = SplitSummary(split, dataset=dataset.name)
        report.splits[split] = summary
        try:
            samples = dataset.samples(root, split)
        except DataError as exc:
            report.problems.append(str(exc))
            continue
        if not samples:
            report.problems.append(f"{root}: split {split!r} of {dataset.name} has no images")
        summary.num_images = len(samples)
        summary.num_annotations = sum(s.label_path is not None for s in samples)
        allowed = dataset.splits[split].anomalies
        for s in samples:
            jobs.append((str(s.image_path), str(s.label_path or ""), dataset.name, allowed))
            owners.append(split)
    _collect(report, names, jobs, owners, workers, progress, _inspect_registered)
    return report


def _scan(folder: Path, problems: list[str]) -> dict[str, Path]:
    """PNG files below ``folder`` by relative path; non-regular files named *.png (FIFOs,
    devices) are reported in ``problems`` and never opened."""
    if not folder.is_dir():
        return {}
    found = {}
    for p in folder.rglob("*.png"):
        if is_regular_file(p):
            found[p.relative_to(folder).as_posix()] = p
        elif not p.is_dir():
            problems.append(f"{p}: not a regular file (a FIFO, socket or device); expected a PNG")
    return found


def _check_odgt(root: Path, split: str, image_rels: set[str], problems: list[str]) -> bool:
    odgt = root / ODGT_NAMES[split]
    if not odgt.is_file():
        return False
    try:
        entries = read_odgt_entries(odgt)
    except DataError as exc:
        problems.append(str(exc))
        return True
    listed: dict[str, str] = {}
    for where, entry in entries:
        try:
            image_path, label_path, rel = index_sample(root, split, entry, where)
        except DataError as exc:
            problems.append(str(exc))
            continue
        if rel in listed:
            problems.append(f"{where}: {rel} is listed again (first at {listed[rel]})")
            continue
        listed[rel] = where
        for key, path in (("fpath_img", image_path), ("fpath_segm", label_path)):
            if not is_regular_file(path):
                what = "not a regular file" if path.exists() else "not found"
                problems.append(f"{where}: {key} {entry[key]!r} {what}")
    unlisted = sorted(image_rels - listed.keys(), key=natural_key)
    if unlisted:
        problems.append(
            f"{odgt}: {len(unlisted)} images not listed (first: {unlisted[0]}); "
            "expected the index to list every image"
        )
    return True


def _run(
    jobs: list[Any], workers: int, inspect: Callable[[Any], _PairResult] = _inspect_pair
) -> Iterator[_PairResult]:
    if workers <= 1 or len(jobs) < 2 * workers:
        yield from map(inspect, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(inspect, jobs, chunksize=max(1, min(64, len(jobs) // workers)))


def _collect(
    report: CheckReport,
    names: list[str],
    jobs: list[Any],
    owners: list[str],
    workers: int,
    progress: bool,
    inspect: Callable[[Any], _PairResult] = _inspect_pair,
) -> None:
    """Run the per-pair inspections and fill the splits' sizes, values and problems."""
    sizes: dict[str, Counter] = {s: Counter() for s in names}
    values: dict[str, set[int]] = {s: set() for s in names}
    runs = _run(jobs, workers, inspect)
    results = tqdm(runs, total=len(jobs), desc="checking", unit="img", disable=not progress)
    for split, res in zip(owners, results, strict=True):
        if res.image_size:
            sizes[split][res.image_size] += 1
        values[split].update(res.label_values)
        report.problems.extend(res.problems)
    for split, summary in report.splits.items():
        summary.image_sizes = dict(sizes[split])
        summary.label_values = sorted(values[split])


def check_dataset(
    root: str | Path,
    splits: Iterable[str] | None = None,
    *,
    workers: int = 1,
    progress: bool = False,
    dataset: str | DatasetDef | None = None,
) -> CheckReport:
    """Verify the tree of ``dataset`` (default: the layout detected at ``root``; StreetHazards
    when none is) at ``root`` for ``splits`` (default: all of them).

    Other datasets than StreetHazards: :func:`check_registered` (the loader's layout errors,
    unreadable images, label values outside the encoding, size mismatches, anomaly pixels in
    a split without anomalies). StreetHazards (all three splits by default):

    Problems (one line each in ``report.problems``): a missing split, an image without
    annotation and the reverse, .odgt entries that do not match the files or point outside
    ``root`` (reported with file and line), a file named *.png that is not a regular file, an
    unreadable or corrupt PNG, an image over the size limit (decompression bomb), label values
    outside 0..14, image/annotation size mismatch, anomaly pixels (PNG value 14) outside the
    test split. Raises :class:`DataError` if ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: dataset root not found; expected a folder containing train/ and/or test/"
        )
    if workers < 1:
        raise DataError(f"workers={workers}; expected a positive integer")
    definition = _dataset_at(root, dataset)
    if definition.name != "streethazards":
        return check_registered(root, definition, splits, workers=workers, progress=progress)
    names = list(dict.fromkeys(splits)) if splits else list(SPLITS)
    for name in names:
        check_split_name(name)
    report = CheckReport(root=root)
    jobs: list[tuple[str, str, bool]] = []
    owners: list[str] = []
    for split in names:
        summary = SplitSummary(split)
        report.splits[split] = summary
        image_dir, label_dir = split_dirs(root, split)
        if not image_dir.is_dir() and not label_dir.is_dir():
            report.problems.append(
                f"{image_dir}: missing split {split!r}; expected images/ and annotations/ folders"
            )
            continue
        images, labels = _scan(image_dir, report.problems), _scan(label_dir, report.problems)
        if not images:
            report.problems.append(f"{image_dir}: split {split!r} has no PNG images")
        summary.num_images, summary.num_annotations = len(images), len(labels)
        summary.towns = sorted({rel.split("/")[0] for rel in images if "/" in rel}, key=natural_key)
        for rel in sorted(images.keys() - labels.keys(), key=natural_key):
            report.problems.append(
                f"{images[rel]}: image without annotation (expected {label_dir / rel})"
            )
        for rel in sorted(labels.keys() - images.keys(), key=natural_key):
            report.problems.append(
                f"{labels[rel]}: annotation without image (expected {image_dir / rel})"
            )
        summary.odgt = _check_odgt(root, split, set(images), report.problems)
        for rel in sorted(images.keys() & labels.keys(), key=natural_key):
            jobs.append((str(images[rel]), str(labels[rel]), split == "test"))
            owners.append(split)

    _collect(report, names, jobs, owners, workers, progress)
    return report


def _dataset_at(root: Path, dataset: str | DatasetDef | None) -> DatasetDef:
    """``dataset``, else the one detected at ``root`` (StreetHazards when none matches: its
    check then names what is missing)."""
    if dataset is not None:
        return get_dataset(dataset)
    try:
        return detect_dataset(root)
    except DataError:
        return get_dataset("streethazards")
