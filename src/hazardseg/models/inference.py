"""The one forward pass of hazardseg: images in, logits at the output size (and scores) out.

Training validation, fitting, ``evaluate``, ``calibrate``, ``visualize`` and ``predict`` all call
:func:`forward_logits` (or :func:`forward_scores`, which adds the anomaly scores):

1. the input resize policy is applied by the data transform
   (:func:`hazardseg.data.transforms.build_eval_transform`), so every command feeds the model
   the same pixels;
2. size constraints of the network are handled inside the model wrappers (smp models pad to a
   multiple of 32 and crop; Hiera resizes to its working size and back), never by the caller;
3. precision: channels_last + bf16 autocast on CUDA, the plain fp32 contiguous forward on the
   CPU ("auto"), or a forced precision;
4. logits (float32) are resized bilinearly (``align_corners=False``) to the output size
   (the label size, or the original image size in ``predict``);
5. scores are computed from those logits, so a threshold calibrated on one command's scores
   means the same on every other command's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hazardseg.errors import HazardsegError

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": None,
    "float32": None,
    "none": None,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Autocast dtype from a name ("bf16", "fp16", "fp32"/None = no autocast) or a dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return None if dtype == torch.float32 else dtype
    key = str(dtype).lower()
    if key not in _DTYPES:
        raise HazardsegError(f"unknown precision {dtype!r}; expected one of bf16, fp16, fp32")
    return _DTYPES[key]


def prepare_for_inference(
    model: nn.Module, device: str | torch.device = "cpu", *, channels_last: bool = True
) -> nn.Module:
    """Put ``model`` in eval mode on ``device``, in channels_last memory format by default.

    channels_last changes only the memory layout, never the results beyond float rounding.
    """
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    return model


@contextlib.contextmanager
def autocast_context(
    device: str | torch.device = "cpu", dtype: str | torch.dtype | None = "bf16"
) -> Iterator[None]:
    """Autocast to ``dtype`` on ``device``'s type; a no-op for fp32 / None.

    Combine with ``torch.inference_mode()``; cast logits with ``.float()`` before scoring.
    """
    resolved = resolve_dtype(dtype)
    if resolved is None:
        yield
        return
    device_type = torch.device(device).type
    with torch.autocast(device_type=device_type, dtype=resolved):
        yield


def to_model_input(
    x: torch.Tensor, device: str | torch.device, channels_last: bool = True
) -> torch.Tensor:
    """Move a float (N,3,H,W) batch to ``device`` in the memory format the model was prepared in."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def evaluation_forward(
    model: nn.Module,
    x: torch.Tensor,
    device: str | torch.device,
    *,
    features: bool = False,
    precision: str = "auto",
    channels_last: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The network forward pass at input resolution: ``(logits float32, features or None)``.

    ``precision`` "auto" autocasts to bf16 on CUDA and keeps the plain fp32 forward on the
    CPU, so CPU scores equal a plain ``model(x)`` bit for bit; "fp32", "bf16" or "fp16"
    force a precision on any device. ``channels_last`` None means "on CUDA only" (the model
    is converted once, in place). Call under ``torch.inference_mode()`` (or ``no_grad``).
    """
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    dtype: str | None = precision
    if precision == "auto":
        dtype = "bf16" if cuda else None
    use_cl = cuda if channels_last is None else bool(channels_last)
    if use_cl:
        model.to(memory_format=torch.channels_last)
    inp = to_model_input(x, dev, channels_last=use_cl)
    with autocast_context(dev, dtype):
        out = model(inp, return_features=True) if features else model(inp)
    logits = out["out"].float().contiguous()
    feats = out["features"].float().contiguous() if features else None
    return logits, feats


def resize_logits(logits: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Logits (N, C, h, w) resized bilinearly to ``size`` (H, W); unchanged when equal."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def forward_logits(
    model: nn.Module,
    x: torch.Tensor,
    device: str | torch.device,
    out_size: tuple[int, int] | torch.Size | None = None,
    *,
    features: bool = False,
    precision: str = "auto",
    channels_last: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`evaluation_forward`, then logits resized to ``out_size`` (None: input size).

    Features stay at the network's feature resolution.
    """
    logits, feats = evaluation_forward(
        model, x, device, features=features, precision=precision, channels_last=channels_last
    )
    if out_size is not None:
        logits = resize_logits(logits, out_size)
    return logits, feats


@dataclass
class ScoredBatch:
    """What one forward pass yields: logits at the output size, features and scores."""

    logits: torch.Tensor
    """(N, C, H, W) float32 at the output size."""
    features: torch.Tensor | None
    """(N, D, h, w) float32 decoder features, when a method needs them."""
    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    """Method name -> (N, H, W) anomaly score (higher = more anomalous)."""


def forward_scores(
    model: nn.Module,
    x: torch.Tensor,
    methods: Mapping[str, Any],
    device: str | torch.device,
    out_size: tuple[int, int] | torch.Size | None = None,
    *,
    precision: str = "auto",
) -> ScoredBatch:
    """:func:`forward_logits`, then every method's ``score(logits, features)``.

    ``methods`` maps names to anomaly-method objects (``needs_features``, ``score``).
    """
    need_features = any(getattr(m, "needs_features", False) for m in methods.values())
    logits, feats = forward_logits(
        model, x, device, out_size, features=need_features, precision=precision
    )
    scores = {name: m.score(logits, feats) for name, m in methods.items()}
    return ScoredBatch(logits, feats, scores)
