"""The rules a trainable config must meet: :func:`validate_config` (what ``fit`` checks
before anything is built or written), with the model family's own constraints from the
model registry."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hazardseg.config import (
    OPTIMIZERS,
    SCHEDULERS,
    WEIGHT_METHODS,
    ExperimentConfig,
)
from hazardseg.data.outliers import check_outlier_config, cutout_files
from hazardseg.data.registry import DatasetDef, get_dataset
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
    ("model.num_classes", ">= 1", lambda v: v is None or v >= 1),
    ("train.bn_momentum", "in (0, 1] or null", lambda v: v is None or 0 < v <= 1),
    ("train.optimizer", "one of " + ", ".join(OPTIMIZERS), lambda v: v.lower() in OPTIMIZERS),
    ("train.scheduler", "one of " + ", ".join(SCHEDULERS), lambda v: v.lower() in SCHEDULERS),
    ("train.amp", "one of " + ", ".join(PRECISIONS), _is_precision),
    ("train.early_stopping_patience", ">= 1 or null", lambda v: v is None or v >= 1),
    ("train.early_stopping_min_delta", ">= 0", lambda v: v >= 0),
)
"""The value rules of a trainable config: (key, what is expected, test), checked in order."""


def validate_config(cfg: ExperimentConfig, *, resuming: bool = False) -> None:
    """Raise ConfigError/DataError/HazardsegError for settings ``fit`` cannot train with: an
    unknown model, too few images per step for it, no data root, a value out of range, an
    option the model family does not take. ``resuming``: the run continues from its last.pt,
    so ``train.init`` (the weights it started from) is not read again."""
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
    dataset = get_dataset(cfg.data.dataset)
    if not Path(cfg.data.root).is_dir():
        raise DataError(f"data root {cfg.data.root} not found; expected a {dataset.title} folder")
    for key, expected, ok in _RULES:
        value = getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1])
        if not ok(value):
            raise ConfigError(f"{key}={value!r}: expected {expected}")
    check_outlier_config(t.outliers)
    if t.outliers.source == "folder":
        cutout_files(str(t.outliers.folder))
    if t.outliers.source != "none" and t.outliers.objective == "rba" and family != "mask2former":
        raise ConfigError(
            f"train.outliers.objective=rba: RbA's objective reads a mask-classification "
            f"model's semantic map; model.name={cfg.model.name} is a {family} model (use a "
            "mask2former_* model, or objective energy, entropy or extra_class)"
        )
    if family == "mask2former" and t.class_weights:
        raise ConfigError(
            f"train.class_weights=true: {cfg.model.name} trains with the set-prediction loss, "
            "whose class term has its own no-object weighting; set train.class_weights=false"
        )
    if t.init is not None and not resuming and not Path(t.init).is_file():
        raise DataError(f"train.init={t.init}: checkpoint not found")
    if t.class_weights and t.class_weight_method not in WEIGHT_METHODS:
        method, options = t.class_weight_method, ", ".join(WEIGHT_METHODS)
        raise ConfigError(f"train.class_weight_method={method!r}: expected one of {options}")


def trainable_dataset(cfg: ExperimentConfig) -> DatasetDef:
    """The dataset of ``cfg.data``; ConfigError when it has no class labels to train on."""
    dataset = get_dataset(cfg.data.dataset)
    if dataset.labels.num_classes == 0 or dataset.train_split is None:
        raise ConfigError(
            f"data.dataset={dataset.name}: {dataset.title} has no classes to train on (an "
            "anomaly-only evaluation set); train on a dataset with classes, e.g. cityscapes"
        )
    return dataset


def complete_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with the dataset's own settings where it leaves them unset
    (``model.num_classes``, ``data.train_split``, ``data.val_split``); ConfigError when a set
    one does not fit the dataset."""
    dataset = trainable_dataset(cfg)
    known = dataset.labels.num_classes
    n = cfg.model.num_classes
    if n is not None and n != known:
        raise ConfigError(
            f"model.num_classes={n}, but {dataset.title} (data.dataset={dataset.name}) has "
            f"{known} classes; set model.num_classes={known} or leave it unset"
        )
    data = dataclasses.replace(
        cfg.data,
        train_split=cfg.data.train_split or dataset.train_split,
        val_split=cfg.data.val_split or dataset.val_split,
    )
    for key in ("train_split", "val_split"):
        split = getattr(data, key)
        dataset.split(split)
        if not dataset.splits[split].public_labels:
            raise ConfigError(f"data.{key}={split}: its labels are not public")
    model = dataclasses.replace(cfg.model, num_classes=known)
    return dataclasses.replace(cfg, data=data, model=model)
