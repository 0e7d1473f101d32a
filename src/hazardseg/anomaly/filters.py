"""Small neighbourhood filters on (N, ..., H, W) tensors built from shifted slices.

On the CPU these are several times faster than max/avg pooling or convolution with a
one-channel kernel, and they are exact (integer and boolean ops, or float sums). Also
:func:`resize_map`, which brings a score map from the feature grid to the logits' size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_boundary(pred: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3x3 neighbourhood (inside the image) holds more than one label.

    Equals ``dilation != erosion`` of the label map with 3x3 windows and replicated borders.
    """
    b = torch.zeros(pred.shape, dtype=torch.bool, device=pred.device)
    for dy, dx in ((1, 0), (0, 1), (1, 1), (1, -1)):
        a = pred[..., dy:, max(dx, 0) : pred.shape[-1] + min(dx, 0)]
        c = pred[..., : pred.shape[-2] - dy, max(-dx, 0) : pred.shape[-1] + min(-dx, 0)]
        diff = a != c
        b[..., dy:, max(dx, 0) : pred.shape[-1] + min(dx, 0)] |= diff
        b[..., : pred.shape[-2] - dy, max(-dx, 0) : pred.shape[-1] + min(-dx, 0)] |= diff
    return b


def dilate3(mask: torch.Tensor) -> torch.Tensor:
    """3x3 binary dilation of a boolean (…, H, W) mask (outside the image counts as False)."""
    v = mask.clone()
    v[..., 1:, :] |= mask[..., :-1, :]
    v[..., :-1, :] |= mask[..., 1:, :]
    h = v.clone()
    h[..., :, 1:] |= v[..., :, :-1]
    h[..., :, :-1] |= v[..., :, 1:]
    return h


def box_sum3(x: torch.Tensor) -> torch.Tensor:
    """Sum over each 3x3 window of a float (…, H, W) tensor, zero outside the image."""
    v = x.clone()
    v[..., 1:, :] += x[..., :-1, :]
    v[..., :-1, :] += x[..., 1:, :]
    h = v.clone()
    h[..., :, 1:] += v[..., :, :-1]
    h[..., :, :-1] += v[..., :, 1:]
    return h


def box_mean_replicate(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Mean over each ``kernel`` x ``kernel`` window of (N, C, H, W), replicated borders."""
    r = kernel // 2
    h, w = x.shape[-2:]
    xp = F.pad(x, (r, r, r, r), mode="replicate")
    v = xp[..., 0:h, :].clone()
    for i in range(1, kernel):
        v += xp[..., i : i + h, :]
    out = v[..., :, 0:w].clone()
    for i in range(1, kernel):
        out += v[..., :, i : i + w]
    return out / float(kernel * kernel)


def resize_map(maps: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Per-pixel maps (N, h, w) at ``size`` (H, W), bilinear (align_corners=False); unchanged
    when already that size."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    out = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)
    return out[:, 0]
