"""``evaluate_maps``: the evaluation metrics for score maps produced by any other method.

One ``.npy`` float array (H, W) per image, at the label's resolution, named by the image's path
below the split's image folder with ``.npy`` for ``.png``; higher = more anomalous. Scores are
compared at float32 precision.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hazardseg.config import EvalConfig
from hazardseg.data.imageio import check_regular_file
from hazardseg.data.split import DataSource
from hazardseg.errors import DataError
from hazardseg.evaluation.accumulate import map_relpath
from hazardseg.evaluation.components import component_section, pooled_thresholds
from hazardseg.evaluation.results import (
    method_section,
    protocol_section,
    results_document,
    save_results,
)
from hazardseg.evaluation.spec import RunOptions, check_spec
from hazardseg.metrics.collector import MetricCollector
from hazardseg.progress import track


def find_missing_maps(maps_dir: Path, rels: list[str]) -> list[str]:
    """Relative map paths (``t5/1.npy``) absent from ``maps_dir``."""
    return [map_relpath(r) for r in rels if not (maps_dir / map_relpath(r)).is_file()]


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


def load_score_map(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Load one score map and check it is a float array of ``shape``; returns float32.

    The header's dtype and shape are checked before the data is read, so a small file
    claiming a huge array is refused without allocating it; only regular files are opened.
    """
    check_regular_file(path)
    try:
        with open(path, "rb") as fh:
            file_shape, dtype = _npy_header(path, fh)
            if not np.issubdtype(dtype, np.floating) or dtype.hasobject:
                raise DataError(f"{path}: dtype {dtype}; expected a float array (float16/32/64)")
            if file_shape != tuple(shape):
                raise DataError(
                    f"{path}: shape {file_shape}; expected {tuple(shape)} (the label's height, "
                    "width)"
                )
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
    return arr.astype(np.float32, copy=False)


MAPS_SPEC_FIELDS: tuple[str, ...] = ("exclude_unlabeled", "nonfinite", "components")
"""The spec fields :func:`evaluate_maps` uses (the rest describe a model's forward pass)."""


def evaluate_maps(
    maps_dir: str | os.PathLike[str],
    data: str | os.PathLike[str] | DataSource,
    split: str = "test",
    spec: EvalConfig | None = None,
    run: RunOptions | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    name: str = "external",
) -> dict[str, Any]:
    """Evaluate precomputed score maps on a split; write ``<out_dir>/results.json``, return it.

    ``spec``: its ``exclude_unlabeled``, ``nonfinite`` and ``components`` apply (default:
    components at the oracle threshold, the pooled best F1 of these maps; "none" skips them;
    maps have no calibrated thresholds). ``run``: ``max_images``, ``max_curve_points`` and
    ``progress`` apply.
    """
    t_start = time.perf_counter()
    spec = spec if spec is not None else EvalConfig(components="oracle")
    run = run or RunOptions()
    check_spec(spec)
    run.check()
    if spec.components == "calibrated":
        raise DataError(
            "eval-maps: score maps have no calibrated thresholds; component metrics are "
            "'oracle' (the pooled best-F1 threshold of the maps) or 'none'"
        )
    components = spec.components == "oracle"
    exclude_unlabeled, nonfinite = spec.exclude_unlabeled, spec.nonfinite
    max_images, max_curve_points, progress = run.max_images, run.max_curve_points, run.progress
    mdir = Path(maps_dir)
    if not mdir.is_dir():
        raise DataError(f"score-map folder not found: {mdir}")
    source = DataSource.of(data)
    source.dataset.require_labels(split)
    dataset = source.open(split, max_images=max_images)
    labels = source.dataset.labels
    rels = [s.rel for s in dataset.samples]
    missing = find_missing_maps(mdir, rels)
    if missing:
        raise DataError(
            f"{mdir}: {len(missing)} of {len(rels)} score maps missing "
            f"(first: {', '.join(missing[:3])}); expected one .npy per image of split '{split}'"
        )
    collector = MetricCollector(
        methods=[name], nonfinite=nonfinite, exclude_unlabeled=exclude_unlabeled, labels=labels
    )
    for i in track(range(len(dataset)), len(dataset), f"eval-maps {split}", unit="image",
                   enabled=progress):  # fmt: skip
        sample = dataset[i]
        mask, rel = sample["mask"], sample["path"]
        scores = torch.from_numpy(load_score_map(mdir / map_relpath(rel), mask.shape))
        collector.update_scores([rel], mask[None], {name: scores[None]})
    acc = collector.methods[name]
    acc.check_nonfinite(str(mdir))
    pooled = acc.pooled.compute(max_curve_points)
    if pooled["undefined_reason"] is not None:
        raise DataError(
            f"split '{split}' of {source}: {pooled['undefined_reason']} in "
            f"{len(rels)} images; pooled anomaly metrics are undefined"
        )
    comp: dict[str, Any] = {name: None}
    t_metrics = collector.times["ood_s"]
    if components:
        # oracle threshold (pooled best-F1 of these maps): a second read of the maps and
        # labels, nothing kept on disk
        t0 = time.perf_counter()
        parts = MetricCollector(
            exclude_unlabeled=exclude_unlabeled,
            component_thresholds=pooled_thresholds({name: pooled}),
            labels=labels,
        )
        for i in range(len(dataset)):
            sample = dataset[i]
            scores = torch.from_numpy(
                load_score_map(mdir / map_relpath(sample["path"]), sample["mask"].shape)
            )
            parts.update_scores([sample["path"]], sample["mask"][None], {name: scores[None]})
        if name in parts.components:
            comp = {name: component_section(parts.components[name], "oracle")}
        t_metrics += time.perf_counter() - t0
    section = method_section(acc, {"maps": str(mdir.resolve())}, comp[name], None, pooled)
    notes = [f"{name}: {acc.nonfinite} non-finite scores excluded"] if acc.nonfinite else []
    total = time.perf_counter() - t_start
    results = results_document(
        model={
            "name": name,
            "checkpoint": None,
            "checkpoint_sha256": None,
            "num_classes": None,
            "class_names": None,
        },
        data={
            "root": str(source.root.resolve()),
            "dataset": source.dataset.name,
            "split": split,
            "num_images": len(rels),
            "resize": "native",
            "at_label_resolution": True,
        },
        config={},
        evaluation={
            "methods": [name],
            "maps": str(mdir.resolve()),
            "nonfinite": nonfinite,
            "components": spec.components,
        },
        exclude_unlabeled=exclude_unlabeled,
        protocol=protocol_section(
            exclude_unlabeled, per_image_pixels=source.dataset.per_image_pixels(exclude_unlabeled)
        ),
        segmentation=None,
        methods={name: section},
        timing={
            "forward_s": 0.0,
            "methods_s": 0.0,
            "metrics_s": t_metrics,
            "total_s": total,
            "images_per_s": len(rels) / total if total > 0 else None,
        },
        notes=notes,
    )
    if out_dir is not None:
        results = save_results(Path(out_dir) / "results.json", results)
    return results
