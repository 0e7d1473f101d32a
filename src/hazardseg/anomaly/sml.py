"""Standardized Max Logits (Jung et al., ICCV 2021) with boundary suppression and smoothing.

Statistics: per predicted class c, the mean and standard deviation of the max logit over the
fitting pixels predicted as c (ground truth is not used), accumulated exactly as float64
count / sum / sum of squares, so they do not depend on batch size or order.
Score: ``-(max_logit - mean[c]) / std[c]`` at pixels predicted c, then (optionally) iterative
boundary suppression and dilated Gaussian smoothing of the standardized map.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hazardseg.anomaly.base import AnomalyMethod, model_outputs
from hazardseg.anomaly.filters import box_sum3, dilate3, label_boundary
from hazardseg.errors import HazardsegError


class ClassStats:
    """Streaming per-class count, sum and sum of squares (float64) of a per-pixel value."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.count = torch.zeros(num_classes, dtype=torch.float64)
        self.total = torch.zeros(num_classes, dtype=torch.float64)
        self.total_sq = torch.zeros(num_classes, dtype=torch.float64)

    def update(self, values: torch.Tensor, classes: torch.Tensor) -> None:
        """Add ``values`` (any shape) grouped by ``classes`` (same shape, ids 0..C-1)."""
        v = values.reshape(-1).to(torch.float64).cpu()
        c = classes.reshape(-1).to(torch.int64).cpu()
        n = self.num_classes
        self.count += torch.bincount(c, minlength=n).to(torch.float64)
        self.total += torch.bincount(c, weights=v, minlength=n)
        self.total_sq += torch.bincount(c, weights=v * v, minlength=n)

    def merge(self, other: ClassStats) -> None:
        """Add another accumulator's sums into this one."""
        self.count += other.count
        self.total += other.total
        self.total_sq += other.total_sq

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class mean and (population) std; classes never seen use the pooled values."""
        n_all = float(self.count.sum())
        if n_all == 0:
            raise HazardsegError("SML fit: no pixels were seen")
        g_mean = float(self.total.sum()) / n_all
        g_var = max(float(self.total_sq.sum()) / n_all - g_mean * g_mean, 0.0)
        seen = self.count > 0
        safe = self.count.clamp_min(1)
        mean = torch.where(seen, self.total / safe, torch.full_like(self.total, g_mean))
        var = torch.where(
            seen, self.total_sq / safe - mean * mean, torch.full_like(self.total, g_var)
        ).clamp_min(0.0)
        std = var.sqrt().clamp_min(1e-6)
        return mean, std


def boundary_mask(pred: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels within ``width`` pixels (Chebyshev) of a change of the predicted label.

    ``pred`` (N, H, W) int; a pixel is on the boundary at width 0 when the 3x3 dilation and
    erosion of the label map differ there.
    """
    b = label_boundary(pred)
    for _ in range(width):
        b = dilate3(b)
    return b


def suppress_boundaries(
    score: torch.Tensor, pred: torch.Tensor, width: int = 4, iterations: int = 4
) -> torch.Tensor:
    """Iterative boundary suppression of a (N, H, W) map given the predicted labels.

    Iteration i (0-based) uses the boundary of width ``width - (i + 1) * width // iterations``
    (3, 2, 1, 0 for the defaults); boundary pixels with at least one non-boundary 3x3 neighbour
    take the mean of those neighbours, so values flow inwards from the boundary's edges.
    """
    if iterations <= 0:
        return score
    if width % iterations != 0:
        raise HazardsegError(
            f"SML: boundary_width ({width}) must be a multiple of "
            f"boundary_iterations ({iterations})"
        )
    step = width // iterations
    widths = [width - (i + 1) * step for i in range(iterations)]
    masks = {0: label_boundary(pred)}
    for w in range(1, max(widths) + 1):
        masks[w] = dilate3(masks[w - 1])
    x = score
    for w in widths:
        b = masks[w]
        keep = (~b).to(x.dtype)
        total = box_sum3(x * keep)
        count = box_sum3(keep)
        x = torch.where(b & (count > 0), total / count.clamp_min(1.0), x)
    return x


def gaussian_kernel(size: int = 7, sigma: float = 1.0) -> torch.Tensor:
    """Normalised 2-D Gaussian kernel of shape (size, size), float32."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r * r) / (2 * sigma * sigma))
    k = torch.outer(g, g)
    return (k / k.sum()).float()


def dilated_smoothing(
    score: torch.Tensor, size: int = 7, sigma: float = 1.0, dilation: int = 6
) -> torch.Tensor:
    """Dilated Gaussian smoothing of a (N, H, W) map with replication padding (one conv)."""
    pad = dilation * (size - 1) // 2
    x = F.pad(score.unsqueeze(1), (pad, pad, pad, pad), mode="replicate")
    k = gaussian_kernel(size, sigma).to(x.device, x.dtype).view(1, 1, size, size)
    return F.conv2d(x, k, dilation=dilation)[:, 0]


class SML(AnomalyMethod):
    """Standardized Max Logits; score = negative standardized max logit (post-processed)."""

    name = "sml"
    needs_fit = True
    needs_features = False

    def __init__(
        self,
        boundary_suppression: bool = True,
        boundary_width: int = 4,
        boundary_iterations: int = 4,
        smoothing: bool = True,
        kernel_size: int = 7,
        sigma: float = 1.0,
        dilation: int = 6,
    ) -> None:
        super().__init__()
        if boundary_iterations > 0 and boundary_width % boundary_iterations != 0:
            raise HazardsegError(
                f"SML: boundary_width ({boundary_width}) must be a multiple of "
                f"boundary_iterations ({boundary_iterations})"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise HazardsegError(f"SML: kernel_size must be odd and >= 1, got {kernel_size}")
        if sigma <= 0 or dilation < 1:
            raise HazardsegError(
                f"SML: sigma must be > 0 and dilation >= 1, got {sigma}, {dilation}"
            )
        self.boundary_suppression = bool(boundary_suppression)
        self.boundary_width = int(boundary_width)
        self.boundary_iterations = int(boundary_iterations)
        self.smoothing = bool(smoothing)
        self.kernel_size = int(kernel_size)
        self.sigma = float(sigma)
        self.dilation = int(dilation)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    @property
    def options(self) -> dict[str, Any]:
        return {
            "boundary_suppression": self.boundary_suppression,
            "boundary_width": self.boundary_width,
            "boundary_iterations": self.boundary_iterations,
            "smoothing": self.smoothing,
            "kernel_size": self.kernel_size,
            "sigma": self.sigma,
            "dilation": self.dilation,
        }

    def fit(
        self,
        model: nn.Module,
        loader: Iterable[dict[str, Any]],
        device: str | torch.device = "cpu",
        max_images: int | None = None,
    ) -> None:
        stats: ClassStats | None = None
        for logits, _ in model_outputs(model, loader, device, max_images):
            if stats is None:
                stats = ClassStats(logits.shape[1])
            m, c = logits.max(dim=1)
            stats.update(m, c)
        assert stats is not None
        self.fit_from_stats(stats)

    def fit_from_stats(self, stats: ClassStats) -> None:
        """Set the per-class mean/std from accumulated statistics."""
        self.mean, self.std = (t.float() for t in stats.mean_std())
        self.fitted = True

    def standardized_max_logit(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``((max_logit - mean[c]) / std[c], c)`` with c the predicted class."""
        self.check_fitted()
        assert self.mean is not None and self.std is not None
        if logits.shape[1] != self.mean.numel():
            raise HazardsegError(
                f"SML: fitted for {self.mean.numel()} classes, logits have {logits.shape[1]}"
            )
        m, c = logits.float().max(dim=1)
        mean = self.mean.to(m.device)[c]
        std = self.std.to(m.device)[c]
        return (m - mean) / std, c

    def score(self, logits: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        s, pred = self.standardized_max_logit(logits)
        if self.boundary_suppression:
            s = suppress_boundaries(s, pred, self.boundary_width, self.boundary_iterations)
        if self.smoothing:
            s = dilated_smoothing(s, self.kernel_size, self.sigma, self.dilation)
        return -s

    def state_dict(self) -> dict[str, Any]:
        self.check_fitted()
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            mean = torch.as_tensor(state["mean"], dtype=torch.float32)
            std = torch.as_tensor(state["std"], dtype=torch.float32)
        except (KeyError, TypeError) as exc:
            raise HazardsegError(f"SML state: expected 'mean' and 'std' tensors ({exc})") from None
        if mean.shape != std.shape or mean.dim() != 1 or not math.isfinite(float(std.sum())):
            raise HazardsegError(
                "SML state: 'mean' and 'std' must be finite 1-D tensors of equal size"
            )
        self.mean, self.std = mean, std
        self.fitted = True
