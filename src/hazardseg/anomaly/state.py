"""Saving and loading fitted anomaly-method state and calibrated thresholds.

File layout (``anomaly_state.pt`` beside the checkpoint, loaded with ``weights_only=True``)::

    {"format": 1, "checkpoint_sha256": str,
     "methods": {name: {"options": {...}, "fit": {...}, "state": {...}}},
     "thresholds": {name: {"threshold", "target", "split", "options", "num_pixels"}}}

``fit`` records how the state was fitted (split, number of images, resize policy), so a state
is reused only for the same checkpoint, options and fitting data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from hazardseg.anomaly.base import AnomalyMethod
from hazardseg.errors import CheckpointError
from hazardseg.io import atomic_path

STATE_FORMAT = 1
STATE_FILENAME = "anomaly_state.pt"


def default_state_path(checkpoint: str | os.PathLike[str]) -> Path:
    """``anomaly_state.pt`` in the checkpoint's folder."""
    return Path(checkpoint).parent / STATE_FILENAME


def empty_state(checkpoint_sha256: str) -> dict[str, Any]:
    """A state file content with no methods and no thresholds."""
    return {
        "format": STATE_FORMAT,
        "checkpoint_sha256": checkpoint_sha256,
        "methods": {},
        "thresholds": {},
    }


def save_method_state(
    path: str | os.PathLike[str],
    methods: dict[str, AnomalyMethod],
    checkpoint_sha256: str,
    thresholds: dict[str, dict[str, Any]] | None = None,
    fit: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write the fitted ``methods`` (those that need fitting) and ``thresholds`` atomically.

    ``fit`` maps a method name to a description of its fitting data. Returns what was written.
    """
    obj = empty_state(checkpoint_sha256)
    for name, method in methods.items():
        if method.needs_fit:
            obj["methods"][name] = {
                "options": dict(method.options),
                "fit": dict((fit or {}).get(name, {})),
                "state": method.state_dict(),
            }
    obj["thresholds"] = {k: dict(v) for k, v in (thresholds or {}).items()}
    write_state(path, obj)
    return obj


def write_state(path: str | os.PathLike[str], obj: dict[str, Any]) -> None:
    """Write a state dictionary (already in the file layout) atomically."""
    _validate(obj, Path(path))
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_method_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and validate an anomaly state file (``weights_only=True``)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"anomaly state file not found: {p}")
    from hazardseg.models.weights_only import load_weights_only

    obj = load_weights_only(p, "anomaly state file")
    _validate(obj, p)
    return obj


def _validate(obj: Any, path: Path) -> None:
    if not isinstance(obj, dict) or obj.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not an anomaly state file (expected format {STATE_FORMAT})")
    if not isinstance(obj.get("checkpoint_sha256"), str):
        raise CheckpointError(f"{path}: anomaly state without 'checkpoint_sha256'")
    for key in ("methods", "thresholds"):
        if not isinstance(obj.get(key), dict):
            raise CheckpointError(f"{path}: anomaly state '{key}' must be a mapping")
    for name, entry in obj["methods"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("state"), dict):
            raise CheckpointError(f"{path}: anomaly state of method '{name}' is malformed")
    for name, entry in obj["thresholds"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("threshold"), float | int):
            raise CheckpointError(f"{path}: threshold of method '{name}' is malformed")


def restore_methods(
    state: dict[str, Any],
    methods: dict[str, AnomalyMethod],
    checkpoint_sha256: str,
    fit: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """Load the saved state into every method whose checkpoint, options and fit data match.

    Returns the names of the methods restored; others are left untouched (still unfitted).
    """
    if state.get("checkpoint_sha256") != checkpoint_sha256:
        return []
    restored = []
    for name, method in methods.items():
        entry = state["methods"].get(name)
        if not method.needs_fit or entry is None:
            continue
        if entry.get("options") != method.options:
            continue
        if fit is not None and entry.get("fit") != fit.get(name, {}):
            continue
        method.load_state_dict(entry["state"])
        restored.append(name)
    return restored


THRESHOLD_SPEC_KEYS: tuple[str, ...] = ("resize", "at_label_resolution", "precision", "tta")
"""Evaluation-spec settings a calibrated threshold depends on (they change the scores)."""


def threshold_spec(spec: Any) -> dict[str, Any]:
    """The settings of an evaluation spec (``EvalConfig``) that a threshold is tied to."""
    return {k: getattr(spec, k) for k in THRESHOLD_SPEC_KEYS if hasattr(spec, k)}


def matching_thresholds(
    state: dict[str, Any],
    methods: dict[str, AnomalyMethod],
    checkpoint_sha256: str,
    spec: Any = None,
) -> dict[str, dict[str, Any]]:
    """Calibrated thresholds saved for this checkpoint, the methods' current options and,
    when ``spec`` (an ``EvalConfig``) is given, the same resize policy, label resolution,
    precision and TTA (settings an entry does not record are not compared)."""
    if state.get("checkpoint_sha256") != checkpoint_sha256:
        return {}
    wanted = threshold_spec(spec) if spec is not None else {}
    out = {}
    for name, method in methods.items():
        entry = state["thresholds"].get(name)
        if entry is None or entry.get("options", method.options) != method.options:
            continue
        if any(k in entry and str(entry[k]) != str(v) for k, v in wanted.items()):
            continue
        out[name] = entry
    return out
