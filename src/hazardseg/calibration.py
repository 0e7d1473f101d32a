"""Thresholds without peeking: each method's threshold is chosen on anomaly-free data by FPR.

A pixel is flagged when ``score >= threshold``. ``calibrate`` streams the known-class pixels of
a split (validation by default: it has no anomalies) into a bounded-memory score histogram
(:class:`hazardseg.metrics.ood.PooledOOD`) per method and picks the lowest threshold at which
at most ``target_fpr`` of those pixels are flagged; the achieved fraction is recorded. The
thresholds are stored in ``anomaly_state.pt`` with the fitted method state; ``evaluate`` then
reports F1, precision and recall at them (``calibrated``).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from hazardseg.anomaly.state import default_state_path, write_state
from hazardseg.data.streethazards import StreetHazards
from hazardseg.data.transforms import build_eval_transform
from hazardseg.errors import HazardsegError
from hazardseg.evaluation import dist
from hazardseg.evaluation.methods import build_methods, prepare_methods
from hazardseg.evaluation.run import check_options
from hazardseg.metrics.ood import PooledOOD, evaluation_masks
from hazardseg.models.inference import evaluation_forward

log = logging.getLogger(__name__)


def threshold_at_fpr(pooled: PooledOOD, target: float) -> dict[str, Any]:
    """Lowest threshold flagging at most ``target`` of the negatives, and the achieved FPR."""
    t = pooled.threshold_for_fpr(target)
    if math.isnan(t):
        raise HazardsegError("calibration: no known-class pixels were seen")
    fpr = 0.0 if math.isinf(t) else float(pooled.metrics_at_threshold(t)["fpr"])
    return {"threshold": float(t), "fpr": fpr, "num_pixels": int(pooled.compute(2)["num_neg"])}


def calibrate(
    checkpoint: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    split: str = "validation",
    methods: str | list[str] = "all",
    target_fpr: float = 0.05,
    *,
    resize: str = "native",
    at_label_resolution: bool = True,
    exclude_unlabeled: bool = False,
    fit_split: str = "train",
    fit_images: int | None = 100,
    max_images: int | None = None,
    model_name: str | None = None,
    batch_size: int = 1,
    workers: int = 0,
    device: str | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    state_path: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Choose and store each method's threshold; returns ``{name: threshold entry}``.

    Only known-class pixels of ``split`` are used (anomaly pixels, if any, are ignored).
    Fitted methods are restored or fitted exactly as ``evaluate`` does.
    """
    from hazardseg.models.checkpoint import load_model

    check_options(batch_size, workers, "error", max_images)
    if not 0.0 < target_fpr < 1.0:
        raise HazardsegError(f"--target-fpr {target_fpr}: expected a fraction in (0, 1)")
    if split == "test":
        log.warning("calibrating on the test split uses the data it will be evaluated on")
    selected = build_methods(methods, method_options)
    dev = dist.default_device(device)
    joined = dist.init_from_env(dev)
    try:
        dataset = StreetHazards(
            data_root,
            split,
            build_eval_transform(resize, at_label_resolution),
            max_images=max_images,
        )
        model, info = load_model(checkpoint, model_name=model_name, device=dev)
        sha = info["sha256"]
        spath = Path(state_path) if state_path is not None else default_state_path(checkpoint)
        state, _, _ = prepare_methods(
            selected,
            model,
            sha,
            spath,
            data_root=data_root,
            fit_split=fit_split,
            fit_images=fit_images,
            resize=resize,
            device=dev,
            batch_size=batch_size,
            workers=workers,
        )
        need_features = any(m.needs_features for m in selected.values())
        pooled = {n: PooledOOD() for n in selected}
        nonfinite = dict.fromkeys(selected, 0)
        shard = Subset(dataset, dist.shard_indices(len(dataset)))
        loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers)
        batches: Any = loader
        if progress and dist.rank() == 0:
            from tqdm import tqdm

            batches = tqdm(loader, desc=f"calibrate {split}", unit="batch", leave=False)
        with torch.inference_mode():
            for batch in batches:
                mask = batch["mask"].to(dev)
                logits, feats = evaluation_forward(
                    model, batch["image"], dev, features=need_features
                )
                if logits.shape[-2:] != mask.shape[-2:]:
                    logits = F.interpolate(
                        logits, size=mask.shape[-2:], mode="bilinear", align_corners=False
                    )
                is_anom, valid = evaluation_masks(mask, exclude_unlabeled)
                known = valid & ~is_anom
                for n, m in selected.items():
                    s = m.score(logits, feats)
                    nonfinite[n] += int((~torch.isfinite(s) & known).sum())
                    pooled[n].update(s, torch.zeros_like(known), known)
        for n in selected:
            pooled[n].all_reduce()
            nonfinite[n] = sum(dist.gather_objects(nonfinite[n]))
            if nonfinite[n]:
                raise HazardsegError(
                    f"calibration: method '{n}' gave {nonfinite[n]} NaN/infinite scores on "
                    f"split '{split}'"
                )
        entries = {}
        for n, m in selected.items():
            res = threshold_at_fpr(pooled[n], target_fpr)
            entries[n] = {
                **res,
                "target": float(target_fpr),
                "split": split,
                "num_images": len(dataset),
                "exclude_unlabeled": bool(exclude_unlabeled),
                "options": dict(m.options),
            }
        if dist.rank() == 0:
            state["thresholds"].update(entries)
            write_state(spath, state)
        return entries
    finally:
        if joined:
            torch.distributed.destroy_process_group()
