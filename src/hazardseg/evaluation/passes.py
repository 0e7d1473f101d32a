"""The split pass shared by ``evaluate`` and ``calibrate``: load, shard, forward, score.

:func:`prepare` puts the loaded checkpoint on its device and gives every requested method its
fitted state;
:func:`split_pass` then yields one :class:`PassBatch` per batch of this rank's shard with the
logits at the label size and every method's scores, all on the model's device.
"""

from __future__ import annotations

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
from hazardseg.anomaly.state import AnomalyState, Restored
from hazardseg.anomaly.thresholds import ThresholdSettings
from hazardseg.config import EvalConfig
from hazardseg.data.registry import DATASETS
from hazardseg.data.split import DataSource, SplitDataset
from hazardseg.data.transforms import build_eval_transform
from hazardseg.errors import DataError
from hazardseg.evaluation.methods import build_methods, prepare_methods, threshold_settings
from hazardseg.evaluation.spec import RunOptions, state_file
from hazardseg.models.checkpoint import LoadedCheckpoint
from hazardseg.models.forward import forward_logits
from hazardseg.progress import track


@dataclass
class Prepared:
    """A loaded model on its device with its methods, fitted state and calibrated thresholds."""

    checkpoint: LoadedCheckpoint
    model: nn.Module
    methods: dict[str, AnomalyMethod]
    device: torch.device
    state: AnomalyState
    fits: Restored
    settings: ThresholdSettings
    """What a threshold under this spec on this device is tied to."""
    thresholds: dict[str, dict[str, Any]]
    """Method -> its calibrated threshold entry under ``settings`` (methods without one absent)."""
    fit_s: float

    @property
    def info(self) -> dict[str, Any]:
        """What the checkpoint file says of the model (see ``load_model``)."""
        return self.checkpoint.info

    @property
    def class_names(self) -> list[str] | None:
        """Class names stored in the checkpoint."""
        return self.checkpoint.class_names

    def fit_of(self, name: str) -> dict[str, Any] | None:
        """The fit description of a fitted method's state (None for methods without a fit)."""
        return self.fits.fits.get(name)

    def missing_threshold(self, name: str) -> str:
        """Why ``name`` has no calibrated threshold here (names the settings that differ)."""
        return self.state.missing_threshold(self.methods[name], self.fit_of(name), self.settings)


def prepare(
    checkpoint: LoadedCheckpoint,
    data: DataSource,
    spec: EvalConfig,
    run: RunOptions,
    device: torch.device,
    with_methods: bool = True,
) -> Prepared:
    """Move the model to ``device``; restore or fit every method of the spec (none without
    ``with_methods``: a dataset without anomalies); look up each method's calibrated
    threshold."""
    methods = (
        build_methods(spec.methods, run.method_options, checkpoint.family) if with_methods else {}
    )
    model = checkpoint.model.to(device).eval()
    state = AnomalyState.open(state_file(run, checkpoint.path), checkpoint.sha256)
    t0 = time.perf_counter()
    fits = prepare_methods(
        methods,
        model,
        state,
        data=data,
        spec=spec,
        device=device,
        run=run,
        training=training_source(checkpoint),
    )
    fit_s = time.perf_counter() - t0
    settings = threshold_settings(spec, device)
    thresholds = {}
    for name, method in methods.items():
        entry = state.threshold_for(method, fits.fits.get(name), settings)
        if entry is not None:
            thresholds[name] = entry
    return Prepared(checkpoint, model, methods, device, state, fits, settings, thresholds, fit_s)


def training_source(checkpoint: LoadedCheckpoint) -> DataSource | None:
    """The data the model was trained on, when the root its checkpoint records exists."""
    data = checkpoint.config.get("data") or {}
    root, name = data.get("root"), checkpoint.dataset
    if not root or not name or not Path(root).is_dir() or name not in DATASETS:
        return None
    return DataSource(Path(root), DATASETS[name])


def scored_classes(checkpoint: LoadedCheckpoint, data: DataSource, split: str) -> int | None:
    """The number of classes segmentation is scored over (None: the dataset has no class
    labels, only anomaly masks); DataError when the split's labels are not public or the
    checkpoint's classes are not the dataset's."""
    dataset = data.dataset
    dataset.require_labels(split)
    known = dataset.labels.num_classes
    if known == 0:
        return None
    names = checkpoint.class_names
    if checkpoint.num_classes != known or (names and list(names) != list(dataset.class_names)):
        trained = checkpoint.info.get("dataset") or (checkpoint.config.get("data") or {}).get(
            "dataset", "its training data"
        )
        raise DataError(
            f"{checkpoint.path}: the model predicts {checkpoint.num_classes} classes of "
            f"{trained} ({', '.join((names or [])[:4])}...), but {dataset.name} labels "
            f"{known} classes ({', '.join(dataset.class_names[:4])}...): segmentation scores "
            "would compare different classes; evaluate on a dataset with the model's classes, "
            "or on an anomaly-only set"
        )
    return known


def open_split(
    data: DataSource, split: str, spec: EvalConfig, max_images: int | None
) -> SplitDataset:
    """The split with the spec's evaluation transform."""
    transform = build_eval_transform(spec.resize, spec.at_label_resolution)
    return data.open(split, transform, max_images=max_images)


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


def _sync(device: torch.device) -> None:
    """Wait for queued CUDA work so that stage timings are attributed correctly."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def split_pass(
    prepared: Prepared,
    dataset: SplitDataset,
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
    for batch in track(loader, len(loader), desc, unit="batch", enabled=show):
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
