"""Optimiser, learning-rate schedule and early stopping: small pure pieces of the loop."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from hazardseg.config import OPTIMIZERS, SCHEDULERS, TrainConfig
from hazardseg.errors import ConfigError


def build_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: TrainConfig
) -> torch.optim.Optimizer:
    """Create the optimiser named by ``cfg.optimizer`` with its lr and weight decay."""
    name = cfg.optimizer.lower()
    if cfg.lr <= 0:
        raise ConfigError(f"train.lr={cfg.lr}: expected a positive learning rate")
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise ConfigError(f"train.optimizer={cfg.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")


def poly_factor(iteration: int, total_iters: int, power: float) -> float:
    """Learning-rate multiplier ``(1 - iteration / total_iters) ** power`` (0 past the end)."""
    if total_iters <= 0:
        return 1.0
    return max(0.0, 1.0 - iteration / total_iters) ** power


class PolyFactor:
    """LambdaLR multiplier of a poly schedule over a fixed number of iterations."""

    def __init__(self, total_iters: int, power: float) -> None:
        self.total_iters = int(total_iters)
        self.power = float(power)

    def __call__(self, iteration: int) -> float:
        return poly_factor(iteration, self.total_iters, self.power)


class Scheduler:
    """The run's lr schedule with one interface for the loop.

    ``step_iteration()`` after every optimiser step (poly), ``step_validation(miou)`` after
    every validation (plateau, mode max). ``state_dict``/``load_state_dict`` for resume.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_iters: int):
        self.kind = cfg.scheduler.lower()
        self.impl: Any = None
        if self.kind == "plateau":
            self.impl = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience
            )
        elif self.kind == "poly":
            self.impl = torch.optim.lr_scheduler.LambdaLR(
                optimizer, PolyFactor(total_iters, cfg.poly_power)
            )
        elif self.kind != "none":
            raise ConfigError(
                f"train.scheduler={cfg.scheduler!r}: expected one of {', '.join(SCHEDULERS)}"
            )

    def step_iteration(self) -> None:
        """Advance per-iteration schedules by one optimiser step."""
        if self.kind == "poly":
            self.impl.step()

    def step_validation(self, miou: float) -> None:
        """Feed a validation mIoU to metric-driven schedules (NaN counts as no improvement)."""
        if self.kind == "plateau":
            self.impl.step(miou if math.isfinite(miou) else -math.inf)

    def state_dict(self) -> dict[str, Any]:
        """Scheduler state (plain values only)."""
        if self.impl is None:
            return {}
        state = dict(self.impl.state_dict())
        state.pop("lr_lambdas", None)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if self.impl is not None and state:
            if self.kind == "poly":
                state = {**state, "lr_lambdas": [None] * len(self.impl.lr_lambdas)}
            self.impl.load_state_dict(state)


class EarlyStopping:
    """Stop when the monitored value (higher is better) has not improved for ``patience`` checks.

    An improvement is a value greater than ``best + min_delta``. ``patience=None`` never stops.
    """

    def __init__(self, patience: int | None, min_delta: float = 0.0) -> None:
        if patience is not None and patience < 1:
            raise ConfigError(f"train.early_stopping_patience={patience}: expected >= 1 or null")
        if min_delta < 0:
            raise ConfigError(f"train.early_stopping_min_delta={min_delta}: expected >= 0")
        self.patience = patience
        self.min_delta = float(min_delta)
        self.best = -math.inf
        self.bad_checks = 0

    def step(self, value: float) -> bool:
        """Record one check; return True when ``value`` is an improvement."""
        if math.isfinite(value) and value > self.best + self.min_delta:
            self.best = float(value)
            self.bad_checks = 0
            return True
        self.bad_checks += 1
        return False

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` checks in a row brought no improvement."""
        return self.patience is not None and self.bad_checks >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """Counters for resume."""
        return {"best": self.best, "bad_checks": self.bad_checks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.best = float(state["best"])
        self.bad_checks = int(state["bad_checks"])
