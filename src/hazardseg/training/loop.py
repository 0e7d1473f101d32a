"""``fit``: train a segmentation model, validate, checkpoint, resume; single process or torchrun.

The parts: :mod:`~hazardseg.training.build` (loaders, model), :mod:`~hazardseg.training.engine`
(``train_one_epoch``, ``validate``), :mod:`~hazardseg.training.checkpointing` (run directory,
best.pt / last.pt, resume), :mod:`~hazardseg.training.metrics_log` (metric rows).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hazardseg import distributed
from hazardseg.config import ExperimentConfig, config_from_dict, config_to_dict
from hazardseg.distributed import DistContext
from hazardseg.models.checkpoint import TrainingState
from hazardseg.run_folder import RunFolder
from hazardseg.training.build import (
    Loaders,
    build_loaders,
    build_model,
    uses_channels_last,
    wrap_for_processes,
)
from hazardseg.training.checkpointing import (
    Checkpointer,
    RunState,
    check_out_dir,
    prepare_out_dir,
)
from hazardseg.training.class_weights import run_class_weights
from hazardseg.training.engine import (
    Optimization,
    iterations_per_epoch,
    train_one_epoch,
    validate,
    validates_after,
)
from hazardseg.training.losses import SegmentationLoss
from hazardseg.training.metrics_log import MetricLogger, MetricsLog, TrainProgress
from hazardseg.training.outlier_losses import OutlierObjective
from hazardseg.training.rules import complete_config, validate_config
from hazardseg.training.schedule import EarlyStopping, Scheduler, build_optimizer
from hazardseg.training.steps import (
    epoch_seed,
    resolve_precision,
    seed_everything,
    set_determinism,
)


def fit(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data`` and write the run directory ``out_dir``.

    Returns ``best_miou``, ``best_epoch``, ``epochs_run``, ``stopped_early``,
    ``best_checkpoint`` and ``last_checkpoint``. Under torchrun every rank calls this; only
    rank 0 writes files.
    """
    cfg = config_from_dict(config_to_dict(cfg))  # private, validated copy
    validate_config(cfg, resuming=resume and RunFolder(out_dir).last.is_file())
    cfg = complete_config(cfg)
    threads = torch.get_num_threads()
    if cfg.train.num_threads is not None:
        torch.set_num_threads(cfg.train.num_threads)
    ctx = distributed.setup(cfg.train.device)
    try:
        run = _build_run(cfg, Path(out_dir), ctx, resume, overwrite, progress)
        try:
            _train(run)
        finally:
            run.logger.close()
        return _summary(Path(out_dir), run.state)
    finally:
        distributed.cleanup(ctx)
        torch.set_num_threads(threads)


@dataclass
class _Run:
    """What the epoch loop of one :func:`fit` call works with."""

    cfg: ExperimentConfig
    ctx: DistContext
    data: Loaders
    model: torch.nn.Module
    """The model itself (``opt.model`` is its DDP wrapper under torchrun)."""
    opt: Optimization
    checkpoints: Checkpointer
    logger: MetricLogger
    stopper: EarlyStopping
    state: RunState
    progress: TrainProgress | None
    """What is shown while training (rank 0; None on other ranks)."""

    @property
    def show(self) -> bool:
        """Whether progress is shown on this process's terminal."""
        return self.progress is not None and self.progress.show

    def say(self, text: str) -> None:
        """A line under the progress bars (when they are shown) and in train.log."""
        if self.progress is not None:
            self.progress.say(text)


def _build_run(
    cfg: ExperimentConfig,
    out_dir: Path,
    ctx: DistContext,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> _Run:
    """Build the run, prepare ``out_dir`` and restore its last.pt when resuming."""
    t = cfg.train
    precision = resolve_precision(t, ctx.device)
    check_out_dir(cfg, out_dir, resume, overwrite)  # fail fast, before heavy work
    set_determinism(t.deterministic, ctx.device)
    seed_everything(t.seed)
    # Data and model errors (missing split, missing pretrained weights) surface before
    # anything is written to the run directory.
    data = build_loaders(cfg, ctx)
    model = build_model(cfg, ctx, init=not (resume and RunFolder(out_dir).last.is_file()))
    resume_from = prepare_out_dir(cfg, out_dir, ctx, resume, overwrite)
    weights = run_class_weights(cfg, out_dir, data.label_paths, ctx)
    outlier = None
    if t.outliers.source != "none":
        o = t.outliers
        outlier = OutlierObjective(o.objective, o.weight, o.m_in, o.m_out)
    query_loss = getattr(model, "query_loss", None)
    criterion = SegmentationLoss(cfg.model.num_classes, t.aux_weight, weights, outlier, query_loss)
    criterion = criterion.to(ctx.device)
    optimizer = build_optimizer(model.parameters(), t)
    scheduler = Scheduler(optimizer, t, total_iters=t.epochs * iterations_per_epoch(data.train, t))
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision.needs_scaler)
    class_names = list(data.dataset.class_names)
    training = TrainingState(optimizer, scheduler, scaler)
    checkpoints = Checkpointer(out_dir, cfg, model, training, precision.label, class_names, ctx)
    stopper = EarlyStopping(t.early_stopping_patience, t.early_stopping_min_delta)
    state = RunState()
    if resume_from is not None:
        state = checkpoints.restore(resume_from)
        if state.early_stopping:
            stopper.load_state_dict(state.early_stopping)
    channels_last = uses_channels_last(t, ctx)
    opt = Optimization(
        wrap_for_processes(model, t, ctx), criterion, optimizer, scheduler, scaler, precision,
        ctx.device, t.grad_clip, channels_last,
    )  # fmt: skip
    rows = MetricsLog.for_run(out_dir, class_names, state.global_iter) if ctx.is_main else None
    logger = MetricLogger(ctx, rows, elapsed_s=state.elapsed_s)
    shown = TrainProgress(RunFolder(out_dir).train_log, progress) if ctx.is_main else None
    return _Run(cfg, ctx, data, model, opt, checkpoints, logger, stopper, state, shown)


def _train(run: _Run) -> None:
    """The epoch loop: train, validate when due, save last.pt after every epoch."""
    t, state = run.cfg.train, run.state
    if state.finished and (state.stopped_early or state.epoch >= t.epochs):
        run.say(f"{run.checkpoints.out_dir}: run already finished ({state.epoch} epochs)")
        return
    state.finished = False
    while state.epoch < t.epochs and not state.stopped_early:
        epoch = state.epoch + 1
        seed = epoch_seed(t.seed, epoch, run.ctx.rank)
        seed_everything(seed)
        run.data.start_epoch(epoch, seed)
        validate_now = functools.partial(_validate, run, epoch)
        train_one_epoch(
            run.opt, run.data.train, t, epoch, state, run.logger, validate_now, run.progress
        )
        if validates_after(epoch, t) and not state.stopped_early:
            _validate(run, epoch)
        state.epoch = epoch
        state.finished = state.epoch >= t.epochs or state.stopped_early
        _save_last(run)
    if not state.finished:  # resumed with train.epochs at or below the epochs already run
        state.finished = True
        _save_last(run)


def _validate(run: _Run, epoch: int) -> None:
    """Validate; log the "val" row, step the plateau schedule and early stopping, save best.pt
    on a new best mIoU."""
    state, opt = run.state, run.opt
    cm = validate(
        run.model, run.data.val, run.cfg.model.num_classes, opt.precision, run.ctx,
        opt.channels_last, run.show,
    )  # fmt: skip
    result = cm.to_dict(run.checkpoints.class_names)
    miou = result["miou"] if result["miou"] is not None else float("nan")
    run.logger.log({"kind": "val", "epoch": epoch, "iteration": state.global_iter, **result})
    opt.scheduler.step_validation(miou)
    run.stopper.step(miou)
    if math.isfinite(miou) and miou > state.best_miou:
        state.best_miou, state.best_epoch, state.best_iter = miou, epoch, state.global_iter
        snapshot = dataclasses.replace(
            state,
            epoch=epoch,
            elapsed_s=run.logger.elapsed(),
            early_stopping=run.stopper.state_dict(),
        )
        run.checkpoints.save_best(snapshot)
    if run.stopper.should_stop:
        state.stopped_early = True
    run.say(
        f"epoch {epoch} iter {state.global_iter}: val mIoU {100 * miou:.2f} "
        f"(best {100 * state.best_miou:.2f} at epoch {state.best_epoch})"
        + (" - early stop" if state.stopped_early else "")
    )


def _save_last(run: _Run) -> None:
    """Write the metric rows, then last.pt."""
    run.state.elapsed_s = run.logger.elapsed()
    run.state.early_stopping = run.stopper.state_dict()
    run.logger.flush()
    run.checkpoints.save_last(run.state)


def _summary(out_dir: Path, state: RunState) -> dict[str, Any]:
    best = RunFolder(out_dir).best
    return {
        "best_miou": state.best_miou if math.isfinite(state.best_miou) else None,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "best_checkpoint": str(best) if best.is_file() else None,
        "last_checkpoint": str(RunFolder(out_dir).last),
    }
