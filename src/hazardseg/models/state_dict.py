"""Matching a state dict to a registered model: take it out of a loaded file, infer its
number of classes, check its keys and shapes, load it (the auxiliary head may be absent)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from hazardseg.errors import CheckpointError, HazardsegError
from hazardseg.models.pretrained import check_state_keys
from hazardseg.models.registry import build_on_meta

AUX_PREFIX = "aux_classifier."

log = logging.getLogger(__name__)


def extract_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
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


def infer_num_classes(
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


def _check_keys(
    own: Mapping[str, Tensor], state: Mapping[str, Tensor], path: Path, name: str
) -> list[str]:
    """Raise CheckpointError unless ``state`` has the keys and shapes of ``own`` (model
    ``name``'s state dict); the auxiliary head may be absent as a whole, never in part.
    Returns the missing auxiliary-head keys."""
    aux_own = [k for k in own if k.startswith(AUX_PREFIX)]
    whole_aux_absent = bool(aux_own) and not any(k in state for k in aux_own)
    return check_state_keys(
        own,
        state,
        f"{path}: state dict does not match {name}",
        f"{path}: {name} weight",
        tolerated_missing=(AUX_PREFIX,) if whole_aux_absent else (),
    )


def load_state_into(model: nn.Module, state: Mapping[str, Tensor], path: Path) -> bool:
    """Load ``state`` into ``model`` with exact key and shape checks.

    Only the auxiliary head may be absent (a warning; it keeps its initial weights).
    Returns whether the auxiliary head was loaded.
    """
    own = model.state_dict()
    aux_missing = _check_keys(own, state, path, getattr(model, "name", type(model).__name__))
    if aux_missing:
        message = (
            f"{path}: no auxiliary head weights ({AUX_PREFIX}*) in the state dict; "
            "the auxiliary head keeps its initial weights"
        )
        warnings.warn(message, stacklevel=3)
        log.warning(message)
    model.load_state_dict(state, strict=not aux_missing)
    return not aux_missing and any(k.startswith(AUX_PREFIX) for k in own)


def check_before_building(
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
    _check_keys(meta.state_dict(), state, path, name)
