"""Score maps on disk, in two formats, written by ``evaluate --save-maps`` and read by
``eval-maps``:

* ``npy``: one float array per image, ``<dir>/<method>/<image path below the split, .npy>``
  (float32 when written here; any float dtype is read);
* ``smiyc``: SegmentMeIfYouCan's submission format, as its ``Evaluation.save_output`` and
  ``ChannelLoaderHDF5`` write and read it: ``<dir>/anomaly_p/<method>/<dataset>/<frame>.hdf5``
  holding one float16 dataset ``value`` of the image's size (gzip level 9), where
  ``<dataset>`` is the benchmark's name of the dataset (``AnomalyTrack-all``,
  ``ObstacleTrack-all``, ``LostAndFound-test``, ...) and ``<frame>`` its frame name. The
  benchmark's ``metric`` command then reads them from ``DIR_OUTPUTS=<dir>``.

Maps are checked before their data is read: a regular file, a float dtype and the label's
shape (a file claiming a huge array is refused without allocating it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hazardseg.data.imageio import check_regular_file
from hazardseg.data.registry import DatasetDef, Sample
from hazardseg.errors import DataError
from hazardseg.io import atomic_path
from hazardseg.optional import require

MAP_FORMATS: tuple[str, ...] = ("npy", "smiyc")
"""Formats :class:`MapWriter` writes; ``eval-maps`` also takes ``auto`` (found on disk)."""


def map_relpath(rel: str) -> str:
    """Score-map path of an image: ``t5/1.png`` -> ``t5/1.npy``."""
    return str(Path(rel).with_suffix(".npy"))


def _h5py() -> Any:
    return require("h5py", "SegmentMeIfYouCan score maps (.hdf5)", "datasets")


class MapWriter:
    """Writes each method's score maps in ``fmt`` below ``maps_dir`` (module docstring);
    every file atomically."""

    def __init__(self, maps_dir: Path, dataset: DatasetDef, split: str, fmt: str = "npy") -> None:
        if fmt not in MAP_FORMATS:
            raise DataError(f"--maps-format {fmt!r}: expected one of {', '.join(MAP_FORMATS)}")
        self.maps_dir = Path(maps_dir)
        self.dataset = dataset
        self.format = fmt
        self.submission_name = dataset.submission_name(split)
        if fmt == "smiyc":
            _h5py()
            if self.submission_name is None:
                raise DataError(
                    f"--maps-format smiyc: SegmentMeIfYouCan's evaluation does not read "
                    f"{dataset.name} maps (it evaluates smiyc-anomaly, smiyc-obstacle, "
                    "lostandfound and fishyscapes-laf); use --maps-format npy"
                )

    def map_path(self, method: str, sample: Sample) -> Path:
        """Where the score map of ``sample`` for ``method`` is written."""
        if self.format == "smiyc":
            fid = self.dataset.frame_id(sample)
            name = self.submission_name or ""
            return self.maps_dir / "anomaly_p" / method / name / f"{fid}.hdf5"
        return self.maps_dir / method / map_relpath(sample.rel)

    def method_dir(self, method: str) -> Path:
        """The folder ``eval-maps --maps`` reads ``method``'s maps from."""
        if self.format == "smiyc":
            return self.maps_dir / "anomaly_p" / method / (self.submission_name or "")
        return self.maps_dir / method

    def put(self, method: str, sample: Sample, scores: torch.Tensor) -> None:
        """Write one (H, W) score map (float32 ``.npy``, or float16 ``value`` in ``.hdf5``)."""
        path = self.map_path(method, sample)
        if self.format == "smiyc":
            arr = scores.detach().to("cpu", torch.float32).numpy().astype(np.float16)
            h5py = _h5py()
            with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
                fh.create_dataset("value", data=arr, compression=9)
            return
        arr32 = scores.detach().to("cpu", torch.float32).numpy()
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr32)


def map_file(maps_dir: Path, dataset: DatasetDef, sample: Sample, fmt: str) -> Path:
    """The file holding ``sample``'s map in a method's folder of format ``fmt``."""
    if fmt == "smiyc":
        return maps_dir / f"{dataset.frame_id(sample)}.hdf5"
    return maps_dir / map_relpath(sample.rel)


def detect_format(maps_dir: Path, dataset: DatasetDef, sample: Sample) -> str:
    """``npy`` or ``smiyc``: the format whose file of ``sample`` is in ``maps_dir``."""
    for fmt in MAP_FORMATS:
        if map_file(maps_dir, dataset, sample, fmt).is_file():
            return fmt
    return "npy"


def _npy_header(path: Path, fh: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header, read before any data is allocated."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    return tuple(int(n) for n in shape), np.dtype(dtype)


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    if not np.issubdtype(dtype, np.floating) or dtype.hasobject:
        raise DataError(f"{path}: dtype {dtype}; expected a float array (float16/32/64)")


def _check_shape(path: Path, shape: tuple[int, ...], want: tuple[int, int], squeeze: bool):
    found = tuple(s for s in shape if s != 1) if squeeze else shape
    expected = tuple(s for s in want if s != 1) if squeeze else tuple(want)
    if found != expected:
        raise DataError(
            f"{path}: shape {shape}; expected {tuple(want)} (the label's height, width)"
        )


def load_npy_map(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """One ``.npy`` score map of ``shape`` in its own float dtype."""
    check_regular_file(path)
    try:
        with open(path, "rb") as fh:
            file_shape, dtype = _npy_header(path, fh)
            _check_dtype(path, dtype)
            _check_shape(path, file_shape, shape, squeeze=False)
            need = int(np.prod(file_shape, dtype=np.int64)) * dtype.itemsize
            have = os.fstat(fh.fileno()).st_size - fh.tell()
            if have < need:
                raise DataError(f"{path}: truncated .npy file ({have} of {need} data bytes)")
            fh.seek(0)
            arr = np.load(fh, allow_pickle=False)
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to load this score map") from None
    if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
        raise DataError(f"{path}: not a readable {tuple(shape)} float array")
    return arr


def load_hdf5_map(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """One SegmentMeIfYouCan ``.hdf5`` map (dataset ``value``, singleton axes squeezed, as
    the benchmark reads it) of ``shape``, in its stored float dtype."""
    check_regular_file(path)
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as fh:
            if "value" not in fh or not isinstance(fh["value"], h5py.Dataset):
                raise DataError(f"{path}: no dataset 'value'; expected a SegmentMeIfYouCan map")
            ds = fh["value"]
            _check_dtype(path, np.dtype(ds.dtype))
            _check_shape(path, tuple(int(n) for n in ds.shape), shape, squeeze=True)
            arr = np.asarray(ds[()])
    except DataError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DataError(f"{path}: not a readable HDF5 score map ({exc})") from None
    return arr.reshape(shape)


def load_map(path: Path, shape: tuple[int, int], fmt: str) -> np.ndarray:
    """A score map of format ``fmt`` (``npy`` or ``smiyc``) in its stored float dtype."""
    return load_hdf5_map(path, shape) if fmt == "smiyc" else load_npy_map(path, shape)
