"""``evaluate``: one pass over a split feeds segmentation, every anomaly method and metric.

Accumulators update on the logits' device and move to the CPU only to merge and compute.
Component metrics are computed in the same pass at each method's calibrated threshold
(``components="calibrated"``, the default); ``components="oracle"`` uses the pooled best-F1
threshold of the split itself, at the cost of a second forward pass. No score map is kept on
disk unless ``save_maps`` asks for them.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from hazardseg import distributed
from hazardseg.config import EvalConfig
from hazardseg.data.split import DataSource
from hazardseg.errors import HazardsegError
from hazardseg.evaluation.accumulate import BackgroundWorker
from hazardseg.evaluation.components import component_section
from hazardseg.evaluation.passes import Prepared, open_split, prepare, scored_classes, split_pass
from hazardseg.evaluation.protocols import (
    SecondPass,
    anomaly_protocols,
)
from hazardseg.evaluation.results import (
    method_section,
    protocol_section,
    results_document,
    save_results,
    summary_table,
)
from hazardseg.evaluation.score_maps import MapWriter
from hazardseg.evaluation.spec import RunOptions, check_spec, resolve_spec, spec_to_dict
from hazardseg.evaluation.submission import write_maps
from hazardseg.metrics.collector import MetricCollector
from hazardseg.models.checkpoint import LoadedCheckpoint, open_checkpoint

log = logging.getLogger(__name__)

STAGES = (
    "data_s",
    "forward_s",
    "methods_s",
    "segmentation_s",
    "ood_s",
    "store_s",
    "components_s",
    "wait_s",
)


def evaluate(
    checkpoint: str | os.PathLike[str] | LoadedCheckpoint,
    data: str | os.PathLike[str] | DataSource,
    split: str | None = None,
    spec: EvalConfig | None = None,
    run: RunOptions | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a split (default: the dataset's evaluation split); write
    ``<out_dir>/results.json`` and return it.

    On a split whose labels are not public (SegmentMeIfYouCan's test frames) nothing is
    scored: with ``run.save_maps`` the score maps are written for the benchmark's server
    (:func:`~hazardseg.evaluation.submission.write_maps`; its manifest is returned), without
    it the call is refused.

    ``spec`` is the resolved evaluation spec (default: the checkpoint's ``eval:`` section over
    the defaults, see :func:`~hazardseg.evaluation.spec.resolve_spec`); ``run`` the
    per-invocation options (state file, maps, progress, ...).

    Methods that need fitting take a stored fit from ``anomaly_state.pt`` beside the checkpoint
    (see :meth:`~hazardseg.anomaly.state.AnomalyState.restore`), else are fitted on the spec's
    ``fit_split`` and recorded there. Calibrated thresholds stored by ``calibrate`` under the
    same settings are reported under ``calibrated`` and are the component metrics'
    thresholds. Under torchrun the split is sharded by index and the accumulators are merged;
    only rank 0 writes.
    """
    t_start = time.perf_counter()
    run = run or RunOptions()
    run.check()
    if run.save_maps and out_dir is None:
        raise HazardsegError("--save-maps needs an output folder (--out DIR)")
    ckpt = open_checkpoint(checkpoint)
    source = DataSource.of(data)
    split = split or source.dataset.eval_split
    spec = spec if spec is not None else resolve_spec(ckpt.config)
    check_spec(spec)
    hidden = not source.dataset.split(split).public_labels
    if hidden and run.save_maps and out_dir is not None:
        ctx = distributed.init_from_env(spec.device)
        try:
            prepared = prepare(ckpt, source, spec, run, ctx.device)
            return write_maps(prepared, source, split, spec, run, Path(out_dir))
        finally:
            distributed.cleanup(ctx)
    num_classes = scored_classes(ckpt, source, split)
    protocols = anomaly_protocols(spec, source.dataset)
    ctx = distributed.init_from_env(spec.device)
    try:
        prepared = prepare(ckpt, source, spec, run, ctx.device, with_methods=bool(protocols))
        return _evaluate(prepared, source, split, out_dir, spec, run, t_start, num_classes)
    finally:
        distributed.cleanup(ctx)


def _evaluate(
    prepared: Prepared,
    data: DataSource,
    split: str,
    out_dir: str | os.PathLike[str] | None,
    spec: EvalConfig,
    run: RunOptions,
    t_start: float,
    num_classes: int | None,
) -> dict[str, Any]:
    dataset = open_split(data, split, spec, run.max_images)
    labels = data.dataset.labels
    methods = prepared.methods
    device = prepared.device
    protocols = anomaly_protocols(spec, data.dataset)
    comp_source, comp_thresholds, comp_notes = _component_plan(spec, prepared)
    group_of = data.dataset.open_set_group
    collector = MetricCollector(
        num_classes,
        list(methods),
        nonfinite=spec.nonfinite,
        exclude_unlabeled=spec.exclude_unlabeled,
        component_thresholds=comp_thresholds if comp_source == "calibrated" else None,
        labels=labels,
        protocols=protocols or ("pooled",),
        group_of=group_of,
        open_groups=sorted({g for s in dataset.samples if (g := group_of(s.rel))}),
    )
    writer = None
    if run.save_maps and out_dir:
        writer = MapWriter(Path(out_dir) / "maps", data.dataset, split, run.maps_format)
    by_rel = {sample.rel: sample for sample in dataset.samples}
    times = dict.fromkeys(STAGES, 0.0)

    def consume(scores: dict[str, torch.Tensor], mask: torch.Tensor, ids: list[str]) -> None:
        """Feed one batch's scores into the collector (and the optional map writer)."""
        collector.update_scores(ids, mask, scores)
        t_c = time.perf_counter()
        if writer is not None:
            for n, s in scores.items():
                for i, rel in enumerate(ids):
                    writer.put(n, by_rel[rel], s[i])
        times["store_s"] += time.perf_counter() - t_c

    t_loop = time.perf_counter()
    with torch.inference_mode(), BackgroundWorker(enabled=run.overlap) as worker:
        passes = split_pass(
            prepared, dataset, spec, progress=run.progress, desc=f"evaluate {split}"
        )
        for b in passes:
            # max().indices is faster than argmax on the CPU
            collector.update_segmentation(b.logits.max(dim=1).indices, b.mask)
            t3 = time.perf_counter()
            times["data_s"] += b.data_s
            times["forward_s"] += b.forward_s
            times["methods_s"] += b.methods_s
            worker.submit(consume, b.scores, b.mask, b.ids)
            times["wait_s"] += time.perf_counter() - t3
    t_pass = time.perf_counter() - t_loop
    for key in ("segmentation_s", "ood_s", "components_s"):
        times[key] += collector.times[key]

    t_end = time.perf_counter()
    with torch.inference_mode():  # the accumulators' tensors were filled in inference mode
        collector.all_reduce()
        for acc in collector.methods.values():
            acc.check_nonfinite(f"{split} split")
        pooled = {
            n: acc.pooled.compute(run.max_curve_points) for n, acc in collector.methods.items()
        }
        pixels = {n: a.smiyc.compute() for n, a in collector.methods.items() if a.smiyc}
        calibration = {
            n: a.open_set.thresholds() for n, a in collector.methods.items() if a.open_set
        }
    times["finalize_s"] = time.perf_counter() - t_end

    comp: dict[str, Any] = dict.fromkeys(methods)
    second_pass_s = 0.0
    if comp_source == "calibrated":
        comp.update(
            {n: component_section(c, "calibrated") for n, c in collector.components.items()}
        )
    second = SecondPass.after_first_pass(
        data.dataset,
        spec.exclude_unlabeled,
        oracle=pooled if comp_source == "oracle" else None,
        pixels=pixels,
        open_set=calibration,
    )
    if second.needed:
        t_o = time.perf_counter()
        with torch.inference_mode():
            wanted = {n: m for n, m in methods.items() if n in second.methods}
            for b in split_pass(
                prepared, dataset, spec, methods=wanted, progress=run.progress, desc="second pass"
            ):
                second.update(b.ids, b.mask, b.scores, b.logits.max(dim=1).indices)
            second.all_reduce()
        second_pass_s = time.perf_counter() - t_o
        times["components_s"] += second_pass_s
        if comp_source == "oracle":
            comp.update(second.oracle_sections(list(methods)))
    times["metrics_s"] = sum(
        times[k] for k in ("segmentation_s", "ood_s", "store_s", "components_s")
    )
    # wall time the methods and metrics add to data loading + forward (metric updates run
    # on a background thread, overlapped with the next forward, when ``overlap``)
    times["added_s"] = t_pass - times["data_s"] - times["forward_s"] + second_pass_s

    method_results = {
        n: method_section(
            collector.methods[n],
            methods[n].options,
            comp[n],
            prepared.thresholds.get(n),
            pooled[n],
            smiyc=second.smiyc_section(n, pixels[n]) if n in pixels else None,
            open_set=second.open_set_section(n, calibration[n]) if n in calibration else None,
        )
        for n in methods
    }
    notes = [*prepared.fits.notes, *comp_notes]
    if not protocols:
        notes.append(f"{data.dataset.title} marks no anomalies: only segmentation is measured")
    for n, r in method_results.items():
        reason = r["pooled"]["undefined_reason"]
        if reason and f"pooled metrics undefined: {reason}" not in notes:
            notes.append(f"pooled metrics undefined: {reason}")
        if r["nonfinite"]:
            notes.append(f"{n}: {r['nonfinite']} non-finite scores excluded")
    n_images = len(dataset)
    timing = {
        **times,
        "fit_s": prepared.fit_s,
        "pass_s": t_pass,
        "second_pass_s": second_pass_s,
        "total_s": time.perf_counter() - t_start,
        "images_per_s": n_images / t_pass if t_pass > 0 else None,
        "overlap": bool(run.overlap),
        "world_size": distributed.world_size(),
        "device": str(device),
    }
    info = prepared.info
    results = results_document(
        model={
            "name": info["model_name"],
            "checkpoint": str(prepared.checkpoint.path.resolve()),
            "checkpoint_sha256": info["sha256"],
            "num_classes": int(info["num_classes"]),
            "class_names": prepared.class_names,
        },
        data={
            "root": str(data.root.resolve()),
            "dataset": data.dataset.name,
            "split": split,
            "num_images": n_images,
            "resize": spec.resize,
            "at_label_resolution": bool(spec.at_label_resolution),
        },
        config=dict(info.get("config") or {}),
        evaluation={
            "methods": list(methods),
            "fit_split": spec.fit_split,
            "fit_images": spec.fit_images,
            "state_file": str(prepared.state.path.resolve()),
            "state_restored": prepared.fits.restored,
            "state_fitted": prepared.fits.to_fit,
            "state_fits": prepared.fits.fits,
            "state_notes": prepared.fits.notes,
            "batch_size": spec.batch_size,
            "nonfinite": spec.nonfinite,
            "components": spec.components,
            "maps": str(writer.maps_dir) if writer is not None else None,
            "maps_format": writer.format if writer is not None else None,
            "protocols": list(protocols),
            "spec": spec_to_dict(spec),
        },
        exclude_unlabeled=spec.exclude_unlabeled,
        protocol=protocol_section(
            spec.exclude_unlabeled,
            per_image_pixels=data.dataset.per_image_pixels(spec.exclude_unlabeled),
            protocols=protocols,
            dataset=data.dataset,
        ),
        segmentation=None
        if collector.segmentation is None
        else collector.segmentation.to_dict(prepared.class_names),
        methods=method_results,
        timing=timing,
        notes=notes,
    )
    if out_dir is not None and distributed.rank() == 0:
        results = save_results(Path(out_dir) / "results.json", results)
    return results


def _component_plan(
    spec: EvalConfig, prepared: Prepared
) -> tuple[str, dict[str, float | None], list[str]]:
    """Where the component thresholds come from, the calibrated ones, and notes to report."""
    if spec.components == "none":
        return "none", {}, []
    if spec.components == "oracle":
        return "oracle", {}, []
    thresholds = {
        n: float(prepared.thresholds[n]["threshold"]) if n in prepared.thresholds else None
        for n in prepared.methods
    }
    notes = [
        f"components skipped for {n}: {prepared.missing_threshold(n)} (run `hazardseg "
        "calibrate` with these settings, or use --components oracle)"
        for n, t in thresholds.items()
        if t is None
    ]
    return "calibrated", thresholds, notes


__all__ = ["evaluate", "summary_table"]
