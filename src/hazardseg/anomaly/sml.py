"""Standardized Max Logits (Jung et al., ICCV 2021) with boundary suppression and smoothing.

This follows the authors' implementation (github.com/shjung13/Standardized-max-logits:
``network/deepv3.py`` and ``calculate_statistics.py``); ``tests/test_sml_reference.py``
compares it with an independent re-implementation of their definition (max abs difference
<= 1e-5 per pixel).

Statistics: per predicted class c, the mean and the unbiased (n - 1) variance of the max logit
over the fitting pixels predicted as c (ground truth is not used), accumulated exactly as
float64 count / sum / sum of squares, so they do not depend on batch size or order.
Score: ``-(max_logit - mean[c]) / std[c]`` at pixels predicted c, after (optionally) iterative
boundary suppression and dilated Gaussian smoothing of the standardized map:

* boundary of the predicted label map: ``dilation(3x3 cross) != erosion(3x3 square)``, pixels
  outside the image ignored (kornia's default ``geodesic`` border);
* iteration i (0-based) widens it to the pixels within L1 distance ``w_i`` (a diamond), with
  ``w_i = width - (width // iterations) * i - 1`` and 0 for the last iteration;
* boundary pixels take the mean of the non-boundary pixels of their 3x3 window, both the map
  and the mask replicate-padded by one pixel (a pixel whose window holds no non-boundary pixel
  keeps its value);
* smoothing: a ``size`` x ``size`` Gaussian (sigma) with dilation ``dilation``, replicate padding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from hazardseg.anomaly.base import AnomalyMethod
from hazardseg.anomaly.registry import register_method
from hazardseg.errors import HazardsegError

_CROSS = ((1, 0), (-1, 0), (0, 1), (0, -1))
_SQUARE = (*_CROSS, (1, 1), (1, -1), (-1, 1), (-1, -1))


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
        """Per-class mean and unbiased (n - 1) standard deviation, as the authors' statistics.

        A class seen fewer than twice has no unbiased variance: it uses the statistics of all
        fitting pixels pooled (a class never seen also takes the pooled mean).
        """
        n_all = float(self.count.sum())
        if n_all < 2:
            raise HazardsegError(f"SML fit: need at least 2 pixels, got {int(n_all)}")
        s_all = float(self.total.sum())
        g_mean = s_all / n_all
        g_var = max((float(self.total_sq.sum()) - s_all * g_mean) / (n_all - 1), 0.0)
        seen = self.count > 0
        enough = self.count > 1
        mean = torch.where(
            seen, self.total / self.count.clamp_min(1), torch.tensor(g_mean, dtype=torch.float64)
        )
        var = (self.total_sq - self.total * mean) / (self.count - 1).clamp_min(1)
        var = torch.where(enough, var, torch.tensor(g_var, dtype=torch.float64)).clamp_min(0.0)
        std = var.sqrt().clamp_min(1e-6)
        return mean, std


def _neighbour_reduce(
    x: torch.Tensor,
    offsets: tuple[tuple[int, int], ...],
    reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Reduce each pixel of (..., H, W) with its neighbours at ``offsets`` inside the image."""
    h, w = x.shape[-2:]
    out = x.clone()
    for dy, dx in offsets:
        oy = slice(max(-dy, 0), h - max(dy, 0))
        ox = slice(max(-dx, 0), w - max(dx, 0))
        iy = slice(max(dy, 0), h - max(-dy, 0))
        ix = slice(max(dx, 0), w - max(-dx, 0))
        out[..., oy, ox] = reduce(out[..., oy, ox], x[..., iy, ix])
    return out


def label_boundary(pred: torch.Tensor) -> torch.Tensor:
    """The authors' boundary of a (N, H, W) label map: 3x3 cross dilation != 3x3 square erosion.

    Pixels outside the image are ignored. A pixel whose only other label is a diagonal
    neighbour is on the boundary only when that neighbour's label is the smaller one.
    """
    dil = _neighbour_reduce(pred, _CROSS, torch.maximum)
    ero = _neighbour_reduce(pred, _SQUARE, torch.minimum)
    return dil != ero


def widen(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixels within L1 distance ``radius`` of a True pixel of the bool (..., H, W) ``mask``."""
    for _ in range(radius):
        mask = _neighbour_reduce(mask, _CROSS, torch.logical_or)
    return mask


def boundary_mask(pred: torch.Tensor, width: int) -> torch.Tensor:
    """:func:`label_boundary` of ``pred`` (N, H, W) widened by a diamond of radius ``width``."""
    return widen(label_boundary(pred), width)


def boundary_widths(width: int, iterations: int) -> list[int]:
    """Diamond radius of each suppression iteration: ``width - step * i - 1``, 0 for the last."""
    if iterations <= 0:
        return []
    step = width // iterations
    return [
        0 if width == 0 or i == iterations - 1 else width - step * i - 1 for i in range(iterations)
    ]


def _box_sum3(x: torch.Tensor) -> torch.Tensor:
    """Sum over the 3x3 windows of a (N, 1, H + 2, W + 2) padded map -> (N, 1, H, W)."""
    h, w = x.shape[-2] - 2, x.shape[-1] - 2
    rows = x[..., 0:h, :] + x[..., 1 : h + 1, :] + x[..., 2 : h + 2, :]
    return rows[..., 0:w] + rows[..., 1 : w + 1] + rows[..., 2 : w + 2]


def suppress_boundaries(
    score: torch.Tensor, pred: torch.Tensor, width: int = 4, iterations: int = 4
) -> torch.Tensor:
    """Iterative boundary suppression of a (N, H, W) map given the predicted labels (N, H, W).

    Iteration i uses :func:`label_boundary` widened by ``boundary_widths(width,
    iterations)[i]``; each boundary pixel takes the mean of the non-boundary pixels in its 3x3
    window (map and mask replicate-padded), or keeps its value when there is none.
    """
    if width < 0 or iterations < 0:
        raise HazardsegError(
            f"SML: boundary_width and boundary_iterations must be >= 0, got {width}, {iterations}"
        )
    if iterations == 0:
        return score
    if width % iterations != 0:
        raise HazardsegError(
            f"SML: boundary_width ({width}) must be a multiple of "
            f"boundary_iterations ({iterations})"
        )
    widths = boundary_widths(width, iterations)
    masks = [label_boundary(pred)]
    for _ in range(max(widths)):
        masks.append(widen(masks[-1], 1))
    x = score
    for r in widths:
        b = masks[r]
        keep = (~b).to(x.dtype)
        total = _box_sum3(F.pad(torch.where(b, 0.0, x)[:, None], (1, 1, 1, 1), mode="replicate"))
        count = _box_sum3(F.pad(keep[:, None], (1, 1, 1, 1), mode="replicate"))
        total, count = total[:, 0], count[:, 0]
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


@register_method(
    "sml",
    rank=40,
    description=(
        "Standardized Max Logits (Jung et al., ICCV 2021) as the authors' code computes them: "
        "per-class standardized max logit, iterative boundary suppression, dilated Gaussian "
        "smoothing (tested against a re-implementation of their definition)"
    ),
)
class SML(AnomalyMethod):
    """Standardized Max Logits as the authors compute it; score = the negative of the
    standardized max logit after boundary suppression and dilated smoothing (module docstring).
    """

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
        if boundary_width < 0 or boundary_iterations < 0:
            raise HazardsegError(
                f"SML: boundary_width and boundary_iterations must be >= 0, got "
                f"{boundary_width}, {boundary_iterations}"
            )
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

    def fit_begin(self) -> None:
        self._stats: ClassStats | None = None

    def fit_update(
        self,
        logits: torch.Tensor,
        features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        if getattr(self, "_stats", None) is None:
            self._stats = ClassStats(logits.shape[1])
        assert self._stats is not None
        m, c = logits.max(dim=1)
        self._stats.update(m, c)

    def fit_end(self) -> None:
        stats = getattr(self, "_stats", None)
        if stats is None:
            raise HazardsegError("SML fit: no fitting batches were given")
        self.fit_from_stats(stats)
        self._stats = None

    def fit_from_stats(self, stats: ClassStats) -> None:
        """Set the per-class mean/std from accumulated statistics."""
        self.mean, self.std = (t.float() for t in stats.mean_std())
        self.fitted = True

    @property
    def label_reach(self) -> int:
        """The label boundary (1 pixel), its widening, one pixel per suppression iteration
        and the dilated smoothing's radius: how far one pixel's predicted class acts."""
        reach = 0
        if self.boundary_suppression and self.boundary_iterations:
            widths = boundary_widths(self.boundary_width, self.boundary_iterations)
            reach += 1 + max(widths) + self.boundary_iterations
        if self.smoothing:
            reach += self.dilation * (self.kernel_size - 1) // 2
        return reach

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
