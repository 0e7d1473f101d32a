"""Build the requested anomaly methods and give them fitted state (loaded or fitted once)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from hazardseg import distributed
from hazardseg.anomaly import AnomalyMethod, create_method, fit_methods, parse_methods
from hazardseg.anomaly.state import (
    empty_state,
    load_method_state,
    matching_thresholds,
    restore_methods,
    write_state,
)
from hazardseg.config import EvalConfig
from hazardseg.data.streethazards import StreetHazards
from hazardseg.data.transforms import build_eval_transform
from hazardseg.errors import CheckpointError, DataError, HazardsegError
from hazardseg.models.inference import parse_tta

log = logging.getLogger(__name__)


def build_methods(
    names: str | list[str], options: dict[str, dict[str, Any]] | None = None
) -> dict[str, AnomalyMethod]:
    """Create the methods named in ``names`` ("all" or a comma list) with per-method options."""
    options = options or {}
    selected = parse_methods(names)
    unknown = sorted(set(options) - set(selected))
    if unknown:
        raise HazardsegError(f"options given for method(s) not selected: {', '.join(unknown)}")
    return {n: create_method(n, **options.get(n, {})) for n in selected}


def fit_description(
    split: str,
    max_images: int | None,
    resize: str,
    methods: dict[str, AnomalyMethod],
    tta: str | None = None,
) -> dict[str, dict[str, Any]]:
    """How each method that needs fitting is fitted (stored with, and compared to, its state).

    ``tta`` is recorded only when test-time augmentation is on (the fitting pass uses it).
    """
    desc: dict[str, Any] = {"split": split, "max_images": max_images, "resize": resize}
    aug = parse_tta(tta)
    if aug is not None:
        desc["tta"] = str(aug)
    return {n: dict(desc) for n, m in methods.items() if m.needs_fit}


def read_state_file(path: Path, checkpoint_sha256: str) -> dict[str, Any]:
    """The anomaly state file at ``path`` if it exists and belongs to this checkpoint."""
    if not path.is_file():
        return empty_state(checkpoint_sha256)
    state = load_method_state(path)
    if state["checkpoint_sha256"] != checkpoint_sha256:
        log.warning("%s belongs to another checkpoint; it will be replaced", path)
        return empty_state(checkpoint_sha256)
    return state


def fit_loader(
    root: str | os.PathLike[str],
    split: str,
    resize: str,
    max_images: int | None,
    batch_size: int,
    workers: int,
) -> DataLoader:
    """Images of the fitting split with the evaluation transform; masks at label resolution
    (used by the methods that fit on ground truth)."""
    ds = StreetHazards(root, split, build_eval_transform(resize), max_images=max_images)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)


def prepare_methods(
    methods: dict[str, AnomalyMethod],
    model: nn.Module,
    checkpoint_sha256: str,
    state_path: Path,
    *,
    data_root: str | os.PathLike[str],
    spec: EvalConfig,
    device: torch.device,
    save: bool = True,
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Restore or fit every method that needs it; save newly fitted state beside the checkpoint.

    The spec gives the fitting data (``fit_split``, ``fit_images``, ``resize``), the loader
    (``batch_size``, ``workers``) and ``tta``. All methods to fit share ONE pass over the
    fitting images (:func:`hazardseg.anomaly.base.fit_methods`). Fitting runs on rank 0 and
    its state is broadcast. Returns ``(state file content, restored names, fitted names)``.
    """
    fit_split, fit_images, resize, tta = spec.fit_split, spec.fit_images, spec.resize, spec.tta
    fit = fit_description(fit_split, fit_images, resize, methods, tta)
    state = read_state_file(state_path, checkpoint_sha256)
    restored = restore_methods(state, methods, checkpoint_sha256, fit)
    todo = [n for n, m in methods.items() if m.needs_fit and n not in restored]
    if not todo:
        return state, restored, []
    fitted_states: dict[str, Any] = {}
    if distributed.rank() == 0:
        try:
            loader = fit_loader(
                data_root, fit_split, resize, fit_images, spec.batch_size, spec.workers
            )
        except DataError as exc:
            raise DataError(
                f"{exc} (method(s) {', '.join(todo)} need fitting data: choose another "
                "--fit-split, or leave them out of --methods)"
            ) from None
        log.info(
            "fitting %s on %d %s images (one pass)", ", ".join(todo), len(loader.dataset), fit_split
        )
        fit_methods({n: methods[n] for n in todo}, model, loader, device, fit_images, tta)
        for name in todo:
            fitted_states[name] = methods[name].state_dict()
    fitted_states = distributed.broadcast_object(None, fitted_states)
    for name in todo:
        methods[name].load_state_dict(fitted_states[name])
        # a refitted method has a new score scale: its old calibrated threshold is invalid
        state.setdefault("thresholds", {}).pop(name, None)
        state["methods"][name] = {
            "options": dict(methods[name].options),
            "fit": dict(fit[name]),
            "state": fitted_states[name],
        }
    if save and distributed.rank() == 0:
        try:
            write_state(state_path, state)
        except OSError as exc:
            log.warning("could not save fitted anomaly state to %s (%s)", state_path, exc)
    return state, restored, todo


def calibrated_thresholds(
    state: dict[str, Any],
    methods: dict[str, AnomalyMethod],
    checkpoint_sha256: str,
    spec: Any = None,
) -> dict[str, dict[str, Any]]:
    """Saved thresholds that match the checkpoint, each method's options and the spec's
    resize / precision / TTA settings."""
    try:
        return matching_thresholds(state, methods, checkpoint_sha256, spec)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"anomaly state: malformed thresholds ({exc})") from None
