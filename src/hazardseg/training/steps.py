"""One training step; mixed precision, seeding and determinism settings."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hazardseg.config import AMP_MODES, TrainConfig
from hazardseg.errors import ConfigError


@dataclass(frozen=True)
class Precision:
    """Autocast settings of a run: ``dtype`` None means float32 (no autocast)."""

    device_type: str
    dtype: torch.dtype | None = None

    @property
    def enabled(self) -> bool:
        """True when autocast is on."""
        return self.dtype is not None

    @property
    def needs_scaler(self) -> bool:
        """fp16 on CUDA needs loss scaling (GradScaler); bf16 does not."""
        return self.dtype == torch.float16 and self.device_type == "cuda"

    @property
    def label(self) -> str:
        """ "fp32", "bf16" or "fp16"."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> torch.autocast:
        """The autocast context for forward passes."""
        return torch.autocast(
            device_type=self.device_type,
            dtype=self.dtype or torch.float32,
            enabled=self.enabled,
        )


def resolve_precision(cfg: TrainConfig, device: torch.device) -> Precision:
    """Pick autocast: ``cfg.amp`` on CUDA ("auto" = bf16 if supported else fp16),
    ``cfg.cpu_bf16`` on the CPU (``cfg.amp`` does not apply there)."""
    amp = cfg.amp.lower()
    if amp not in AMP_MODES:
        raise ConfigError(f"train.amp={cfg.amp!r}: expected one of {', '.join(AMP_MODES)}")
    if device.type == "cuda":
        if amp == "none":
            return Precision("cuda")
        if amp == "auto":
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return Precision("cuda", torch.bfloat16 if amp == "bf16" else torch.float16)
    if cfg.cpu_bf16:
        return Precision(device.type, torch.bfloat16)
    return Precision(device.type)


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
