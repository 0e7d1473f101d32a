"""``generate_synthetic``: synthetic scenes written in any registered dataset's layout
(StreetHazards' by :mod:`~hazardseg.data.synth.dataset`, the others' by the
:mod:`~hazardseg.data.synth.layouts` table), one process-pool task per frame; every frame is
rendered from its own seed, so the files are the same whatever the number of workers."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hazardseg.data.registry import get_dataset
from hazardseg.data.synth.dataset import check_count, generate_dataset, image_seed, prepare_out
from hazardseg.data.synth.layouts import LAYOUTS, SYNTH_ANOMALY, Frame, Layout
from hazardseg.data.synth.scene import check_size, render_scene
from hazardseg.errors import ConfigError

MAX_ATTEMPTS = 16
"""Scenes drawn at most for a frame that must hold an anomaly."""

_TOWNS = {"train": "t1-3", "validation": "t4", "test": "t5"}


def render_frame(args: tuple[str, str, Frame, tuple[int, int], int]) -> None:
    """Render and write one frame (a process-pool task): ``(dataset, root, frame, size,
    seed)``."""
    dataset, root, frame, size, seed = args
    layout = LAYOUTS[dataset]
    first = image_seed(seed, frame.role, frame.index)
    for attempt in range(MAX_ATTEMPTS):
        # anomaly-only sets: draw again until the scene holds an anomaly (deterministic)
        rgb, ids = render_scene(first + attempt, size, _TOWNS[frame.role], frame.anomalies)
        if not (frame.anomalies and layout.anomaly_in_every_frame) or (ids == SYNTH_ANOMALY).any():
            break
    layout.write(Path(root), frame, rgb, ids)


def top_level(layout: Layout, frames: list[Frame]) -> set[str]:
    """The root's entries a layout writes (what ``--overwrite`` replaces)."""
    tops = set()
    for frame in frames:
        for rel in layout.paths(frame):
            if rel is not None:
                tops.add(rel.split("/")[0])
    return tops | {"frame_list.json", "train.odgt", "validation.odgt", "anom.odgt"}


DEFAULT_COUNTS: dict[str, tuple[int, int, int]] = {
    "streethazards": (200, 50, 100),
    "cityscapes": (200, 50, 0),
    "bdd-anomaly": (200, 50, 100),
    "smiyc-anomaly": (0, 10, 10),
    "smiyc-obstacle": (0, 30, 12),
    "fishyscapes-laf": (0, 100, 0),
    "lostandfound": (20, 0, 40),
    "road-anomaly": (0, 0, 60),
}
"""Default ``--train/--val/--test`` of each dataset (the counts it has)."""


def default_counts(
    dataset: str, train: int | None, val: int | None, test: int | None
) -> tuple[int, int, int]:
    """The counts given, else the dataset's defaults (unknown dataset: DataError)."""
    get_dataset(dataset)
    d = DEFAULT_COUNTS[dataset]
    return (
        d[0] if train is None else train,
        d[1] if val is None else val,
        d[2] if test is None else test,
    )


def generate_synthetic(
    out: str | Path,
    dataset: str,
    counts: tuple[int, int, int],
    size: tuple[int, int] = (320, 180),
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    workers: int = 1,
    rgba: bool = False,
) -> Path:
    """Write synthetic scenes in ``dataset``'s layout and label encoding under ``out``:
    StreetHazards' with :func:`generate_dataset`, the others' with
    :mod:`hazardseg.data.synth.layouts` (which says what the (train, validation, test)
    ``counts`` mean for each). ``rgba`` applies to StreetHazards only. Returns ``out``."""
    if dataset == "streethazards":
        return generate_dataset(out, *counts, size, seed, rgba, progress, overwrite, workers)
    get_dataset(dataset)
    names = ("n_train (--train)", "n_val (--val)", "n_test (--test)")
    checked = [check_count(name, n) for name, n in zip(names, counts, strict=True)]
    size = check_size(size)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    workers = check_count("workers (--workers)", workers) or 1
    root = Path(out)
    layout = LAYOUTS[dataset]
    frames = layout.plan(dict(zip(("train", "validation", "test"), checked, strict=True)))
    prepare_out(root, overwrite, top_level(layout, frames))
    tasks = [(dataset, str(root), frame, size, int(seed)) for frame in frames]
    with tqdm(total=len(tasks), desc="synth", unit="img", disable=not progress) as bar:
        if workers > 1 and len(tasks) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(render_frame, tasks, chunksize=4):
                    bar.update()
        else:
            for task in tasks:
                render_frame(task)
                bar.update()
    layout.finish(root, frames)
    return root
