"""The graph that is exported and how it is traced: :class:`DeployModule` (uint8 NHWC image ->
logits, class map, confidence and anomaly scores, normalisation inside) traced to an ONNX
ModelProto.

The anomaly scores are the registered methods' own ``score`` functions traced into the graph,
so the export follows whatever :mod:`hazardseg.anomaly` computes. While tracing, SML's 3x3
neighbourhood helper (in-place shifted-slice updates, which become hundreds of ONNX scatter
nodes) can be replaced by a functional form with the same definition
(:func:`onnx_friendly_filters`), and timm attention blocks use their explicit (non-fused)
attention, which the exporter supports for every input rank (:func:`unfused_attention`).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from hazardseg.anomaly.base import AnomalyMethod
from hazardseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from hazardseg.deploy import ExportError
from hazardseg.deploy.interface import CLASS_MAP, CONFIDENCE, INPUT_NAME, LOGITS, SCORE_PREFIX
from hazardseg.errors import HazardsegError

# --------------------------------------------------------------------------- graph module


class DeployModule(nn.Module):
    """uint8 NHWC RGB -> (logits, class map, confidence, anomaly scores...), all in one graph.

    ``methods`` are fitted :class:`AnomalyMethod` objects that need no features; their
    ``score(logits)`` runs inside ``forward``.
    """

    def __init__(self, model: nn.Module, methods: Mapping[str, AnomalyMethod]) -> None:
        super().__init__()
        self.model = model
        self.methods = dict(methods)
        self.num_classes = int(getattr(model, "num_classes", 0) or 0)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    @property
    def output_names(self) -> list[str]:
        """Names of the outputs of :meth:`forward`, in order."""
        return [LOGITS, CLASS_MAP, CONFIDENCE, *(SCORE_PREFIX + m for m in self.methods)]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Same arithmetic as the evaluation transform: x / 255, then (x - mean) / std.
        x = image.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        x = (x - self.pixel_mean) / self.pixel_std
        logits = self.model(x)["out"].float()
        pred = logits.argmax(dim=1)
        class_map = pred.to(torch.uint8) if self.num_classes <= 256 else pred
        confidence = torch.softmax(logits, dim=1).amax(dim=1)
        scores = [method.score(logits).float() for method in self.methods.values()]
        return (logits, class_map, confidence, *scores)


# ------------------------------------------------------- ONNX-friendly neighbourhood filters


def functional_neighbour_reduce(
    x: torch.Tensor,
    offsets: tuple[tuple[int, int], ...],
    reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``hazardseg.anomaly.sml._neighbour_reduce`` without in-place slice updates.

    Pixels outside the image are replaced by the nearest inside pixel (edge replication).
    For the idempotent reductions SML uses (maximum, minimum, logical or) over windows that
    contain every clamped neighbour (3x3 cross, 3x3 square) this equals ignoring them.
    """
    r = max((max(abs(dy), abs(dx)) for dy, dx in offsets), default=0)
    h, w = x.shape[-2], x.shape[-1]
    padded = x
    if r:
        padded = torch.cat([padded[..., :1, :]] * r + [padded] + [padded[..., -1:, :]] * r, -2)
        padded = torch.cat([padded[..., :1]] * r + [padded] + [padded[..., -1:]] * r, -1)
    out = x
    for dy, dx in offsets:
        out = reduce(out, padded[..., r + dy : r + dy + h, r + dx : r + dx + w])
    return out


_SML_SUBSTITUTES: dict[str, Callable[..., torch.Tensor]] = {
    "_neighbour_reduce": functional_neighbour_reduce,
}


@contextlib.contextmanager
def onnx_friendly_filters(enabled: bool = True) -> Iterator[list[str]]:
    """Within the block, :mod:`hazardseg.anomaly.sml` uses functional forms of its
    neighbourhood helpers (in-place slice updates trace to hundreds of ONNX scatter nodes,
    2-3x slower in onnxruntime); yields the names replaced. Not thread-safe: export only."""
    sml = importlib.import_module("hazardseg.anomaly.sml")
    replaced: dict[str, Any] = {}
    if enabled:
        for name, substitute in _SML_SUBSTITUTES.items():
            current = getattr(sml, name, None)
            if callable(current):
                replaced[name] = current
                setattr(sml, name, substitute)
    try:
        yield sorted(replaced)
    finally:
        for name, original in replaced.items():
            setattr(sml, name, original)


@contextlib.contextmanager
def unfused_attention(model: nn.Module) -> Iterator[int]:
    """Within the block, timm attention modules (``fused_attn`` attribute) compute attention
    with explicit matmul + softmax instead of ``scaled_dot_product_attention``, which the ONNX
    exporter supports only for 4-D inputs (Hiera's mask-unit attention is 5-D); yields the
    number of modules switched."""
    switched = [m for m in model.modules() if getattr(m, "fused_attn", None) is True]
    for m in switched:
        m.fused_attn = False
    try:
        yield len(switched)
    finally:
        for m in switched:
            m.fused_attn = True


# ------------------------------------------------------------------------------ tracing


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The innermost cause's message on one line (torch.onnx wraps the real error)."""
    while exc.__cause__ is not None and exc.__cause__ is not exc:
        exc = exc.__cause__
    text = " ".join(_ANSI.sub("", str(exc)).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def trace_to_onnx(
    module: DeployModule,
    example: torch.Tensor,
    dynamic: bool,
    opset: int,
    model_name: str,
    optimize: bool = True,
) -> Any:
    """The ONNX ModelProto of ``module`` traced on ``example`` (batch always dynamic)."""
    dim = torch.export.Dim.DYNAMIC
    axes = {0: dim, 1: dim, 2: dim} if dynamic else {0: dim}
    sink = io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(sink),
            warnings.catch_warnings(),
            torch.no_grad(),
        ):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (example,),
                None,
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=module.output_names,
                opset_version=opset,
                dynamic_shapes={"image": axes},
                optimize=optimize,
                verify=False,
                report=False,
            )
    except HazardsegError:
        raise
    except Exception as exc:
        text = first_line(exc)
        hint = ""
        if dynamic and ("onstraint" in text or "guard" in text or "speciali" in text):
            hint = (
                "; its forward depends on the input size, export it at a fixed size "
                "(--height H --width W) instead of --dynamic"
            )
        raise ExportError(f"{model_name}: cannot be exported to ONNX ({text}){hint}") from exc
    return program.model_proto


def name_dynamic_dims(proto: Any) -> None:
    """Rename the exporter's symbolic dimensions of the input (``s40``...) to ``batch``,
    ``height`` and ``width`` everywhere in the graph's signature."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    names = {}
    for dim, new in zip(dims, ("batch", "height", "width"), strict=False):
        if dim.dim_param:
            names[dim.dim_param] = new
    if not names:
        return
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]
