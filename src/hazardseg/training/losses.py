"""Training loss: cross-entropy over the known classes, optional class weights, aux head."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from hazardseg.data.labels import IGNORE_INDEX
from hazardseg.errors import ConfigError


class SegmentationLoss(torch.nn.Module):
    """``CE(out) + aux_weight * CE(aux)`` (+ ``outlier(outputs, target)``, the
    outlier-exposure objective, when given); targets outside ``0..C-1`` (anomaly, pasted
    outliers, 255) are ignored by the cross-entropy. A mask-classification model returns its
    ``"queries"`` in training: ``query_loss(queries, target)`` (its set-prediction loss)
    replaces the cross-entropy."""

    def __init__(
        self,
        num_classes: int,
        aux_weight: float = 0.4,
        weight: torch.Tensor | None = None,
        outlier: torch.nn.Module | None = None,
        query_loss: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if aux_weight < 0 or not math.isfinite(aux_weight):
            raise ConfigError(f"train.aux_weight={aux_weight}: expected a number >= 0")
        self.num_classes = int(num_classes)
        self.aux_weight = float(aux_weight)
        self.register_buffer("weight", weight.float() if weight is not None else None)
        self.outlier = outlier
        self.query_loss = query_loss

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
        if "queries" in outputs and self.query_loss is not None:
            loss = self.query_loss(outputs["queries"], target)
        else:
            loss = self._ce(outputs["out"], target)
        if "aux" in outputs and self.aux_weight > 0:
            loss = loss + self.aux_weight * self._ce(outputs["aux"], target)
        if self.outlier is not None:
            loss = loss + self.outlier(outputs, target)
        return loss
