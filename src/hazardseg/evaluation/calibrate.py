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
from typing import Any

import torch

from hazardseg import distributed
from hazardseg.config import EvalConfig
from hazardseg.data.split import DataSource
from hazardseg.errors import HazardsegError
from hazardseg.evaluation.passes import Prepared, open_split, prepare, split_pass
from hazardseg.evaluation.spec import RunOptions, check_spec, resolve_spec
from hazardseg.metrics.ood import PooledOOD
from hazardseg.models.checkpoint import LoadedCheckpoint, open_checkpoint

log = logging.getLogger(__name__)


def threshold_at_fpr(pooled: PooledOOD, target: float) -> dict[str, Any]:
    """Lowest threshold flagging at most ``target`` of the negatives, and the achieved FPR."""
    t = pooled.threshold_for_fpr(target)
    if math.isnan(t):
        raise HazardsegError("calibration: no known-class pixels were seen")
    fpr = 0.0 if math.isinf(t) else float(pooled.metrics_at_threshold(t)["fpr"])
    return {"threshold": float(t), "fpr": fpr, "num_pixels": int(pooled.compute(2)["num_neg"])}


def calibrate(
    checkpoint: str | os.PathLike[str] | LoadedCheckpoint,
    data: str | os.PathLike[str] | DataSource,
    split: str | None = None,
    spec: EvalConfig | None = None,
    run: RunOptions | None = None,
    target_fpr: float = 0.05,
) -> dict[str, dict[str, Any]]:
    """Choose and store each method's threshold; returns ``{name: threshold entry}``.

    Only known-class pixels of ``split`` (default: the dataset's validation split, else its
    evaluation split) are used (anomaly pixels, if any, are ignored). The
    spec and the run options mean what they mean in :func:`hazardseg.evaluation.evaluate`,
    and the pass is the same split pass, so thresholds apply to the scores ``evaluate``,
    ``visualize`` and ``predict`` compute. A threshold is stored with the settings it is tied
    to (resize, label resolution, precision, TTA and the method's fit) and replaces only a
    threshold of the same settings.
    """
    if not 0.0 < target_fpr < 1.0:
        raise HazardsegError(f"--target-fpr {target_fpr}: expected a fraction in (0, 1)")
    run = run or RunOptions()
    run.check()
    ckpt = open_checkpoint(checkpoint)
    source = DataSource.of(data)
    split = split or source.dataset.val_split or source.dataset.eval_split
    if split == source.dataset.eval_split and source.dataset.val_split is not None:
        log.warning("calibrating on the %s split uses the data it will be evaluated on", split)
    source.dataset.require_labels(split, "calibrating on")
    spec = spec if spec is not None else resolve_spec(ckpt.config)
    check_spec(spec)
    ctx = distributed.init_from_env(spec.device)
    try:
        prepared = prepare(ckpt, source, spec, run, ctx.device)
        return _calibrate(prepared, source, split, target_fpr, spec, run)
    finally:
        distributed.cleanup(ctx)


def _calibrate(
    prepared: Prepared,
    data: DataSource,
    split: str,
    target_fpr: float,
    spec: EvalConfig,
    run: RunOptions,
) -> dict[str, dict[str, Any]]:
    dataset = open_split(data, split, spec, run.max_images)
    labels = data.dataset.labels
    selected = prepared.methods
    pooled = {n: PooledOOD() for n in selected}
    nonfinite = dict.fromkeys(selected, 0)
    with torch.inference_mode():
        for b in split_pass(
            prepared, dataset, spec, progress=run.progress, desc=f"calibrate {split}"
        ):
            is_anom, valid = labels.evaluation_masks(b.mask, spec.exclude_unlabeled)
            known = valid & ~is_anom
            for n, s in b.scores.items():
                nonfinite[n] += int((~torch.isfinite(s) & known).sum())
                pooled[n].update(s, torch.zeros_like(known), known)
    for n in selected:
        with torch.inference_mode():  # histogram tensors were filled in inference mode
            pooled[n].all_reduce()
        nonfinite[n] = sum(distributed.gather_objects(nonfinite[n]))
        if nonfinite[n]:
            raise HazardsegError(
                f"calibration: method '{n}' gave {nonfinite[n]} NaN/infinite scores on "
                f"split '{split}'"
            )
    entries = {}
    state = prepared.state
    for n, m in selected.items():
        res = threshold_at_fpr(pooled[n], target_fpr)
        values = {
            **res,
            "target": float(target_fpr),
            "split": split,
            "num_images": len(dataset),
            "exclude_unlabeled": bool(spec.exclude_unlabeled),
        }
        entries[n] = state.set_threshold(m, prepared.fit_of(n), prepared.settings, values)
    if distributed.rank() == 0:
        state.save()
    return entries
