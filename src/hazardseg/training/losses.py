"""Training loss: cross-entropy over the known classes, optional class weights, aux head."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hazardseg.data.classes import IGNORE_INDEX
from hazardseg.data.streethazards import load_label
from hazardseg.errors import ConfigError, DataError

WEIGHT_METHODS: tuple[str, ...] = ("median_freq", "inverse_log")


def class_pixel_counts(
    label_paths: Iterable[str | os.PathLike[str]], num_classes: int
) -> np.ndarray:
    """Count pixels of each known class id (0..num_classes-1) over annotation PNGs.

    Anomaly pixels, ignore pixels and anything else outside the known ids are not counted.
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    for path in label_paths:
        ids = load_label(path).reshape(-1)
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


class SegmentationLoss(torch.nn.Module):
    """``CE(out) + aux_weight * CE(aux)``; targets outside ``0..C-1`` (anomaly, 255) ignored."""

    def __init__(
        self, num_classes: int, aux_weight: float = 0.4, weight: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        if aux_weight < 0 or not math.isfinite(aux_weight):
            raise ConfigError(f"train.aux_weight={aux_weight}: expected a number >= 0")
        self.num_classes = int(num_classes)
        self.aux_weight = float(aux_weight)
        self.register_buffer("weight", weight.float() if weight is not None else None)

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = torch.where(
            (target >= 0) & (target < self.num_classes),
            target,
            torch.full_like(target, IGNORE_INDEX),
        )
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(
                logits, size=target.shape[-2:], mode="bilinear", align_corners=False
            )
        if not bool((target != IGNORE_INDEX).any()):
            # Only ignored pixels: no loss and a zero (not NaN) gradient.
            return logits.float().sum() * 0.0
        return F.cross_entropy(
            logits.float(), target, weight=self.weight, ignore_index=IGNORE_INDEX
        )

    def forward(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Loss of a model output dict (``out`` and optionally ``aux``) against ``target``."""
        loss = self._ce(outputs["out"], target)
        if "aux" in outputs and self.aux_weight > 0:
            loss = loss + self.aux_weight * self._ce(outputs["aux"], target)
        return loss


def class_weight_record(
    label_paths: list[Path], num_classes: int, method: str
) -> dict[str, object]:
    """Count the classes over ``label_paths`` and return the JSON record cached in RUN_DIR."""
    counts = class_pixel_counts(label_paths, num_classes)
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
