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
5. test-time augmentation (``eval.tta``, off by default, :class:`TTA`): the forward runs once
   per scale (and mirrored), logits are flipped back, resized to the output size and averaged
   there; features are flipped back, resized bilinearly to the common feature grid (the grid
   of the scale closest to 1) and averaged there;
6. scores are computed from those logits, so a threshold calibrated on one command's scores
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
from hazardseg.precision import autocast_dtype, for_evaluation


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
    resolved = autocast_dtype(dtype)
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
    dtype = for_evaluation(precision, dev)
    use_cl = cuda if channels_last is None else bool(channels_last)
    if use_cl:
        model.to(memory_format=torch.channels_last)
    inp = to_model_input(x, dev, channels_last=use_cl)
    with autocast_context(dev, dtype):
        out = model(inp, return_features=True) if features else model(inp)
    logits = out["out"].float().contiguous()
    feats = out["features"].float().contiguous() if features else None
    return logits, feats


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation: input scales and horizontal flip (``eval.tta``).

    ``TTA((1.0,), False)`` is the identity: one forward, exactly the plain pass.
    """

    scales: tuple[float, ...] = (1.0,)
    """Input scale factors (the network sees round(H*s) x round(W*s))."""
    flip: bool = False
    """Also run every scale mirrored left-right (flipped back before averaging)."""

    @property
    def views(self) -> list[tuple[float, bool]]:
        """(scale, flipped) of every forward, in order."""
        return [(s, f) for s in self.scales for f in ((False, True) if self.flip else (False,))]

    def __str__(self) -> str:
        parts = [f"{s:g}" for s in self.scales] + (["flip"] if self.flip else [])
        return ",".join(parts)


def parse_tta(text: str | TTA | None) -> TTA | None:
    """Parse ``eval.tta``: "none" (off), or a comma list of scales and/or "flip", e.g.
    "0.75,1,1.25,flip" ("flip" alone = scale 1 + flip; "1" = the identity)."""
    if text is None or isinstance(text, TTA):
        return text
    raw = str(text).strip().lower()
    if raw in ("", "none", "off", "false"):
        return None
    scales: list[float] = []
    flip = False
    for item in (t.strip() for t in raw.split(",")):
        if not item:
            continue
        if item in ("flip", "hflip"):
            flip = True
            continue
        try:
            s = float(item)
        except ValueError:
            s = float("nan")
        if not (0.0 < s <= 8.0):
            raise HazardsegError(
                f"tta {text!r}: {item!r} is not a scale in (0, 8] or 'flip'; "
                "expected e.g. '0.75,1,1.25,flip' or 'none'"
            )
        if s not in scales:
            scales.append(s)
    return TTA(tuple(scales) or (1.0,), flip)


def _scaled_input(x: torch.Tensor, scale: float, flip: bool) -> torch.Tensor:
    """The input of one TTA view: resized bilinearly by ``scale`` and mirrored if ``flip``."""
    if scale != 1.0:
        h, w = x.shape[-2:]
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        if size != (h, w):
            x = F.interpolate(
                x.float(), size=size, mode="bilinear", align_corners=False, antialias=scale < 1
            )
    return x.flip(-1) if flip else x


def _tta_forward(
    model: nn.Module,
    x: torch.Tensor,
    device: str | torch.device,
    out_size: tuple[int, int] | torch.Size,
    tta: TTA,
    **kw: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits averaged at ``out_size`` and features averaged on the grid of the scale
    closest to 1, over every view of ``tta``."""
    features = bool(kw.get("features"))
    x = x.to(device, non_blocking=True)
    ref = min(tta.scales, key=lambda s: (abs(s - 1.0), -s))
    logits_sum: torch.Tensor | None = None
    feats_out: list[tuple[float, torch.Tensor]] = []
    for scale, flip in tta.views:
        logits, feats = evaluation_forward(model, _scaled_input(x, scale, flip), device, **kw)
        if flip:
            logits = logits.flip(-1)
            feats = feats.flip(-1) if feats is not None else None
        logits = resize_logits(logits, out_size)
        logits_sum = logits if logits_sum is None else logits_sum + logits
        if feats is not None:
            feats_out.append((scale, feats))
    assert logits_sum is not None
    n = len(tta.views)
    mean_logits = logits_sum if n == 1 else logits_sum / n
    if not features:
        return mean_logits, None
    grid = next(f.shape[-2:] for s, f in feats_out if s == ref)
    feat_sum: torch.Tensor | None = None
    for _, f in feats_out:
        if f.shape[-2:] != grid:
            f = F.interpolate(f, size=tuple(grid), mode="bilinear", align_corners=False)
        feat_sum = f if feat_sum is None else feat_sum + f
    assert feat_sum is not None
    return mean_logits, feat_sum if n == 1 else feat_sum / n


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
    tta: TTA | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`evaluation_forward`, then logits resized to ``out_size`` (None: input size).

    Features stay at the network's feature resolution. With ``tta`` (a :class:`TTA` or its
    text, see :func:`parse_tta`) every view's logits are averaged at ``out_size`` and its
    features on the feature grid of the scale closest to 1.
    """
    aug = parse_tta(tta)
    if aug is not None:
        size = out_size if out_size is not None else x.shape[-2:]
        return _tta_forward(
            model, x, device, size, aug,
            features=features, precision=precision, channels_last=channels_last,
        )  # fmt: skip
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
    tta: TTA | str | None = None,
) -> ScoredBatch:
    """:func:`forward_logits` (with ``tta``), then every method's ``score(logits, features)``.

    ``methods`` maps names to anomaly-method objects (``needs_features``, ``score``).
    """
    need_features = any(getattr(m, "needs_features", False) for m in methods.values())
    logits, feats = forward_logits(
        model, x, device, out_size, features=need_features, precision=precision, tta=tta
    )
    scores = {name: m.score(logits, feats) for name, m in methods.items()}
    return ScoredBatch(logits, feats, scores)
