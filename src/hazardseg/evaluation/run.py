"""``evaluate``: one pass over a split feeds segmentation, every anomaly method and metric.

Component metrics need the pooled best-F1 threshold, known only after the pass; every score
map is therefore kept as float32 (exact, no re-computation) in a scratch folder on disk (or
in ``<out>/maps`` with ``save_maps``) and read back in a second, model-free pass.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from hazardseg.anomaly.state import default_state_path
from hazardseg.data.classes import KNOWN_CLASS_NAMES
from hazardseg.data.streethazards import StreetHazards
from hazardseg.data.transforms import build_eval_transform
from hazardseg.errors import HazardsegError
from hazardseg.evaluation import dist
from hazardseg.evaluation.accumulate import (
    NONFINITE_POLICIES,
    BackgroundWorker,
    MethodAccumulator,
    ScoreStore,
)
from hazardseg.evaluation.components import (
    component_pass,
    merge_component_accumulators,
    pooled_thresholds,
)
from hazardseg.evaluation.methods import build_methods, calibrated_thresholds, prepare_methods
from hazardseg.evaluation.report import method_section, results_document, summary_table
from hazardseg.metrics.ood import evaluation_masks
from hazardseg.metrics.segmentation import ConfusionMatrix
from hazardseg.models.inference import evaluation_forward
from hazardseg.results import save_results

log = logging.getLogger(__name__)


def check_options(batch_size: int, workers: int, nonfinite: str, max_images: int | None) -> None:
    """Reject invalid evaluation options with one-line errors."""
    if batch_size < 1:
        raise HazardsegError(f"batch size must be >= 1, got {batch_size}")
    if workers < 0:
        raise HazardsegError(f"workers must be >= 0, got {workers}")
    if nonfinite not in NONFINITE_POLICIES:
        raise HazardsegError(
            f"--nonfinite {nonfinite!r}: expected one of {', '.join(NONFINITE_POLICIES)}"
        )
    if max_images is not None and max_images < 1:
        raise HazardsegError(f"max images must be >= 1, got {max_images}")


def _progress(iterable: Any, total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False)


def evaluate(
    checkpoint: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    split: str = "test",
    methods: str | list[str] = "all",
    out_dir: str | os.PathLike[str] | None = None,
    *,
    resize: str = "native",
    at_label_resolution: bool = True,
    exclude_unlabeled: bool = False,
    fit_split: str = "train",
    fit_images: int | None = 100,
    save_maps: bool = False,
    max_images: int | None = None,
    model_name: str | None = None,
    batch_size: int = 1,
    workers: int = 0,
    device: str | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    nonfinite: str = "error",
    components: bool = True,
    state_path: str | os.PathLike[str] | None = None,
    save_state: bool = True,
    max_curve_points: int = 1000,
    progress: bool = False,
    overlap: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a split; write ``<out_dir>/results.json`` and return it.

    Methods that need fitting are restored from ``anomaly_state.pt`` beside the checkpoint
    when it matches (checkpoint sha256, options, fitting data), else fitted on ``fit_split``
    (``fit_images`` images) and saved there. Calibrated thresholds stored by ``calibrate``
    are reported under ``calibrated``. Under torchrun the split is sharded by index and the
    accumulators are merged; only rank 0 writes.
    """
    t_start = time.perf_counter()
    check_options(batch_size, workers, nonfinite, max_images)
    if save_maps and out_dir is None:
        raise HazardsegError("--save-maps needs an output folder (--out DIR)")
    selected = build_methods(methods, method_options)
    dev = dist.default_device(device)
    joined = dist.init_from_env(dev)
    try:
        return _evaluate(
            checkpoint,
            data_root,
            split,
            selected,
            out_dir,
            resize=resize,
            at_label_resolution=at_label_resolution,
            exclude_unlabeled=exclude_unlabeled,
            fit_split=fit_split,
            fit_images=fit_images,
            save_maps=save_maps,
            max_images=max_images,
            model_name=model_name,
            batch_size=batch_size,
            workers=workers,
            device=dev,
            nonfinite=nonfinite,
            components=components,
            state_path=state_path,
            save_state=save_state,
            max_curve_points=max_curve_points,
            progress=progress,
            overlap=overlap,
            t_start=t_start,
        )
    finally:
        if joined:
            torch.distributed.destroy_process_group()


def _evaluate(
    checkpoint: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    split: str,
    methods: dict[str, Any],
    out_dir: str | os.PathLike[str] | None,
    *,
    resize: str,
    at_label_resolution: bool,
    exclude_unlabeled: bool,
    fit_split: str,
    fit_images: int | None,
    save_maps: bool,
    max_images: int | None,
    model_name: str | None,
    batch_size: int,
    workers: int,
    device: torch.device,
    nonfinite: str,
    components: bool,
    state_path: str | os.PathLike[str] | None,
    save_state: bool,
    max_curve_points: int,
    progress: bool,
    overlap: bool,
    t_start: float,
) -> dict[str, Any]:
    from hazardseg.models.checkpoint import load_model

    dataset = StreetHazards(
        data_root, split, build_eval_transform(resize, at_label_resolution), max_images=max_images
    )
    model, info = load_model(checkpoint, model_name=model_name, device=device)
    model.eval()
    sha = info["sha256"]
    spath = Path(state_path) if state_path is not None else default_state_path(checkpoint)
    t_fit = time.perf_counter()
    state, restored, fitted = prepare_methods(
        methods,
        model,
        sha,
        spath,
        data_root=data_root,
        fit_split=fit_split,
        fit_images=fit_images,
        resize=resize,
        device=device,
        batch_size=batch_size,
        workers=workers,
        save=save_state,
    )
    fit_s = time.perf_counter() - t_fit
    thresholds = calibrated_thresholds(state, methods, sha)
    need_features = any(m.needs_features for m in methods.values())

    shard = Subset(dataset, dist.shard_indices(len(dataset)))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers)
    num_classes = int(info["num_classes"])
    names = info.get("class_names") or (
        list(KNOWN_CLASS_NAMES) if num_classes == len(KNOWN_CLASS_NAMES) else None
    )
    cm = ConfusionMatrix(num_classes)
    accs = {n: MethodAccumulator(n, nonfinite) for n in methods}
    maps_dir = Path(out_dir) / "maps" if save_maps and out_dir is not None else None
    keep_maps = components or save_maps
    stages = (
        "data_s",
        "forward_s",
        "methods_s",
        "segmentation_s",
        "ood_s",
        "store_s",
        "components_s",
        "wait_s",
    )
    times = dict.fromkeys(stages, 0.0)
    t_loop = time.perf_counter()
    scratch_parent = None
    if out_dir is not None and keep_maps:
        scratch_parent = Path(out_dir)
        scratch_parent.mkdir(parents=True, exist_ok=True)
    with ScoreStore(maps_dir, scratch_parent) as store, torch.inference_mode():

        def consume(
            scores: dict[str, torch.Tensor],
            is_anom: torch.Tensor,
            valid: torch.Tensor,
            ids: list[str],
        ) -> None:
            """Feed one batch into the accumulators and the score store."""
            t_a = time.perf_counter()
            for n, s in scores.items():
                accs[n].update(s, is_anom, valid, ids)
            t_b = time.perf_counter()
            if keep_maps:
                for i, rel in enumerate(ids):
                    store.put_mask(rel, is_anom[i], valid[i])
                    for n, s in scores.items():
                        store.put(n, rel, s[i])
            times["ood_s"] += t_b - t_a
            times["store_s"] += time.perf_counter() - t_b

        show = progress and dist.rank() == 0
        with BackgroundWorker(enabled=overlap) as worker:
            t_prev = time.perf_counter()
            for batch in _progress(loader, len(loader), show, f"evaluate {split}"):
                t0 = time.perf_counter()
                times["data_s"] += t0 - t_prev
                mask = batch["mask"].to(device)
                logits, feats = evaluation_forward(
                    model, batch["image"], device, features=need_features
                )
                if logits.shape[-2:] != mask.shape[-2:]:
                    logits = F.interpolate(
                        logits, size=mask.shape[-2:], mode="bilinear", align_corners=False
                    )
                _sync(device)
                t1 = time.perf_counter()
                scores = {n: m.score(logits, feats) for n, m in methods.items()}
                _sync(device)
                t2 = time.perf_counter()
                cm.update(logits.max(dim=1).indices, mask)  # faster than argmax on the CPU
                is_anom, valid = evaluation_masks(mask, exclude_unlabeled)
                t3 = time.perf_counter()
                times["forward_s"] += t1 - t0
                times["methods_s"] += t2 - t1
                times["segmentation_s"] += t3 - t2
                worker.submit(consume, scores, is_anom, valid, list(batch["path"]))
                t_prev = time.perf_counter()
                times["wait_s"] += t_prev - t3
        t_pass = time.perf_counter() - t_loop

        t_end = time.perf_counter()
        cm.all_reduce()
        for acc in accs.values():
            _all_reduce_accumulator(acc)
            acc.check_nonfinite(f"{split} split")
        pooled = {n: acc.pooled.compute(max_curve_points) for n, acc in accs.items()}
        times["finalize_s"] = time.perf_counter() - t_end
        t_comp = time.perf_counter()
        my_ids = [dataset.samples[i].rel for i in shard.indices]
        comp: dict[str, Any] = dict.fromkeys(methods)
        if components:
            parts = component_pass(pooled_thresholds(pooled), my_ids, store.get, store.get_mask)
            comp = merge_component_accumulators(parts)
        times["components_s"] = time.perf_counter() - t_comp
    times["metrics_s"] = sum(
        times[k] for k in ("segmentation_s", "ood_s", "store_s", "components_s")
    )
    # wall time the methods and metrics add to data loading + forward (metric updates run
    # on a background thread, overlapped with the next forward, when ``overlap``)
    times["added_s"] = t_pass - times["data_s"] - times["forward_s"] + times["components_s"]

    method_results = {
        n: method_section(accs[n], methods[n].options, comp[n], thresholds.get(n), pooled[n])
        for n in methods
    }
    notes: list[str] = []
    for n, r in method_results.items():
        reason = r["pooled"]["undefined_reason"]
        if reason and f"pooled metrics undefined: {reason}" not in notes:
            notes.append(f"pooled metrics undefined: {reason}")
        if r["nonfinite"]:
            notes.append(f"{n}: {r['nonfinite']} non-finite scores excluded")
    total = time.perf_counter() - t_start
    n_images = len(dataset)
    timing = {
        **times,
        "fit_s": fit_s,
        "pass_s": t_pass,
        "total_s": total,
        "images_per_s": n_images / t_pass if t_pass > 0 else None,
        "overlap": bool(overlap),
        "world_size": dist.world_size(),
        "device": str(device),
    }
    results = results_document(
        model={
            "name": info["model_name"],
            "checkpoint": str(Path(checkpoint).resolve()),
            "checkpoint_sha256": sha,
            "num_classes": num_classes,
            "class_names": names,
        },
        data={
            "root": str(Path(data_root).resolve()),
            "split": split,
            "num_images": n_images,
            "resize": resize,
            "at_label_resolution": bool(at_label_resolution),
        },
        config=dict(info.get("config") or {}),
        evaluation={
            "methods": list(methods),
            "fit_split": fit_split,
            "fit_images": fit_images,
            "state_file": str(spath.resolve()),
            "state_restored": restored,
            "state_fitted": fitted,
            "batch_size": batch_size,
            "nonfinite": nonfinite,
            "components": components,
            "maps": str(maps_dir) if maps_dir is not None else None,
        },
        exclude_unlabeled=exclude_unlabeled,
        segmentation=cm.to_dict(names),
        methods=method_results,
        timing=timing,
        notes=notes,
    )
    if out_dir is not None and dist.rank() == 0:
        results = save_results(Path(out_dir) / "results.json", results)
    return results


def _sync(device: torch.device) -> None:
    """Wait for queued CUDA work so that stage timings are attributed correctly."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _all_reduce_accumulator(acc: MethodAccumulator) -> None:
    """Merge one method's accumulators across ranks (every rank ends with the total)."""
    if not dist.is_distributed():
        return
    acc.pooled.all_reduce()
    acc.per_image.all_reduce()
    parts = dist.gather_objects((acc.nonfinite, acc.nonfinite_images))
    acc.nonfinite = sum(p[0] for p in parts)
    acc.nonfinite_images = [i for p in parts for i in p[1]]


__all__ = ["evaluate", "summary_table"]
