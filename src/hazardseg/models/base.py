"""The common interface of every hazardseg segmentation network."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from hazardseg.errors import HazardsegError


class SegmentationModel(nn.Module):
    """Base class: ``model(x)`` -> ``{"out": logits}`` at input resolution.

    Subclasses set ``name``, ``num_classes``, ``has_aux`` and ``feature_dim`` and implement
    :meth:`forward`. ``"aux"`` is returned only in training mode when ``has_aux``;
    ``return_features=True`` adds ``"features"``, the ``feature_dim``-channel map that feeds the
    final 1x1 classifier (what feature-based anomaly methods use).
    """

    name: str = ""
    num_classes: int = 0
    has_aux: bool = False
    feature_dim: int = 0
    feature_stride: int = 0
    """Input pixels per feature-map pixel (nominal, for documentation and listing)."""

    @property
    def build_options(self) -> dict[str, Any]:
        """Builder options (beyond num_classes) needed to rebuild this model; saved in
        checkpoints."""
        return {}

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, num_classes={self.num_classes}, has_aux={self.has_aux}, "
            f"feature_dim={self.feature_dim}"
        )


def upsample_to(x: Tensor, size: torch.Size | tuple[int, int]) -> Tensor:
    """Bilinearly resize a (N,C,h,w) map to ``size`` (H, W); identity when already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def check_input(x: Tensor, name: str) -> None:
    """Reject inputs that are not a float (N,3,H,W) batch with a message suggesting the fix."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise HazardsegError(
            f"{name}: expected a float tensor of shape (N, 3, H, W), got {tuple(x.shape)}; "
            "add a batch dimension with x.unsqueeze(0) for a single image"
        )
    if not x.is_floating_point():
        raise HazardsegError(
            f"{name}: expected a float image batch, got dtype {x.dtype}; convert uint8 images "
            "with x.float() / 255 and normalise them (ImageNet mean/std)"
        )
