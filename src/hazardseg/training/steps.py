"""One training step; mixed precision, seeding and determinism settings."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from hazardseg.config import TrainConfig
from hazardseg.precision import Precision, for_training


def resolve_precision(cfg: TrainConfig, device: torch.device) -> Precision:
    """The run's autocast (:func:`hazardseg.precision.for_training` of ``train.amp`` and
    ``train.cpu_bf16``)."""
    return for_training(cfg.amp, device, cfg.cpu_bf16)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic algorithms when asked (warning where none exists); else, on CUDA, let
    cuDNN pick the fastest convolution algorithms."""
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 63-bit seed derived from (seed, epoch, rank) only, so an epoch's randomness does not
    depend on what ran before it (resumed and uninterrupted runs draw the same numbers)."""
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def train_step(
    model: torch.nn.Module,
    batch: dict[str, Any],
    criterion: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    precision: Precision,
    device: torch.device,
    grad_clip: float | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Forward, backward and optimiser step on one batch; returns the detached loss."""
    images = batch["image"].to(device, non_blocking=True)
    masks = batch["mask"].to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with precision.autocast():
        outputs = model(images)
    loss = criterion(outputs, masks)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None and grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()
