"""The rules a trainable config must meet: :func:`validate_config` (what ``fit`` checks
before anything is built or written), with the model family's own constraints from the
model registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hazardseg.config import (
    OPTIMIZERS,
    SCHEDULERS,
    WEIGHT_METHODS,
    ExperimentConfig,
)
from hazardseg.errors import ConfigError, DataError
from hazardseg.models.registry import get_model_spec
from hazardseg.precision import ALIASES, PRECISIONS


def _is_precision(value: str) -> bool:
    return ALIASES.get(str(value).lower(), str(value).lower()) in PRECISIONS


_RULES: tuple[tuple[str, str, Callable[[Any], bool]], ...] = (
    ("train.num_threads", ">= 1 or null", lambda v: v is None or v >= 1),
    ("train.epochs", ">= 1", lambda v: v >= 1),
    ("train.batch_size", ">= 1", lambda v: v >= 1),
    ("train.lr", "> 0", lambda v: v > 0),
    ("train.val_every_epochs", ">= 1", lambda v: v >= 1),
    ("train.log_every_iters", ">= 1", lambda v: v >= 1),
    ("data.num_workers", ">= 0", lambda v: v >= 0),
    ("eval.batch_size", ">= 1", lambda v: v >= 1),
    ("train.val_every_iters", ">= 1 or null", lambda v: v is None or v >= 1),
    ("train.max_iters_per_epoch", ">= 1 or null", lambda v: v is None or v >= 1),
    ("train.grad_clip", "> 0 or null", lambda v: v is None or v > 0),
    ("model.num_classes", ">= 1", lambda v: v >= 1),
    ("train.bn_momentum", "in (0, 1] or null", lambda v: v is None or 0 < v <= 1),
    ("train.optimizer", "one of " + ", ".join(OPTIMIZERS), lambda v: v.lower() in OPTIMIZERS),
    ("train.scheduler", "one of " + ", ".join(SCHEDULERS), lambda v: v.lower() in SCHEDULERS),
    ("train.amp", "one of " + ", ".join(PRECISIONS), _is_precision),
    ("train.early_stopping_patience", ">= 1 or null", lambda v: v is None or v >= 1),
    ("train.early_stopping_min_delta", ">= 0", lambda v: v >= 0),
)
"""The value rules of a trainable config: (key, what is expected, test), checked in order."""


def validate_config(cfg: ExperimentConfig) -> None:
    """Raise ConfigError/DataError/HazardsegError for settings ``fit`` cannot train with: an
    unknown model, too few images per step for it, no data root, a value out of range."""
    t, family = cfg.train, get_model_spec(cfg.model.name).family
    if family in ("deeplabv3", "deeplabv3plus") and t.batch_size < 2 and not t.sync_bn:
        # ASPP's image-pooling branch applies BatchNorm to a 1x1 map: one image per step
        # leaves a single value per channel, which BatchNorm cannot normalise in training
        raise ConfigError(
            f"train.batch_size={t.batch_size}: {cfg.model.name} needs at least 2 images per "
            "process (BatchNorm in the ASPP pooling branch); raise it or set train.sync_bn=true"
        )
    if cfg.data.root is None or not str(cfg.data.root).strip():
        raise ConfigError("data.root is not set: pass --data ROOT or set data.root in the config")
    if not Path(cfg.data.root).is_dir():
        raise DataError(f"data root {cfg.data.root} not found; expected a StreetHazards folder")
    for key, expected, ok in _RULES:
        value = getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1])
        if not ok(value):
            raise ConfigError(f"{key}={value!r}: expected {expected}")
    if t.class_weights and t.class_weight_method not in WEIGHT_METHODS:
        method, options = t.class_weight_method, ", ".join(WEIGHT_METHODS)
        raise ConfigError(f"train.class_weight_method={method!r}: expected one of {options}")
