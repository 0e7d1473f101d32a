"""``evaluate_maps``: the evaluation metrics for score maps produced by any other method.

One map per image at the label's resolution, higher = more anomalous: a ``.npy`` float array
named by the image's path below the split's image folder, or SegmentMeIfYouCan's ``.hdf5``
(:mod:`hazardseg.evaluation.score_maps`). The pooled and per-image protocols compare scores at
float32 precision; ``smiyc`` rounds them to float16 as the benchmark stores them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from hazardseg.config import EvalConfig
from hazardseg.data.split import DataSource
from hazardseg.errors import DataError
from hazardseg.evaluation.protocols import (
    SecondPass,
    anomaly_protocols,
)
from hazardseg.evaluation.results import (
    method_section,
    protocol_section,
    results_document,
    save_results,
)
from hazardseg.evaluation.score_maps import (
    MAP_FORMATS,
    detect_format,
    load_map,
    map_file,
)
from hazardseg.evaluation.spec import RunOptions, check_spec
from hazardseg.metrics.collector import MetricCollector
from hazardseg.progress import track

KEEP_BYTES = 512 * 2**20
"""Frames (labels and maps) up to this size are kept in memory for the second pass."""

MAPS_SPEC_FIELDS: tuple[str, ...] = ("exclude_unlabeled", "nonfinite", "components", "protocols")
"""The spec fields :func:`evaluate_maps` uses (the rest describe a model's forward pass)."""


def evaluate_maps(
    maps_dir: str | os.PathLike[str],
    data: str | os.PathLike[str] | DataSource,
    split: str | None = None,
    spec: EvalConfig | None = None,
    run: RunOptions | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    name: str = "external",
    maps_format: str = "auto",
) -> dict[str, Any]:
    """Evaluate precomputed score maps on a split; write ``<out_dir>/results.json``, return it.

    ``maps_dir`` holds one map per image in ``maps_format`` (``npy``, ``smiyc`` or ``auto``:
    whichever is on disk; see :mod:`hazardseg.evaluation.score_maps`). ``split`` defaults to
    the dataset's evaluation split. ``spec``: its ``exclude_unlabeled``, ``nonfinite``,
    ``components`` (default: oracle, the pooled best F1 of these maps; "none" skips them;
    maps have no calibrated thresholds) and ``protocols`` apply. ``run``: ``max_images``,
    ``max_curve_points`` and ``progress`` apply. Maps are used in their stored float dtype.
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
    if maps_format not in ("auto", *MAP_FORMATS):
        raise DataError(
            f"--maps-format {maps_format!r}: expected auto or one of {', '.join(MAP_FORMATS)}"
        )
    mdir = Path(maps_dir)
    if not mdir.is_dir():
        raise DataError(f"score-map folder not found: {mdir}")
    source = DataSource.of(data)
    definition = source.dataset
    split = split or definition.eval_split
    definition.require_labels(split)
    protocols = anomaly_protocols(spec, definition)
    if not protocols:
        raise DataError(
            f"{source}: {definition.title} marks no anomalies; score maps cannot be evaluated on it"
        )
    dataset = source.open(split, max_images=run.max_images)
    samples = dataset.samples
    fmt = detect_format(mdir, definition, samples[0]) if maps_format == "auto" else maps_format
    missing = [
        map_file(mdir, definition, s, fmt).relative_to(mdir).as_posix()
        for s in samples
        if not map_file(mdir, definition, s, fmt).is_file()
    ]
    if missing:
        raise DataError(
            f"{mdir}: {len(missing)} of {len(samples)} score maps missing "
            f"(first: {', '.join(missing[:3])}); expected one {fmt} map per image of split "
            f"'{split}'"
        )
    collector = MetricCollector(
        methods=[name],
        nonfinite=spec.nonfinite,
        exclude_unlabeled=spec.exclude_unlabeled,
        labels=definition.labels,
        protocols=protocols,
    )

    def frames() -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """Each image's id, label mask and score map (the images themselves are not read)."""
        for sample in samples:
            assert sample.label_path is not None
            ids = definition.read_label(sample.label_path)
            scores = load_map(map_file(mdir, definition, sample, fmt), ids.shape, fmt)
            yield sample.rel, torch.from_numpy(ids), torch.from_numpy(scores)

    # the second pass (components) reads the frames again unless they fit in memory
    kept: list[tuple[str, torch.Tensor, torch.Tensor]] | None = []
    kept_bytes = 0
    for rel, mask, scores in track(
        frames(), len(dataset), f"eval-maps {split}", unit="image", enabled=run.progress
    ):
        collector.update_scores([rel], mask[None], {name: scores[None]})
        if kept is not None:
            kept_bytes += mask.nbytes + scores.nbytes
            if kept_bytes <= KEEP_BYTES:
                kept.append((rel, mask, scores))
            else:
                kept = None
    acc = collector.methods[name]
    acc.check_nonfinite(str(mdir))
    pooled = acc.pooled.compute(run.max_curve_points)
    if pooled["undefined_reason"] is not None:
        raise DataError(
            f"split '{split}' of {source}: {pooled['undefined_reason']} in "
            f"{len(samples)} images; pooled anomaly metrics are undefined"
        )
    pixels = {name: acc.smiyc.compute()} if acc.smiyc is not None else {}
    t_metrics = collector.times["ood_s"]
    second = SecondPass.after_first_pass(
        definition,
        spec.exclude_unlabeled,
        oracle={name: pooled} if spec.components == "oracle" else None,
        pixels=pixels,
    )
    if second.needed:
        # a second read of the maps and labels, nothing kept on disk
        t0 = time.perf_counter()
        for rel, mask, scores in kept if kept is not None else frames():
            second.update([rel], mask[None], {name: scores[None]})
        t_metrics += time.perf_counter() - t0
    comp = second.oracle_sections([name])[name] if spec.components == "oracle" else None
    smiyc = second.smiyc_section(name, pixels[name]) if pixels else None
    section = method_section(acc, {"maps": str(mdir.resolve())}, comp, None, pooled, smiyc=smiyc)
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
            "dataset": definition.name,
            "split": split,
            "num_images": len(samples),
            "resize": "native",
            "at_label_resolution": True,
        },
        config={},
        evaluation={
            "methods": [name],
            "maps": str(mdir.resolve()),
            "maps_format": fmt,
            "nonfinite": spec.nonfinite,
            "components": spec.components,
            "protocols": list(protocols),
        },
        exclude_unlabeled=spec.exclude_unlabeled,
        protocol=protocol_section(
            spec.exclude_unlabeled,
            per_image_pixels=definition.per_image_pixels(spec.exclude_unlabeled),
            protocols=protocols,
            dataset=definition,
        ),
        segmentation=None,
        methods={name: section},
        timing={
            "forward_s": 0.0,
            "methods_s": 0.0,
            "metrics_s": t_metrics,
            "total_s": total,
            "images_per_s": len(samples) / total if total > 0 else None,
        },
        notes=notes,
    )
    if out_dir is not None:
        results = save_results(Path(out_dir) / "results.json", results)
    return results
