"""Score maps of a split whose labels are not public, for the benchmark's server:
:func:`write_maps` runs the model and every method over the split and writes the maps
(SegmentMeIfYouCan's ``.hdf5`` with ``--maps-format smiyc``) and a ``maps.json`` manifest;
nothing is scored."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from hazardseg import __version__, distributed
from hazardseg.config import EvalConfig
from hazardseg.data.split import DataSource
from hazardseg.evaluation.passes import Prepared, open_split, split_pass
from hazardseg.evaluation.score_maps import MapWriter
from hazardseg.evaluation.spec import RunOptions, spec_to_dict
from hazardseg.io import atomic_write_json


def write_maps(
    prepared: Prepared,
    data: DataSource,
    split: str,
    spec: EvalConfig,
    run: RunOptions,
    out_dir: Path,
) -> dict[str, Any]:
    """Write every method's score map of ``split`` below ``out_dir/maps`` and the manifest
    ``out_dir/maps.json`` (returned): dataset, split, format, each method's folder, where to
    submit them."""
    t0 = time.perf_counter()
    dataset = open_split(data, split, spec, run.max_images)
    writer = MapWriter(out_dir / "maps", data.dataset, split, run.maps_format)
    by_rel = {sample.rel: sample for sample in dataset.samples}
    with torch.inference_mode():
        for b in split_pass(prepared, dataset, spec, progress=run.progress, desc=f"maps {split}"):
            for name, scores in b.scores.items():
                for i, rel in enumerate(b.ids):
                    writer.put(name, by_rel[rel], scores[i])
    distributed.barrier()
    info = data.dataset.split(split)
    manifest = {
        "kind": "score-maps",
        "hazardseg_version": __version__,
        "dataset": data.dataset.name,
        "root": str(data.root.resolve()),
        "split": split,
        "num_images": len(dataset),
        "format": writer.format,
        "methods": {n: str(writer.method_dir(n)) for n in prepared.methods},
        "checkpoint": str(prepared.checkpoint.path.resolve()),
        "checkpoint_sha256": prepared.checkpoint.sha256,
        "spec": spec_to_dict(spec),
        "submit": info.submit,
        "total_s": time.perf_counter() - t0,
    }
    if distributed.rank() == 0:
        atomic_write_json(out_dir / "maps.json", manifest)
    return manifest
