"""hazardseg checkpoints: save atomically, load with ``weights_only=True``; ``load_model``
builds the model of a checkpoint or of a bare torchvision-style state dict.

A checkpoint is one ``torch.save`` file holding a plain dict::

    {"format": "hazardseg-checkpoint", "format_version": 1, "hazardseg_version", "created",
     "model_name", "model_options", "num_classes", "class_names", "dataset", "config", "epoch",
     "best_metric",
     "model": state_dict, "optimizer", "scheduler", "scaler", "rng", "extra"}

Everything in it is a tensor or a plain Python value, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hazardseg import __version__
from hazardseg.data.registry import DATASETS, DatasetDef, get_dataset, model_classes
from hazardseg.errors import CheckpointError, HazardsegError
from hazardseg.io import atomic_path
from hazardseg.models.registry import check_num_classes, create_model, get_model_spec, list_models
from hazardseg.models.rng import capture_rng_state
from hazardseg.models.state_dict import (
    check_before_building,
    extract_state_dict,
    infer_num_classes,
    load_state_into,
)
from hazardseg.models.weights_only import load_weights_only

FORMAT = "hazardseg-checkpoint"
FORMAT_VERSION = 1

_PLAIN = (str, int, float, bool, type(None), Tensor, torch.dtype, torch.device, torch.Size)


def _check_plain(obj: Any, where: str) -> None:
    """Raise CheckpointError when ``obj`` holds something weights_only loading would refuse."""
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, str | int | float | bool | type(None) | tuple):
                raise CheckpointError(f"cannot save checkpoint: key {key!r} in {where}")
            _check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"cannot save checkpoint: {where} is a {type(obj).__name__}; only tensors and plain "
        "Python values (dict, list, str, numbers, None) can be loaded with weights_only=True"
    )


def _unwrap(model: nn.Module) -> nn.Module:
    """The underlying model of a DDP / DataParallel / torch.compile wrapper."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


@dataclasses.dataclass(frozen=True)
class TrainingState:
    """What a resumable checkpoint stores beside the weights: the ``state_dict()`` of each
    object given, as the checkpoint's "optimizer", "scheduler" and "scaler" entries."""

    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    """A torch lr scheduler or anything else with ``state_dict()``."""
    scaler: torch.amp.GradScaler | None = None


def _state_dict_or_none(obj: Any) -> Any:
    return obj.state_dict() if obj is not None else None


def _as_plain(value: Any) -> Any:
    """Dataclasses as dicts and tuples as lists, recursively (a config dataclass in the form
    ``hazardseg.config.config_to_dict`` gives)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _as_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_as_plain(v) for v in value]
    return value


BARE_STATE_DICT_DATASET = "streethazards"
"""The dataset assumed for a bare state dict's classes (and for checkpoints that predate the
dataset registry)."""


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    model_name: str,
    class_names: list[str] | tuple[str, ...],
    config: Mapping[str, Any] | Any,
    epoch: int,
    best_metric: float | None,
    training: TrainingState | None = None,
    rng: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a hazardseg checkpoint atomically and return its path.

    ``config`` is the resolved experiment config as a plain dict (a config dataclass is
    converted; its ``data.dataset`` is recorded as the dataset the classes are those of);
    ``training`` makes the checkpoint resumable; ``rng`` saves the random generators' states;
    ``extra`` is any further plain data. Raises CheckpointError, before writing anything, when
    some entry could not be loaded back with ``weights_only=True``.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = _as_plain(config)
    training = training or TrainingState()
    net = _unwrap(model)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hazardseg_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model_name": str(model_name),
        "model_options": dict(getattr(net, "build_options", {})),
        "num_classes": int(getattr(net, "num_classes", 0) or len(class_names)),
        "class_names": [str(c) for c in class_names],
        "dataset": (dict(config).get("data") or {}).get("dataset"),
        "config": dict(config),
        "epoch": int(epoch),
        "best_metric": None if best_metric is None else float(best_metric),
        "model": state,
        "optimizer": _state_dict_or_none(training.optimizer),
        "scheduler": _state_dict_or_none(training.scheduler),
        "scaler": _state_dict_or_none(training.scaler),
        "rng": capture_rng_state() if rng else None,
        "extra": dict(extra) if extra is not None else {},
    }
    for key, value in payload.items():
        _check_plain(value, key)
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    return target


def is_hazardseg_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is a hazardseg checkpoint (not a bare state dict)."""
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT


def _validate(ckpt: Mapping[str, Any], path: Path) -> None:
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this hazardseg "
            f"supports ({FORMAT_VERSION}); upgrade hazardseg"
        )
    for key in ("model_name", "model", "num_classes"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: hazardseg checkpoint lacks the {key!r} entry")
    if not isinstance(ckpt["model_name"], str):
        raise CheckpointError(
            f"{path}: model_name {ckpt['model_name']!r}; expected the name of a registered model"
        )
    try:
        check_num_classes(ckpt["num_classes"], f"{path}: num_classes")
    except HazardsegError as exc:
        raise CheckpointError(str(exc)) from None
    options = ckpt.get("model_options")
    if options is not None and not isinstance(options, Mapping):
        raise CheckpointError(f"{path}: model_options {options!r}; expected a mapping")


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a hazardseg checkpoint (``weights_only=True``) as a dict.

    Raises CheckpointError for missing, corrupt or truncated files, files holding pickled
    Python objects, and bare state dicts (load those with :func:`load_model`).
    """
    p = Path(path)
    obj = load_weights_only(p, "checkpoint")
    if not is_hazardseg_checkpoint(obj):
        raise CheckpointError(
            f"{p}: not a hazardseg checkpoint (a bare state dict?); load it with "
            "load_model(path, model_name=...)"
        )
    _validate(obj, p)
    return dict(obj)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(
    path: str | os.PathLike[str],
    model_name: str | None = None,
    device: str | torch.device = "cpu",
    *,
    num_classes: int | None = None,
    model_options: Mapping[str, Any] | None = None,
    bare_as: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model stored in ``path`` and load its weights; returns ``(model, info)``.

    ``path`` is a hazardseg checkpoint or a bare state dict (torchvision-style, optionally
    ``module.``-prefixed), for which ``model_name`` is required (and ``model_options``, the
    builder options such as ``img_size``, where the default does not fit). ``bare_as``: the
    model name of a bare state dict without requiring a checkpoint to hold that model (its
    caller compares the names itself). ``num_classes``
    (optional) is checked against the file. The model is returned in eval mode on
    ``device``. ``info`` holds ``model_name``, ``model_options``, ``num_classes``,
    ``class_names``, ``config``, ``epoch``, ``best_metric``, ``sha256``, ``path``, ``format``
    and ``aux_loaded``.
    """
    p = Path(path)
    obj = load_weights_only(p, "checkpoint")
    if is_hazardseg_checkpoint(obj):
        _validate(obj, p)
        found = str(obj["model_name"])
        if model_name is not None and model_name != found:
            raise CheckpointError(f"{p}: checkpoint holds model {found!r}, expected {model_name!r}")
        get_model_spec(found)
        stored_classes = obj["num_classes"]
        if num_classes is not None and num_classes != stored_classes:
            raise CheckpointError(
                f"{p}: checkpoint has {stored_classes} classes, expected {num_classes}"
            )
        state = extract_state_dict(obj["model"], p)
        options = dict(obj.get("model_options") or {})
        info: dict[str, Any] = {
            "model_name": found,
            "num_classes": stored_classes,
            "class_names": list(obj.get("class_names") or []),
            "dataset": obj.get("dataset"),
            "config": dict(obj.get("config") or {}),
            "epoch": obj.get("epoch"),
            "best_metric": obj.get("best_metric"),
            "format": FORMAT,
        }
    else:
        model_name = model_name or bare_as
        if model_name is None:
            raise CheckpointError(
                f"{p}: is a bare state dict; pass the model name it belongs to "
                f"(--model NAME; one of {', '.join(list_models())})"
            )
        get_model_spec(model_name)
        state = extract_state_dict(obj, p)
        options = dict(model_options or {})
        inferred = infer_num_classes(state, model_name, options)
        default = get_dataset(BARE_STATE_DICT_DATASET)
        expected = num_classes if num_classes is not None else default.labels.num_classes
        if inferred is not None and inferred != expected:
            raise CheckpointError(
                f"{p}: state dict has {inferred} output classes, expected {expected}"
            )
        info = {
            "model_name": model_name,
            "num_classes": expected,
            "class_names": (
                list(default.class_names) if expected == default.labels.num_classes else []
            ),
            "dataset": default.name if expected == default.labels.num_classes else None,
            "config": {},
            "epoch": None,
            "best_metric": None,
            "format": "state_dict",
        }
    check_before_building(p, info["model_name"], info["num_classes"], options, state)
    model = create_model(info["model_name"], num_classes=info["num_classes"], **options)
    info["model_options"] = options
    info["aux_loaded"] = load_state_into(model, state, p)
    info["sha256"] = file_sha256(p)
    info["path"] = str(p)
    model.to(device)
    model.eval()
    return model, info


@dataclasses.dataclass
class LoadedCheckpoint:
    """A checkpoint's model (on the CPU until a command moves it) and what the file says of it
    (see :func:`load_model` for ``info``)."""

    path: Path
    model: nn.Module
    info: dict[str, Any]

    @property
    def sha256(self) -> str:
        """The file's sha256 (ties fitted state and thresholds to these weights)."""
        return str(self.info["sha256"])

    @property
    def config(self) -> dict[str, Any]:
        """The training config stored in the checkpoint ({} for a bare state dict)."""
        return dict(self.info.get("config") or {})

    @property
    def model_name(self) -> str:
        """The registered model name."""
        return str(self.info["model_name"])

    @property
    def family(self) -> str:
        """The model's family in the model registry (which anomaly methods apply to it)."""
        return get_model_spec(self.model_name).family

    @property
    def num_classes(self) -> int:
        """Number of known classes the model predicts."""
        return int(self.info["num_classes"])

    @property
    def class_names(self) -> list[str] | None:
        """Class names stored in the checkpoint (else those of its dataset when the number of
        classes is the dataset's)."""
        names = self.info.get("class_names")
        if names:
            return list(names)
        default = DATASETS.get(self.dataset or BARE_STATE_DICT_DATASET)
        if default is not None and self.num_classes == default.labels.num_classes:
            return list(default.class_names)
        return None

    @property
    def dataset(self) -> str | None:
        """The dataset the model was trained on (recorded in the checkpoint, else its
        config's ``data.dataset``; checkpoints made before datasets were recorded trained on
        StreetHazards)."""
        name = self.info.get("dataset") or (self.config.get("data") or {}).get("dataset")
        if not name and self.info.get("format") == FORMAT and self.config.get("data"):
            name = BARE_STATE_DICT_DATASET
        return str(name) if name else None

    def classes(self) -> DatasetDef:
        """The dataset definition that draws this model's predictions."""
        return model_classes(self.dataset, self.class_names, self.num_classes)


def open_checkpoint(
    checkpoint: str | os.PathLike[str] | LoadedCheckpoint,
    model_name: str | None = None,
    *,
    bare_as: str | None = None,
) -> LoadedCheckpoint:
    """``checkpoint`` loaded on the CPU (returned as is when already loaded); ``model_name``
    names the model of a bare state dict (see :func:`load_model` for ``bare_as``)."""
    if isinstance(checkpoint, LoadedCheckpoint):
        return checkpoint
    model, info = load_model(checkpoint, model_name=model_name, device="cpu", bare_as=bare_as)
    return LoadedCheckpoint(Path(checkpoint), model, info)
