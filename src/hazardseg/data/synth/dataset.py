"""Synthetic StreetHazards-format datasets: official folders, towns, .odgt files, PNG labels.

Every image is rendered from its own seed derived from (seed, split, index), so the output
is byte-identical for a seed whatever the number of workers or the order of generation.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from hazardseg.data.classes import ODGT_NAMES, SPLITS, TOWNS, ids_to_png
from hazardseg.data.synth.scene import check_size, render_scene
from hazardseg.errors import ConfigError, DataError
from hazardseg.io import atomic_path, atomic_write_text

__all__ = ["Job", "generate_dataset", "image_seed", "parse_size", "plan_split"]

_SPLIT_CODE = {"train": 0, "validation": 1, "test": 2}
_T5_SHARE = 1024 / 1500
"""Share of test images in town t5 (the rest go to t6), as in the official test split."""


@dataclass(frozen=True)
class Job:
    """One image to render: its split, index within the split, town, file name and seed."""

    split: str
    index: int
    town: str
    rel: str
    seed: int


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"WxH"`` (e.g. ``"320x180"``) into ``(width, height)``."""
    parts = str(text).lower().split("x")
    try:
        if len(parts) != 2:
            raise ValueError
        size = (int(parts[0]), int(parts[1]))
    except ValueError:
        raise ConfigError(
            f"size {text!r} is not WxH with integer width and height, e.g. 320x180"
        ) from None
    return check_size(size)


def image_seed(seed: int, split: str, index: int) -> int:
    """Seed of image ``index`` of ``split`` for dataset seed ``seed``."""
    ss = np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(index)])
    return int(
        ss.generate_state(2, dtype=np.uint32).astype(np.uint64) @ np.array([1, 2**32], np.uint64)
    )


def plan_split(split: str, n: int, seed: int) -> list[Job]:
    """The images of one split: towns in official proportions, files numbered from 1 per town."""
    towns = TOWNS[split]
    if len(towns) == 1:
        counts = [n]
    else:
        n5 = round(n * _T5_SHARE)
        if n >= 2:
            n5 = min(max(n5, 1), n - 1)
        counts = [n5, n - n5]
    jobs, index = [], 0
    for town, count in zip(towns, counts, strict=True):
        for k in range(count):
            jobs.append(
                Job(split, index, town, f"{town}/{k + 1}.png", image_seed(seed, split, index))
            )
            index += 1
    return jobs


def _encode_png(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _write_file(path: Path, data: bytes) -> None:
    # Atomic (never half-written) but not fsynced: the .odgt files, written last and
    # durably, are what marks a finished dataset.
    with atomic_path(path, durable=False) as tmp:
        tmp.write_bytes(data)


def _render_and_write(args: tuple[Job, str, tuple[int, int], bool]) -> dict:
    job, root, size, rgba = args
    rgb, ids = render_scene(job.seed, size, job.town, anomalies=job.split == "test")
    top, sub = SPLITS[job.split]
    if rgba:
        alpha = np.full((*rgb.shape[:2], 1), 255, dtype=np.uint8)
        image = _encode_png(np.concatenate([rgb, alpha], axis=2), "RGBA")
    else:
        image = _encode_png(rgb, "RGB")
    img_rel = f"{top}/images/{sub}/{job.rel}"
    seg_rel = f"{top}/annotations/{sub}/{job.rel}"
    _write_file(Path(root) / img_rel, image)
    _write_file(Path(root) / seg_rel, _encode_png(ids_to_png(ids), "L"))
    return {
        "fpath_img": img_rel,
        "fpath_segm": seg_rel,
        "width": size[0],
        "height": size[1],
        "dbName": "StreetHazards",
    }


def check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def prepare_out(out: Path, overwrite: bool, replaced: Iterable[str] = ("train", "test")) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"output folder {out} is not empty; choose another or pass --overwrite")
        for name in replaced:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            elif (out / name).exists():
                (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate_dataset(
    out: str | Path,
    n_train: int,
    n_val: int,
    n_test: int,
    size: tuple[int, int] = (320, 180),
    seed: int = 0,
    rgba: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    workers: int = 1,
) -> Path:
    """Write a StreetHazards-format tree of synthetic scenes under ``out``.

    Layout, towns, .odgt files (one JSON object per line) and label encoding (PNG values
    1..14) follow the official dataset; anomalies (value 14) occur only in the test split.
    A non-empty ``out`` is refused unless ``overwrite`` (which replaces ``out/train`` and
    ``out/test`` and leaves other files alone). Returns ``out`` as a Path. Other datasets'
    layouts: :func:`hazardseg.data.synth.layouts.generate_synthetic`.
    """
    counts = {
        "train": check_count("n_train (--train)", n_train),
        "validation": check_count("n_val (--val)", n_val),
        "test": check_count("n_test (--test)", n_test),
    }
    size = check_size(size)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    workers = check_count("workers (--workers)", workers) or 1
    root = Path(out)
    prepare_out(root, overwrite)

    jobs = [job for split, n in counts.items() for job in plan_split(split, n, int(seed))]
    tasks = [(job, str(root), size, bool(rgba)) for job in jobs]
    bar = tqdm(total=len(tasks), desc="synth", unit="img", disable=not progress)
    entries: dict[str, list[dict]] = {split: [] for split in counts}
    try:
        if workers > 1 and len(tasks) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = pool.map(_render_and_write, tasks, chunksize=4)
                for job, entry in zip(jobs, results, strict=True):
                    entries[job.split].append(entry)
                    bar.update()
        else:
            for job, task in zip(jobs, tasks, strict=True):
                entries[job.split].append(_render_and_write(task))
                bar.update()
    finally:
        bar.close()
    for split, rows in entries.items():
        if counts[split]:
            text = "".join(json.dumps(row) + "\n" for row in rows)
            atomic_write_text(root / ODGT_NAMES[split], text)
    return root
