"""The fast evaluation forward pass: eval mode, channels_last memory format, bf16 autocast."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The evaluation forward pass: ``(logits float32, features float32 or None)``.

    On CUDA the model and input use channels_last (the model is converted once, in place)
    and ``precision`` "auto" autocasts to bf16. On the CPU "auto" keeps the plain fp32,
    contiguous forward, so CPU scores equal a plain ``model(x)`` bit for bit. "fp32",
    "bf16" or "fp16" force a precision on any device. Call under ``torch.inference_mode()``.
    """
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    dtype: str | None = precision
    if precision == "auto":
        dtype = "bf16" if cuda else None
    if cuda:
        model.to(memory_format=torch.channels_last)
    inp = to_model_input(x, dev, channels_last=cuda)
    with autocast_context(dev, dtype):
        out = model(inp, return_features=True) if features else model(inp)
    logits = out["out"].float().contiguous()
    feats = out["features"].float().contiguous() if features else None
    return logits, feats
