"""hazardseg checkpoints: save atomically, load with ``weights_only=True``, import bare
torchvision-style state dicts.

A checkpoint is one ``torch.save`` file holding a plain dict::

    {"format": "hazardseg-checkpoint", "format_version": 1, "hazardseg_version", "created",
     "model_name", "model_options", "num_classes", "class_names", "config", "epoch", "best_metric",
     "model": state_dict, "optimizer", "scheduler", "scaler", "rng", "extra"}

Everything in it is a tensor or a plain Python value, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import os
import pickle
import random
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hazardseg import __version__
from hazardseg.data.classes import KNOWN_CLASS_NAMES, NUM_CLASSES
from hazardseg.errors import CheckpointError, HazardsegError
from hazardseg.io import atomic_path
from hazardseg.models.pretrained import check_state_keys
from hazardseg.models.registry import (
    build_on_meta,
    check_num_classes,
    create_model,
    get_model_spec,
    list_models,
)

FORMAT = "hazardseg-checkpoint"
FORMAT_VERSION = 1
AUX_PREFIX = "aux_classifier."

log = logging.getLogger(__name__)

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


def capture_rng_state() -> dict[str, Any]:
    """Torch, numpy, python ``random`` (and CUDA when available) RNG states as plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(ckpt: Mapping[str, Any]) -> bool:
    """Restore the RNG states saved in ``ckpt`` (a checkpoint dict or its ``"rng"`` entry).

    Returns False when the checkpoint holds no RNG state.
    """
    rng = ckpt.get("rng", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(rng, Mapping) or "torch" not in rng:
        return False
    torch.set_rng_state(rng["torch"])
    npy = rng["numpy"]
    np.random.set_state(
        (
            npy["name"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    py = rng["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    if "cuda" in rng and torch.cuda.is_available():
        cuda_states = list(rng["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)
    return True


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    model_name: str,
    class_names: list[str] | tuple[str, ...],
    config: Mapping[str, Any] | Any,
    epoch: int,
    best_metric: float | None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    rng: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a hazardseg checkpoint atomically and return its path.

    ``config`` is the resolved experiment config as a plain dict (a config dataclass is
    converted); ``extra`` is any further plain data. Raises CheckpointError, before writing
    anything, when some entry could not be loaded back with ``weights_only=True``.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        from hazardseg.config import config_to_dict

        config = config_to_dict(config)
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
        "config": dict(config),
        "epoch": int(epoch),
        "best_metric": None if best_metric is None else float(best_metric),
        "model": state,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": capture_rng_state() if rng else None,
        "extra": dict(extra) if extra is not None else {},
    }
    for key, value in payload.items():
        _check_plain(value, key)
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    return target


def load_weights_only(path: str | os.PathLike[str], what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with one-line CheckpointErrors
    naming the file and saying what happened: not found, not a regular file, a file that
    would run code when loaded (pickled Python objects), corrupt or truncated. ``what`` names
    the kind of file in the messages (e.g. "anomaly state file")."""
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise CheckpointError(f"{path}: a folder or special file, not a {what}")
        raise CheckpointError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        lowered = text.lower()
        if "unsupported global" in lowered or "allowed global" in lowered:
            found = re.search(r"unsupported global:?\s*(?:GLOBAL\s+)?([\w.]+)", text, re.I)
            detail = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"{path}: refused: a file that would run code when loaded (it contains pickled "
                f"Python objects{detail}, which a plain torch.load executes); hazardseg loads "
                f"every {what} with weights_only=True and only accepts tensors and plain values"
            ) from exc
        detail = _torch_detail(text) or type(exc).__name__
        raise CheckpointError(
            f"{path}: corrupt or truncated {what}, or not a PyTorch file ({detail})"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        first = _torch_detail(str(exc)) or type(exc).__name__
        raise CheckpointError(f"{path}: corrupt or truncated {what} ({first})") from exc
    except MemoryError:
        raise CheckpointError(f"{path}: not enough memory to load this {what}") from None


def _torch_load(path: Path) -> Any:
    return load_weights_only(path, "checkpoint")


def _torch_detail(text: str) -> str:
    """The informative line of a torch.load error, without torch's advice about weights_only."""
    text = text.split("WeightsUnpickler error:")[-1]
    for line in text.strip().splitlines():
        line = line.split("  Check the documentation")[0].strip()
        low = line.lower()
        if not line or "weights_only" in low or "check the documentation" in low:
            continue
        return line
    return ""


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
    obj = _torch_load(p)
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


def _extract_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    """The tensor state dict of a bare file: plain, ``{"state_dict": ...}`` or ``{"model": ...}``,
    with a DDP ``module.`` prefix removed."""
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: expected a hazardseg checkpoint or a model state dict")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state dict entries are not tensors: {bad[:3]}")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _infer_num_classes(
    state: Mapping[str, Tensor], model_name: str, options: Mapping[str, Any]
) -> int | None:
    """Number of classes from the final classifier weight of a state dict, if recognisable."""
    own = build_on_meta(model_name, 1, **options).state_dict()
    for key, value in own.items():
        if key.startswith(AUX_PREFIX) or not key.endswith("weight") or value.ndim == 0:
            continue
        if value.shape[0] == 1 and key in state and state[key].ndim == value.ndim:
            return int(state[key].shape[0])
    return None


def load_state_into(model: nn.Module, state: Mapping[str, Tensor], path: Path) -> bool:
    """Load ``state`` into ``model`` with exact key and shape checks.

    Only the auxiliary head may be absent (a warning; it keeps its initial weights).
    Returns whether the auxiliary head was loaded.
    """
    own = model.state_dict()
    name = getattr(model, "name", type(model).__name__)
    # the aux head may be absent as a whole, never in part
    aux_own = [k for k in own if k.startswith(AUX_PREFIX)]
    whole_aux_absent = bool(aux_own) and not any(k in state for k in aux_own)
    aux_missing = check_state_keys(
        own,
        state,
        f"{path}: state dict does not match {name}",
        f"{path}: {name} weight",
        tolerated_missing=(AUX_PREFIX,) if whole_aux_absent else (),
    )
    if aux_missing:
        message = (
            f"{path}: no auxiliary head weights ({AUX_PREFIX}*) in the state dict; "
            "the auxiliary head keeps its initial weights"
        )
        warnings.warn(message, stacklevel=3)
        log.warning(message)
    model.load_state_dict(state, strict=not aux_missing)
    return not aux_missing and any(k.startswith(AUX_PREFIX) for k in own)


def _check_shapes_before_building(
    path: Path, name: str, num_classes: int, options: Mapping[str, Any], state: Mapping[str, Tensor]
) -> None:
    """Compare ``state`` with the model's shapes on the meta device (no memory) so a file
    claiming a huge ``num_classes`` or odd builder options fails before anything is allocated."""
    try:
        meta = build_on_meta(name, num_classes, **options)
    except CheckpointError:
        raise
    except HazardsegError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: model options {dict(options)!r} do not build {name!r} ({exc})"
        ) from None
    own = meta.state_dict()
    whole_aux_absent = not any(k in state for k in own if k.startswith(AUX_PREFIX))
    check_state_keys(
        own,
        state,
        f"{path}: state dict does not match {name}",
        f"{path}: {name} weight",
        tolerated_missing=(AUX_PREFIX,) if whole_aux_absent else (),
    )


def load_model(
    path: str | os.PathLike[str],
    model_name: str | None = None,
    device: str | torch.device = "cpu",
    *,
    num_classes: int | None = None,
    model_options: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model stored in ``path`` and load its weights; returns ``(model, info)``.

    ``path`` is a hazardseg checkpoint or a bare state dict (torchvision-style, optionally
    ``module.``-prefixed), for which ``model_name`` is required (and ``model_options``, the
    builder options such as ``img_size``, where the default does not fit). ``num_classes``
    (optional) is checked against the file. The model is returned in eval mode on
    ``device``. ``info`` holds ``model_name``, ``model_options``, ``num_classes``,
    ``class_names``, ``config``, ``epoch``, ``best_metric``, ``sha256``, ``path``, ``format``
    and ``aux_loaded``.
    """
    p = Path(path)
    obj = _torch_load(p)
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
        state = _extract_state_dict(obj["model"], p)
        options = dict(obj.get("model_options") or {})
        info: dict[str, Any] = {
            "model_name": found,
            "num_classes": stored_classes,
            "class_names": list(obj.get("class_names") or []),
            "config": dict(obj.get("config") or {}),
            "epoch": obj.get("epoch"),
            "best_metric": obj.get("best_metric"),
            "format": FORMAT,
        }
    else:
        if model_name is None:
            raise CheckpointError(
                f"{p}: is a bare state dict; pass the model name it belongs to "
                f"(--model NAME; one of {', '.join(list_models())})"
            )
        get_model_spec(model_name)
        state = _extract_state_dict(obj, p)
        options = dict(model_options or {})
        inferred = _infer_num_classes(state, model_name, options)
        expected = num_classes if num_classes is not None else NUM_CLASSES
        if inferred is not None and inferred != expected:
            raise CheckpointError(
                f"{p}: state dict has {inferred} output classes, expected {expected}"
            )
        info = {
            "model_name": model_name,
            "num_classes": expected,
            "class_names": list(KNOWN_CLASS_NAMES) if expected == NUM_CLASSES else [],
            "config": {},
            "epoch": None,
            "best_metric": None,
            "format": "state_dict",
        }
    _check_shapes_before_building(p, info["model_name"], info["num_classes"], options, state)
    model = create_model(info["model_name"], num_classes=info["num_classes"], **options)
    info["model_options"] = options
    info["aux_loaded"] = load_state_into(model, state, p)
    info["sha256"] = file_sha256(p)
    info["path"] = str(p)
    model.to(device)
    model.eval()
    return model, info
