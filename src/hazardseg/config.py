"""Typed experiment configuration: YAML in, ``key=value`` overrides, resolved YAML out."""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hazardseg.errors import ConfigError
from hazardseg.io import atomic_write_text
from hazardseg.typed_config import _build, _is_dataclass_type, _suggest


@dataclass
class ModelConfig:
    """Which network to build."""

    name: str = "lraspp_mobilenet_v3"
    pretrained: str | None = None
    """None (random init), "imagenet" (backbone weights from the local cache) or a file path."""
    num_classes: int | None = None
    """Classes the model predicts (None: the dataset's known classes)."""
    num_queries: int | None = None
    """mask2former models: number of queries (None: the variant's)."""
    decoder_layers: int | None = None
    """mask2former models: the library's decoder_layers, masked-attention layers + 1 (None:
    the variant's; RbA's light decoder is 2)."""


@dataclass
class DataConfig:
    """Where the data lives and how it is loaded."""

    root: str | None = None
    dataset: str = "streethazards"
    """The registered dataset at ``root`` (``hazardseg datasets`` lists them)."""
    train_split: str | None = None
    """Split trained on (None: the dataset's training split)."""
    val_split: str | None = None
    """Split validated on (None: the dataset's validation split)."""
    num_workers: int = 2
    max_train_images: int | None = None
    """Use only the first N training images (None = all)."""
    max_val_images: int | None = None
    """Use only the first N validation images (None = all)."""


@dataclass
class AugmentConfig:
    """Training augmentation; every component can be switched off (ablations need that)."""

    crop_size: int = 512
    scale: bool = True
    """Multi-scale crop: a square region of side r * crop_size resized to crop_size."""
    scale_range: tuple[float, float] = (0.5, 2.0)
    region_policy: str = "clamp"
    """Region larger than the image: "clamp" it to the image or "pad" with ignore."""
    hflip: bool = True
    color_jitter: float = 0.3
    """Brightness, contrast and saturation jitter strength (0 = off)."""
    blur: bool = True
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    normalize: bool = True
    """ImageNet mean/std normalisation."""


@dataclass
class EvalConfig:
    """The evaluation spec: how images are fed to the model and what is measured.

    One object read by training validation, ``evaluate``, ``calibrate``, ``visualize`` and
    ``predict`` (see :mod:`hazardseg.evaluation.spec` for how the YAML ``eval:`` section, the
    checkpoint's stored section and command-line flags combine).
    """

    resize: str = "native"
    """"native", "WxH" (e.g. "512x512") or "short:N" (shorter side to N pixels)."""
    at_label_resolution: bool = True
    """Upsample logits to the label's resolution (False: resize labels to the input size)."""
    batch_size: int = 1
    precision: str = "auto"
    """"auto" (bf16 + channels_last on CUDA, plain fp32 on the CPU), "fp32", "bf16" or "fp16"."""
    methods: str = "all"
    """Anomaly methods: "all" or a comma list, e.g. "msp,max_logit,sml"."""
    exclude_unlabeled: bool = False
    """Leave "unlabeled" pixels out of the anomaly metrics."""
    protocols: str = "auto"
    """Anomaly protocols: "auto" (the dataset's own: pooled and per_image for StreetHazards
    and BDD-Anomaly, pooled and smiyc for the SegmentMeIfYouCan-style sets) or a comma list of
    pooled, per_image, smiyc (pooled is always measured)."""
    fit_split: str = "train"
    """Split that fits the methods that need fitting (SML, HEAT)."""
    fit_images: int | None = 100
    """Images used for fitting (None = the whole split)."""
    components: str = "calibrated"
    """Component metrics: "calibrated" (at each method's threshold from ``calibrate``, in the
    single pass), "oracle" (at the pooled best-F1 threshold of the evaluated split: a second
    forward pass) or "none"."""
    nonfinite: str = "error"
    """NaN/inf scores on evaluated pixels: "error" or "exclude" (counted)."""
    device: str = "auto"
    """"auto" (this rank's GPU if available, else the CPU), "cpu", "cuda" or "cuda:N"."""
    workers: int = 0
    """Data-loading worker processes."""
    tta: str = "none"
    """Test-time augmentation: "none", or a comma list of input scales and/or "flip", e.g.
    "0.75,1,1.25,flip": logits averaged at the output (label) resolution, features on the grid
    of the scale closest to 1, before any score (see ``hazardseg.models.forward.TTA``)."""


OUTLIER_SOURCES: tuple[str, ...] = ("none", "synthetic", "folder")
OUTLIER_OBJECTIVES: tuple[str, ...] = ("energy", "entropy", "extra_class", "rba")


@dataclass
class OutlierConfig:
    """Negative objects pasted into training images (outlier exposure) and the objective that
    teaches the model to reject them (``train.outliers:``; off by default)."""

    source: str = "none"
    """"none" (off), "synthetic" (shapes drawn here and cut-outs of other training images)
    or "folder" (RGBA cut-outs in ``folder``)."""
    folder: str | None = None
    """Folder of RGBA PNG cut-outs (``source: folder``; ``hazardseg data outliers coco`` writes
    one)."""
    prob: float = 0.5
    """Probability that a training image gets pasted objects."""
    count: tuple[int, int] = (1, 2)
    """Objects pasted into such an image (uniform in the range)."""
    scale: tuple[float, float] | None = (0.1, 0.35)
    """Longer side of a pasted object as a fraction of the image's shorter side (null: folder
    cut-outs at their own size, as RbA pastes COCO objects)."""
    blend: str = "feather"
    """"feather" (alpha softened over 1-2 px at the outline) or "none" (hard edges)."""
    cutpaste: float = 0.3
    """``source: synthetic``: share of the objects cut from other training images (CutPaste)."""
    objective: str = "energy"
    """"energy" (Liu et al. 2020 margin loss), "entropy" (outlier exposure: cross-entropy to
    the uniform distribution), "extra_class" (outliers as a (K+1)-th class of logit 0) or
    "rba" (RbA's loss on the semantic map; mask2former models)."""
    weight: float = 0.1
    """Weight of the objective beside the segmentation loss."""
    m_in: float = -12.0
    """Margin of known-class pixels: energy (``energy``) or RbA score (``rba``, e.g. -1)
    above it is penalised."""
    m_out: float = -6.0
    """Margin of outlier pixels: energy or RbA score (``rba``, e.g. -0.1) below it is
    penalised."""


OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")
SCHEDULERS: tuple[str, ...] = ("plateau", "poly", "none")
WEIGHT_METHODS: tuple[str, ...] = ("median_freq", "inverse_log")


@dataclass
class TrainConfig:
    """Optimisation schedule."""

    epochs: int = 40
    batch_size: int = 4
    optimizer: str = "adam"
    """"adam", "adamw" or "sgd"."""
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9
    scheduler: str = "plateau"
    """"plateau" (ReduceLROnPlateau on validation mIoU), "poly" or "none"."""
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    poly_power: float = 0.9
    aux_weight: float = 0.4
    class_weights: bool = False
    """Weight the loss by inverse class frequency of the training split."""
    class_weight_method: str = "median_freq"
    """"median_freq" (median frequency / class frequency) or "inverse_log" (1 / ln(1.02 + p))."""
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float = 0.0
    grad_clip: float | None = None
    amp: str = "auto"
    """Precision on CUDA: "auto" (bf16 if supported else fp16), "bf16", "fp16" or "fp32"
    ("none" reads as "fp32"); the vocabulary of ``eval.precision``."""
    channels_last: bool = True
    """Use channels_last memory format on CUDA."""
    cpu_bf16: bool = False
    """Autocast to bfloat16 on the CPU too."""
    val_every_epochs: int = 1
    val_every_iters: int | None = None
    max_iters_per_epoch: int | None = None
    seed: int = 0
    deterministic: bool = False
    log_every_iters: int = 10
    device: str = "auto"
    """"auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N"."""
    sync_bn: bool = False
    """Convert BatchNorm layers to SyncBatchNorm in multi-GPU (CUDA) runs."""
    num_threads: int | None = None
    """CPU threads torch may use per process (None = torch's default)."""
    bn_momentum: float | None = None
    """Override the momentum of every BatchNorm layer (None = the model's own; torchvision's
    MobileNetV3 uses 0.01, slow for short runs from scratch)."""
    init: str | None = None
    """Checkpoint whose weights start the run (fine-tuning; same model and classes)."""
    outliers: OutlierConfig = field(default_factory=OutlierConfig)


@dataclass
class ExperimentConfig:
    """One experiment: model, data, augmentation, schedule and evaluation."""

    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Build a validated config from a nested mapping; unknown keys raise ConfigError."""
    return _build(ExperimentConfig, data or {}, "")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Return the config as plain nested dicts/lists (tuples become lists), for YAML/JSON."""

    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [convert(x) for x in v]
        return v

    return convert(cfg)


def apply_overrides(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Apply ``section.key=value`` strings (values parsed as YAML) and re-validate."""
    data = config_to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value, e.g. train.lr=0.001")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = data
        cls: type = ExperimentConfig
        for i, part in enumerate(parts):
            types_ = typing.get_type_hints(cls)
            if part not in types_:
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"unknown config key '{where}'" + _suggest(part, sorted(types_)))
            if i == len(parts) - 1:
                if _is_dataclass_type(types_[part]):
                    raise ConfigError(f"config key '{key}' is a section; set one of its keys")
                try:
                    node[part] = yaml.safe_load(raw) if raw.strip() else ""
                except yaml.YAMLError:
                    node[part] = raw
            else:
                if not _is_dataclass_type(types_[part]):
                    raise ConfigError(f"config key '{'.'.join(parts[: i + 1])}' has no sub-keys")
                node = node[part]
                cls = types_[part]
    return config_from_dict(data)


def read_yaml_file(path: str | os.PathLike[str], what: str = "file") -> Any:
    """Parse a YAML file (an empty file gives {}); ConfigError if missing, not UTF-8 or not
    YAML (only plain YAML: tags that would build Python objects are refused)."""
    p = Path(path)
    if not p.is_file():
        if p.exists():
            raise ConfigError(f"{p}: {what} is a folder or special file, not a regular file")
        raise ConfigError(f"{what} not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: {what} is not UTF-8 text (byte {exc.start}: {exc.reason}); expected YAML"
        ) from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{p}: not valid YAML ({detail})") from None
    except RecursionError:
        raise ConfigError(f"{p}: YAML nested too deeply") from None


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Load a YAML config file (or the defaults when ``path`` is None) and apply overrides."""
    if path is not None:
        p = Path(path)
        data = read_yaml_file(p, "config file")
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top level")
        try:
            cfg = config_from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None
    else:
        cfg = ExperimentConfig()
    return apply_overrides(cfg, overrides or [])


def dump_config(cfg: ExperimentConfig) -> str:
    """Return the resolved config as YAML text."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: ExperimentConfig, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML atomically."""
    atomic_write_text(path, dump_config(cfg))
