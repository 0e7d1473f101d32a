"""The two passes of training: :func:`train_one_epoch` and :func:`validate`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from hazardseg import distributed
from hazardseg.config import TrainConfig
from hazardseg.distributed import DistContext
from hazardseg.errors import ConfigError
from hazardseg.metrics.collector import MetricCollector
from hazardseg.metrics.segmentation import ConfusionMatrix
from hazardseg.models.forward import forward_logits
from hazardseg.progress import track
from hazardseg.training.checkpointing import RunState
from hazardseg.training.metrics_log import MetricLogger, TrainProgress
from hazardseg.training.schedule import Scheduler
from hazardseg.training.steps import Precision, train_step


@dataclass
class Optimization:
    """What a training step needs: the model (DDP-wrapped under torchrun), the loss, the
    optimiser with its per-iteration schedule and gradient scaler, and the precision."""

    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler
    scaler: torch.amp.GradScaler
    precision: Precision
    device: torch.device
    grad_clip: float | None = None
    channels_last: bool = False

    def step(self, batch: dict[str, Any]) -> torch.Tensor:
        """One optimiser step on ``batch``; returns the detached loss."""
        return train_step(
            self.model, batch, self.criterion, self.optimizer, self.scaler, self.precision,
            self.device, self.grad_clip, self.channels_last,
        )  # fmt: skip

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return float(self.optimizer.param_groups[0]["lr"])


def iterations_per_epoch(loader: DataLoader, cfg: TrainConfig) -> int:
    """Batches in an epoch: the loader's, at most ``cfg.max_iters_per_epoch``."""
    if cfg.max_iters_per_epoch is None:
        return len(loader)
    return min(len(loader), cfg.max_iters_per_epoch)


def validates_after(epoch: int, cfg: TrainConfig) -> bool:
    """Whether a validation follows ``epoch``: every ``cfg.val_every_epochs`` and the last."""
    return epoch % cfg.val_every_epochs == 0 or epoch == cfg.epochs


def train_one_epoch(
    opt: Optimization,
    loader: DataLoader,
    cfg: TrainConfig,
    epoch: int,
    state: RunState,
    logger: MetricLogger,
    validate_now: Callable[[], None],
    progress: TrainProgress | None = None,
) -> None:
    """Train epoch ``epoch`` over :func:`iterations_per_epoch` batches of ``loader``.

    Counts steps in ``state.global_iter``, logs a "train" row (mean loss over the processes,
    learning rate, images/s) every ``cfg.log_every_iters`` steps and after the last, and calls
    ``validate_now`` every ``cfg.val_every_iters`` steps (not on the last one when a validation
    follows the epoch anyway), stopping once it sets ``state.stopped_early``. ``progress``
    shows the iterations and writes one line at the epoch's end. Raises ConfigError when the
    loss stops being finite.
    """
    iters = iterations_per_epoch(loader, cfg)
    val_at_end = validates_after(epoch, cfg)
    opt.model.train()
    logger.new_window()
    bar = progress.epoch(epoch, cfg.epochs, iters) if progress is not None else None
    t_start = time.monotonic()
    loss_sum, loss_steps, images, window_steps = 0.0, 0, 0, 0
    lr = opt.lr
    for i, batch in enumerate(loader):
        if i >= iters:
            break
        loss = opt.step(batch)
        lr = opt.lr
        opt.scheduler.step_iteration()
        state.global_iter += 1
        logger.update(loss, batch["image"].shape[0])
        images += int(batch["image"].shape[0]) * logger.ctx.world_size
        window_steps += 1
        last = i + 1 == iters
        if state.global_iter % cfg.log_every_iters == 0 or last:
            mean_loss, images_per_s = logger.window()
            if not math.isfinite(mean_loss):
                raise ConfigError(
                    f"training loss became {mean_loss} at iteration {state.global_iter}; "
                    f"lower train.lr (now {cfg.lr}) or enable train.grad_clip"
                )
            loss_sum += mean_loss * window_steps
            loss_steps += window_steps
            window_steps = 0
            if bar is not None:
                bar.postfix.update(
                    loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.1f}"
                )
            logger.log(
                {
                    "kind": "train",
                    "epoch": epoch,
                    "iteration": state.global_iter,
                    "loss": mean_loss,
                    "lr": lr,
                    "images_per_s": images_per_s,
                }
            )
            logger.new_window()
        if bar is not None:
            bar.update(1)
        every = cfg.val_every_iters
        if every and state.global_iter % every == 0 and not (last and val_at_end):
            validate_now()
            opt.model.train()
            if state.stopped_early:
                break
    if bar is not None:
        bar.close(final_line=not loss_steps)
    if progress is not None and loss_steps:
        seconds = time.monotonic() - t_start
        progress.say(
            f"epoch {epoch}/{cfg.epochs}: loss {loss_sum / loss_steps:.4f}, lr {lr:.2e}, "
            f"{images / max(seconds, 1e-9):.1f} images/s, {seconds:.1f} s "
            f"(iteration {state.global_iter})"
        )


def validate(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    num_classes: int,
    precision: Precision,
    ctx: DistContext,
    channels_last: bool = False,
    progress: bool = False,
) -> ConfusionMatrix:
    """The dataset-level confusion matrix of ``model``'s argmax over ``loader`` (this
    process's shard), summed over the processes.

    Every process first takes rank 0's buffers (BatchNorm statistics), so the score is that of
    the model best.pt would hold. Uses the one forward pass
    (:func:`hazardseg.models.forward.forward_logits`) with the run's precision: logits are
    resized bilinearly to the mask's resolution when they differ.
    """
    distributed.broadcast_buffers(ctx, model)
    batches = track(loader, len(loader), "validation", unit="batch", enabled=progress)
    return _confusion_matrix(model, batches, num_classes, precision, ctx, channels_last)


@torch.inference_mode()
def _confusion_matrix(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    num_classes: int,
    precision: Precision,
    ctx: DistContext,
    channels_last: bool,
) -> ConfusionMatrix:
    was_training = model.training
    model.eval()
    collector = MetricCollector(num_classes)
    try:
        for batch in batches:
            masks = batch["mask"].to(ctx.device, non_blocking=True)
            logits, _ = forward_logits(
                model,
                batch["image"],
                ctx.device,
                masks.shape[-2:],
                precision=precision.label,
                channels_last=channels_last,
            )
            collector.update_segmentation(logits.argmax(dim=1), masks)
        if ctx.enabled:
            collector.all_reduce()
    finally:
        model.train(was_training)
    collector.to("cpu")
    assert collector.segmentation is not None
    return collector.segmentation
