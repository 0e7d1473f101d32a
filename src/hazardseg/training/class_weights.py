"""Class weights of the loss from the training labels' pixel counts, cached in
RUN_DIR/class_weights.json."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from hazardseg import distributed
from hazardseg.config import WEIGHT_METHODS, ExperimentConfig
from hazardseg.data.registry import DatasetDef, get_dataset
from hazardseg.distributed import DistContext
from hazardseg.errors import ConfigError, DataError
from hazardseg.io import atomic_write_json
from hazardseg.run_folder import RunFolder


def class_pixel_counts(
    label_paths: Iterable[str | os.PathLike[str]],
    num_classes: int,
    dataset: DatasetDef | str = "streethazards",
) -> np.ndarray:
    """Count pixels of each known class id (0..num_classes-1) over ``dataset``'s label files.

    Anomaly pixels, ignore pixels and anything else outside the known ids are not counted.
    """
    decoder = get_dataset(dataset)
    counts = np.zeros(num_classes, dtype=np.int64)
    for path in label_paths:
        ids = decoder.read_label(Path(path)).reshape(-1)
        counts += np.bincount(ids[ids < num_classes], minlength=num_classes)[:num_classes]
    return counts


def class_weights_from_counts(counts: np.ndarray, method: str = "median_freq") -> np.ndarray:
    """Loss weight per class from pixel counts.

    ``median_freq``: median(f) / f_c with f the pixel frequencies of the classes present;
    ``inverse_log``: 1 / ln(1.02 + f_c) (ENet). Classes with no pixels get weight 0 under
    median_freq (they never appear as targets) and the largest weight under inverse_log.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise DataError("no labelled training pixels: cannot compute class weights")
    freq = counts / total
    if method == "median_freq":
        present = freq > 0
        med = float(np.median(freq[present]))
        weights = np.zeros_like(freq)
        weights[present] = med / freq[present]
        return weights
    if method == "inverse_log":
        return 1.0 / np.log(1.02 + freq)
    raise ConfigError(
        f"train.class_weight_method={method!r}: expected one of {', '.join(WEIGHT_METHODS)}"
    )


def class_weight_record(
    label_paths: list[Path],
    num_classes: int,
    method: str,
    dataset: DatasetDef | str = "streethazards",
) -> dict[str, object]:
    """Count the classes over ``label_paths`` and return the JSON record cached in RUN_DIR."""
    counts = class_pixel_counts(label_paths, num_classes, dataset)
    weights = class_weights_from_counts(counts, method)
    return {
        "method": method,
        "num_images": len(label_paths),
        "pixel_counts": counts.tolist(),
        "weights": weights.tolist(),
    }


def read_class_weight_cache(
    cache: Path, method: str, num_images: int, num_classes: int
) -> np.ndarray | None:
    """Return cached weights when ``cache`` holds a record for the same method and image count."""
    if not cache.is_file():
        return None
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data.get("method") != method or data.get("num_images") != num_images:
            return None
        w = np.asarray(data["weights"], dtype=np.float64)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return w if w.shape == (num_classes,) else None


def run_class_weights(
    cfg: ExperimentConfig, out_dir: Path, label_paths: list[Path], ctx: DistContext
) -> torch.Tensor | None:
    """The loss weights of a run with ``train.class_weights`` (None without): rank 0 reuses
    RUN_DIR/class_weights.json when it fits, else counts ``label_paths`` and writes it; every
    process receives rank 0's weights."""
    if not cfg.train.class_weights:
        return None
    method, n = cfg.train.class_weight_method, cfg.model.num_classes
    weights = None
    if ctx.is_main:
        cache = RunFolder(out_dir).class_weights
        cached = read_class_weight_cache(cache, method, len(label_paths), n)
        if cached is None:
            record = class_weight_record(label_paths, n, method, cfg.data.dataset)
            atomic_write_json(cache, record)
            weights = record["weights"]
        else:
            weights = cached.tolist()
    weights = distributed.broadcast_object(ctx, weights)
    return torch.tensor(weights, dtype=torch.float32)
