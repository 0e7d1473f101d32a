"""The split pass shared by ``evaluate`` and ``calibrate``: load, shard, forward, score.

:func:`prepare` loads the checkpoint and gives every requested method its fitted state;
:func:`split_pass` then yields one :class:`PassBatch` per batch of this rank's shard with the
logits at the label size and every method's scores, all on the model's device.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from hazardseg import distributed
from hazardseg.anomaly import AnomalyMethod
from hazardseg.anomaly.state import default_state_path
from hazardseg.config import EvalConfig
from hazardseg.data.classes import KNOWN_CLASS_NAMES
from hazardseg.data.streethazards import StreetHazards
from hazardseg.data.transforms import build_eval_transform
from hazardseg.evaluation.methods import build_methods, calibrated_thresholds, prepare_methods
from hazardseg.evaluation.spec import RunOptions, split_options
from hazardseg.models.inference import forward_logits


@dataclass
class Prepared:
    """A loaded model with its methods, fitted state and calibrated thresholds."""

    model: nn.Module
    info: dict[str, Any]
    methods: dict[str, AnomalyMethod]
    device: torch.device
    state: dict[str, Any]
    state_path: Path
    restored: list[str]
    fitted: list[str]
    thresholds: dict[str, dict[str, Any]]
    fit_s: float

    @property
    def class_names(self) -> list[str] | None:
        """Class names stored in the checkpoint (the StreetHazards names for 13 classes)."""
        n = int(self.info["num_classes"])
        names = self.info.get("class_names")
        return names or (list(KNOWN_CLASS_NAMES) if n == len(KNOWN_CLASS_NAMES) else None)


def load_for_evaluation(
    checkpoint: str | os.PathLike[str],
    spec: EvalConfig | None,
    options: dict[str, Any],
) -> tuple[nn.Module, dict[str, Any], EvalConfig, RunOptions]:
    """Load the checkpoint on the CPU and resolve the spec against its stored ``eval:``
    section; returns ``(model, info, spec, run options)``."""
    from hazardseg.models.checkpoint import load_model

    model_name = options.get("model_name")
    model, info = load_model(checkpoint, model_name=model_name, device="cpu")
    resolved, run = split_options(spec, options, info.get("config"))
    return model, info, resolved, run


def prepare(
    checkpoint: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    loaded: tuple[nn.Module, dict[str, Any], EvalConfig, RunOptions],
    device: torch.device,
) -> Prepared:
    """Move the loaded model to ``device``; restore or fit every method of the spec."""
    model, info, spec, run = loaded
    methods = build_methods(spec.methods, run.method_options)
    model = model.to(device).eval()
    sha = info["sha256"]
    spath = Path(run.state_path) if run.state_path is not None else default_state_path(checkpoint)
    t0 = time.perf_counter()
    state, restored, fitted = prepare_methods(
        methods, model, sha, spath, data_root=data_root, spec=spec, device=device,
        save=run.save_state,
    )  # fmt: skip
    fit_s = time.perf_counter() - t0
    thresholds = calibrated_thresholds(state, methods, sha, spec)
    return Prepared(model, info, methods, device, state, spath, restored, fitted, thresholds, fit_s)


def open_split(
    data_root: str | os.PathLike[str], split: str, spec: EvalConfig, max_images: int | None
) -> StreetHazards:
    """The split with the spec's evaluation transform."""
    transform = build_eval_transform(spec.resize, spec.at_label_resolution)
    return StreetHazards(data_root, split, transform, max_images=max_images)


@dataclass
class PassBatch:
    """One batch of a split pass, on the model's device."""

    ids: list[str]
    """Sample keys (``rel`` paths) of the images."""
    mask: torch.Tensor
    """(N, H, W) int64 class ids at the evaluation resolution."""
    logits: torch.Tensor
    """(N, C, H, W) float32 logits resized to the mask's size."""
    scores: dict[str, torch.Tensor]
    """Method name -> (N, H, W) anomaly scores."""
    data_s: float
    """Seconds spent waiting for the data loader."""
    forward_s: float
    """Seconds of the network forward pass (and logit resize; every view with TTA)."""
    methods_s: float
    """Seconds of the anomaly scores."""


def _progress(iterable: Any, total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False)


def _sync(device: torch.device) -> None:
    """Wait for queued CUDA work so that stage timings are attributed correctly."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def split_pass(
    prepared: Prepared,
    dataset: StreetHazards,
    spec: EvalConfig,
    *,
    methods: dict[str, AnomalyMethod] | None = None,
    progress: bool = False,
    desc: str = "pass",
) -> Iterator[PassBatch]:
    """Yield every batch of this rank's shard of ``dataset``: forward once, score every
    method (``methods``, default: all prepared ones). Call under ``torch.inference_mode()``."""
    methods = prepared.methods if methods is None else methods
    device = prepared.device
    shard = Subset(dataset, distributed.shard_indices(len(dataset)))
    loader = DataLoader(
        shard,
        batch_size=spec.batch_size,
        shuffle=False,
        num_workers=spec.workers,
        pin_memory=device.type == "cuda",
    )
    show = progress and distributed.rank() == 0
    need_features = any(m.needs_features for m in methods.values())
    t_prev = time.perf_counter()
    for batch in _progress(loader, len(loader), show, desc):
        t0 = time.perf_counter()
        mask = batch["mask"].to(device, non_blocking=True)
        logits, feats = forward_logits(
            prepared.model,
            batch["image"],
            device,
            mask.shape[-2:],
            features=need_features,
            precision=spec.precision,
            tta=spec.tta,
        )
        _sync(device)
        t1 = time.perf_counter()
        scores = {n: m.score(logits, feats) for n, m in methods.items()}
        _sync(device)
        t2 = time.perf_counter()
        yield PassBatch(
            ids=list(batch["path"]),
            mask=mask,
            logits=logits,
            scores=scores,
            data_s=t0 - t_prev,
            forward_s=t1 - t0,
            methods_s=t2 - t1,
        )
        t_prev = time.perf_counter()
