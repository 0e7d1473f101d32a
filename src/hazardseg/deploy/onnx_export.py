"""ONNX export of a segmentation network with input normalisation and logit-based anomaly scores
inside the graph, checked against PyTorch with onnxruntime before the file is written.

The exported graph (see ``docs/deployment.md``)::

    input   image       uint8   (N, H, W, 3)   RGB, NHWC (the layout decoders produce)
    output  logits      float32 (N, C, H, W)
            class_map   uint8   (N, H, W)      argmax of the logits (int64 when C > 256)
            confidence  float32 (N, H, W)      maximum softmax probability
            score_<m>   float32 (N, H, W)      one per exported anomaly method, higher = more
                                               anomalous, same values as ``create_method(m)``

The anomaly scores are the registered methods' own ``score`` functions traced into the graph,
so the export follows whatever :mod:`hazardseg.anomaly` computes. While tracing, SML's 3x3
neighbourhood helper (in-place shifted-slice updates, which become hundreds of ONNX scatter
nodes) is replaced by a functional form with the same definition;
the check compares the exported scores with the unmodified methods and falls back to tracing
the original helpers when they differ. timm attention blocks are traced with their explicit
(non-fused) attention, which the exporter supports for every input rank.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hazardseg import __version__
from hazardseg.anomaly.base import AnomalyMethod
from hazardseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from hazardseg.deploy import ExportError, require
from hazardseg.deploy.interface import (
    CLASS_MAP,
    CONFIDENCE,
    EXPORT_FORMAT,
    INPUT_NAME,
    LOGITS,
    METADATA_PREFIX,
    SCORE_PREFIX,
)
from hazardseg.errors import HazardsegError
from hazardseg.io import atomic_path

log = logging.getLogger(__name__)

EXPORTABLE_METHODS: tuple[str, ...] = ("msp", "max_logit", "energy", "entropy", "sml")
"""Anomaly methods that are functions of the logits (plus fitted constants) and export."""
NOT_EXPORTABLE_METHODS: dict[str, str] = {
    "heat": "needs the network's feature map and a per-image spatial KL over it; only the "
    "logit-based methods (msp, max_logit, energy, entropy, sml) are exported",
}
DEFAULT_OPSET = 18
MIN_OPSET = 18
LOGITS_TOLERANCE = 1e-4
"""Largest accepted max abs difference between onnxruntime and PyTorch logits (fp32)."""
SCORE_RELATIVE_TOLERANCE = 1e-3
"""Largest accepted score difference, relative to max(1, largest absolute score)."""
DEFAULT_SIZE = (720, 1280)
"""Export size (H, W) when neither a size nor --dynamic is given: StreetHazards' frames."""
DEFAULT_DYNAMIC_TRACE_SIZE = (200, 264)
"""Tracing size of a --dynamic export: not a multiple of 32, so that padding branches (smp
models pad to a multiple of 32) are part of the graph."""


def _second_size(height: int, width: int) -> tuple[int, int]:
    """A second check size for dynamic exports: multiples of 32 when the tracing size is not
    (and other sizes when it is), so size-dependent branches that were not traced show up."""
    if height % 32 or width % 32:
        return -(-(height + 1) // 32) * 32, -(-(width + 1) // 32) * 32
    return height + 24, width + 40


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


# ----------------------------------------------------------------------------- methods


def _registered_methods() -> list[str]:
    from hazardseg.anomaly import list_methods

    return list(list_methods())


def resolve_method_names(methods: Sequence[str] | str | None) -> list[str]:
    """Validated, de-duplicated method names; "all" = every exportable method."""
    if methods is None:
        return []
    items = methods.split(",") if isinstance(methods, str) else list(methods)
    names: list[str] = []
    for raw in items:
        for item in (s.strip() for s in str(raw).split(",")):
            if not item:
                continue
            todo = list(EXPORTABLE_METHODS) if item == "all" else [item]
            for name in todo:
                if name in NOT_EXPORTABLE_METHODS:
                    raise ExportError(
                        f"anomaly method '{name}' cannot be exported: "
                        f"{NOT_EXPORTABLE_METHODS[name]}"
                    )
                if name not in EXPORTABLE_METHODS and name in _registered_methods():
                    raise ExportError(
                        f"anomaly method '{name}' cannot be exported: it is not a function of "
                        f"the logits (only {', '.join(EXPORTABLE_METHODS)} are)"
                    )
                if name not in EXPORTABLE_METHODS:
                    raise ExportError(
                        f"unknown anomaly method '{name}' for export; expected 'all' or one of: "
                        f"{', '.join(EXPORTABLE_METHODS)}"
                    )
                if name not in names:
                    names.append(name)
    return names


def build_methods(
    names: Sequence[str],
    state: Mapping[str, Any] | None,
    checkpoint_sha256: str | None,
    state_path: str | os.PathLike[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, AnomalyMethod]:
    """Create the named methods with ``options`` (method -> keyword arguments); fitted ones
    (sml) take their statistics and options from ``state`` (the anomaly state file's
    content), which must belong to ``checkpoint_sha256``."""
    from hazardseg.anomaly import create_method

    where = str(state_path) if state_path is not None else "the anomaly state"
    resolved = resolve_method_names(list(names))
    options = dict(options or {})
    stray = sorted(set(options) - set(resolved))
    if stray:
        raise ExportError(
            f"options given for method(s) {', '.join(stray)} that are not exported "
            f"(exported: {', '.join(resolved) or 'none'})"
        )
    methods: dict[str, AnomalyMethod] = {}
    for name in resolved:
        probe = create_method(name, **dict(options.get(name, {})))
        if not probe.needs_fit:
            methods[name] = probe
            continue
        if state is None:
            raise ExportError(
                f"anomaly method '{name}' needs fitted statistics, but there is no anomaly "
                f"state file ({where}); run `hazardseg evaluate` on the checkpoint first or "
                f"leave '{name}' out"
            )
        sha = state.get("checkpoint_sha256")
        if checkpoint_sha256 is not None and sha != checkpoint_sha256:
            raise ExportError(
                f"{where}: fitted for checkpoint sha256 {str(sha)[:12]}..., not for this "
                f"checkpoint ({checkpoint_sha256[:12]}...); refit with `hazardseg evaluate`"
            )
        entry = (state.get("methods") or {}).get(name)
        if entry is None:
            raise ExportError(
                f"{where}: has no fitted state for anomaly method '{name}' "
                f"(fitted: {', '.join(state.get('methods') or {}) or 'none'})"
            )
        tta = str((entry.get("fit") or {}).get("tta") or "none")
        if tta != "none":
            raise ExportError(
                f"{where}: '{name}' was fitted with test-time augmentation {tta!r}; the ONNX "
                "graph has none, so refit it with --tta none for export"
            )
        method = create_method(name, **dict(entry.get("options") or {}))
        if name in options and probe.options != method.options:
            raise ExportError(
                f"{where}: '{name}' was fitted with options {method.options}, not "
                f"{probe.options}; refit with those options or drop them"
            )
        method.load_state_dict(dict(entry["state"]))
        methods[name] = method
    return methods


# ------------------------------------------------------------------------------ results


@dataclass
class ExportReport:
    """What was exported and how closely onnxruntime reproduces PyTorch."""

    path: Path
    model_name: str
    methods: list[str]
    input_shape: list[int | str]
    outputs: dict[str, dict[str, Any]]
    dynamic: bool
    opset: int
    size_bytes: int
    export_s: float
    check: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """A few human-readable lines."""
        c = self.check
        lines = [
            f"exported {self.model_name} to {self.path} ({self.size_bytes / 1e6:.1f} MB, "
            f"opset {self.opset}, {self.export_s:.1f} s)",
            f"input  {INPUT_NAME}: uint8 {self._shape(self.input_shape)} (N, H, W, 3) RGB",
        ]
        for name, spec in self.outputs.items():
            lines.append(f"output {name}: {spec['dtype']} {self._shape(spec['shape'])}")
        if c:
            scores = ", ".join(f"{k} {v:.2e}" for k, v in c["score_max_abs_diff"].items())
            lines.append(
                f"check on {c['samples']}: logits max |diff| {c['logits_max_abs_diff']:.2e} "
                f"(limit {c.get('logits_tolerance', LOGITS_TOLERANCE):g}), argmax agreement "
                f"{100 * c['argmax_agreement']:.4f}%, confidence max |diff| "
                f"{c['confidence_max_abs_diff']:.2e}"
                + (f"; scores max |diff|: {scores}" if scores else "")
            )
        return "\n".join(lines)

    @staticmethod
    def _shape(shape: Sequence[int | str]) -> str:
        return "(" + ", ".join(str(s) for s in shape) + ")"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "path": str(self.path),
            "model_name": self.model_name,
            "methods": list(self.methods),
            "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": list(self.input_shape)},
            "outputs": self.outputs,
            "dynamic": self.dynamic,
            "opset": self.opset,
            "size_bytes": self.size_bytes,
            "export_s": self.export_s,
            "check": self.check,
        }


# ------------------------------------------------------------------------------- export


def sample_images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Deterministic uint8 (N, H, W, 3) images with large smooth regions and some texture."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, max(height // 24, 2), max(width // 24, 2), generator=gen)
    img = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False) * 230
    img = img + 25 * torch.rand(batch, 3, height, width, generator=gen)
    return img.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The innermost cause's message on one line (torch.onnx wraps the real error)."""
    while exc.__cause__ is not None and exc.__cause__ is not exc:
        exc = exc.__cause__
    text = " ".join(_ANSI.sub("", str(exc)).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _trace_to_onnx(
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
        text = _first_line(exc)
        hint = ""
        if dynamic and ("onstraint" in text or "guard" in text or "speciali" in text):
            hint = (
                "; its forward depends on the input size, export it at a fixed size "
                "(--height H --width W) instead of --dynamic"
            )
        raise ExportError(f"{model_name}: cannot be exported to ONNX ({text}){hint}") from exc
    return program.model_proto


def _name_dynamic_dims(proto: Any) -> None:
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


def _ort_session(model_bytes: bytes, threads: int | None) -> Any:
    ort = require("onnxruntime", "checking an ONNX export")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _compare(
    session: Any, module: DeployModule, samples: list[torch.Tensor], names: list[str]
) -> dict[str, Any]:
    """Run onnxruntime and PyTorch on ``samples``; max abs differences and argmax agreement."""
    logits_diff = conf_diff = 0.0
    per_sample: list[float] = []
    logits_scale = 0.0
    agree = total = 0
    scores: dict[str, float] = {}
    score_scale: dict[str, float] = {}
    nonfinite: dict[str, int] = {}
    for img in samples:
        with torch.no_grad():
            ref = [t.numpy() for t in module(img)]
        try:
            got = session.run(names, {INPUT_NAME: img.numpy()})
        except Exception as exc:  # onnxruntime raises its own exception types
            size = "x".join(str(d) for d in img.shape[1:3])
            raise ExportError(
                f"export check: onnxruntime fails on a {size} image ({_first_line(exc, 200)})"
                + (
                    "; the graph only works at the tracing size, export at a fixed --height/"
                    "--width instead of --dynamic"
                    if img is not samples[0]
                    else ""
                )
            ) from None
        for name, r, g in zip(names, ref, got, strict=True):
            if r.shape != g.shape:
                raise ExportError(
                    f"export check: output '{name}' has shape {tuple(g.shape)} in onnxruntime, "
                    f"{tuple(r.shape)} in PyTorch"
                )
            if name == CLASS_MAP:
                agree += int((r == g).sum())
                total += r.size
                continue
            bad = int((~np.isfinite(g)).sum())
            if bad:
                nonfinite[name] = nonfinite.get(name, 0) + bad
            diff = float(np.nanmax(np.abs(g.astype(np.float64) - r.astype(np.float64))))
            if name == LOGITS:
                logits_diff = max(logits_diff, diff)
                per_sample.append(diff)
                logits_scale = max(logits_scale, float(np.abs(r).max()))
            elif name == CONFIDENCE:
                conf_diff = max(conf_diff, diff)
            else:
                key = name[len(SCORE_PREFIX) :]
                scores[key] = max(scores.get(key, 0.0), diff)
                finite = np.abs(r[np.isfinite(r)])
                scale = float(finite.max()) if finite.size else 0.0
                score_scale[key] = max(score_scale.get(key, 0.0), scale)
    return {
        "samples": ", ".join("x".join(str(d) for d in s.shape) for s in samples),
        "logits_max_abs_diff": logits_diff,
        "logits_max_abs_diff_per_sample": per_sample,
        "logits_scale": logits_scale,
        "argmax_agreement": agree / max(total, 1),
        "confidence_max_abs_diff": conf_diff,
        "score_max_abs_diff": scores,
        "score_scale": score_scale,
        "nonfinite": nonfinite,
    }


def _score_failures(check: Mapping[str, Any]) -> list[str]:
    bad = []
    for name, diff in check["score_max_abs_diff"].items():
        limit = SCORE_RELATIVE_TOLERANCE * max(1.0, check["score_scale"][name])
        if not diff <= limit:
            bad.append(f"{name} ({diff:.3g} > {limit:.3g})")
    return bad


def _shape_of(value_info: Any) -> list[int | str]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _dtype_of(value_info: Any) -> str:
    onnx = require("onnx", "ONNX export")
    elem = value_info.type.tensor_type.elem_type
    return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)))


def build_metadata(
    *,
    model_name: str,
    class_names: Sequence[str],
    num_classes: int,
    methods: Mapping[str, AnomalyMethod],
    height: int | None,
    width: int | None,
    dynamic: bool,
    checkpoint_sha256: str | None,
    thresholds: Mapping[str, Mapping[str, Any]] | None,
    opset: int,
    model_options: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The ``hazardseg.*`` metadata_props of an exported model (all values are strings)."""
    p = METADATA_PREFIX
    meta = {
        f"{p}format": str(EXPORT_FORMAT),
        f"{p}version": __version__,
        f"{p}model_name": model_name,
        f"{p}model_options": json.dumps(dict(model_options or {}), sort_keys=True),
        f"{p}num_classes": str(int(num_classes)),
        f"{p}class_names": json.dumps([str(c) for c in class_names]),
        f"{p}methods": json.dumps(list(methods)),
        f"{p}method_options": json.dumps({n: m.options for n, m in methods.items()}),
        f"{p}thresholds": json.dumps(
            {
                n: {k: v for k, v in t.items() if isinstance(v, str | int | float | bool)}
                for n, t in (thresholds or {}).items()
            },
            sort_keys=True,
        ),
        f"{p}input_layout": "NHWC",
        f"{p}input_dtype": "uint8",
        f"{p}input_color": "RGB",
        f"{p}input_size": "dynamic" if dynamic else json.dumps([int(height or 0), int(width or 0)]),
        f"{p}dynamic": json.dumps(bool(dynamic)),
        f"{p}normalization": json.dumps(
            {"scale": 255.0, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        ),
        f"{p}outputs": json.dumps(
            [LOGITS, CLASS_MAP, CONFIDENCE, *(SCORE_PREFIX + m for m in methods)]
        ),
        f"{p}checkpoint_sha256": checkpoint_sha256 or "",
        f"{p}opset": str(int(opset)),
    }
    return meta


def export_model(
    model: nn.Module,
    out: str | os.PathLike[str],
    *,
    model_name: str | None = None,
    class_names: Sequence[str] | None = None,
    methods: Mapping[str, AnomalyMethod] | None = None,
    height: int | None = None,
    width: int | None = None,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    checkpoint_sha256: str | None = None,
    thresholds: Mapping[str, Mapping[str, Any]] | None = None,
    model_options: Mapping[str, Any] | None = None,
    check: bool = True,
    threads: int | None = None,
    seed: int = 0,
    logits_tolerance: float = LOGITS_TOLERANCE,
) -> ExportReport:
    """Export ``model`` (+ the fitted, feature-free ``methods``) to ``out`` as one ONNX graph.

    Without ``dynamic`` the graph takes images of exactly ``height`` x ``width`` (default
    720x1280); with ``dynamic`` any size (the batch size is always free). ``check`` runs
    onnxruntime on sample images and raises :class:`ExportError`, writing nothing, when the
    logits differ from PyTorch by more than ``logits_tolerance`` (default 1e-4) or a score by
    more than 1e-3 of its scale.
    """
    require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")
    name = str(model_name or getattr(model, "name", "") or type(model).__name__)
    methods = dict(methods or {})
    for mname, method in methods.items():
        if method.needs_features:
            raise ExportError(
                f"anomaly method '{mname}' cannot be exported: it needs the network's features"
            )
        method.check_fitted()
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: the exporter needs opset {MIN_OPSET} or newer")
    if dynamic:
        height = height or DEFAULT_DYNAMIC_TRACE_SIZE[0]
        width = width or DEFAULT_DYNAMIC_TRACE_SIZE[1]
    elif height is None and width is None:
        height, width = DEFAULT_SIZE
    if height is None or width is None:
        raise ExportError(f"give both --height and --width (got height={height}, width={width})")
    if height < 16 or width < 16:
        raise ExportError(f"export size {height}x{width} is too small; expected at least 16x16")
    num_classes = int(getattr(model, "num_classes", 0) or len(class_names or []))
    if class_names is None or len(class_names) != num_classes:
        from hazardseg.data.classes import KNOWN_CLASS_NAMES

        class_names = list(KNOWN_CLASS_NAMES)[:num_classes] if class_names is None else class_names
    model = model.eval()
    module = DeployModule(model, methods).eval()
    names = module.output_names
    example = sample_images(2, int(height), int(width), seed)
    samples = [example]
    if dynamic:
        samples.append(sample_images(1, *_second_size(int(height), int(width)), seed + 1))

    start = time.perf_counter()
    use_substitutes = "sml" in methods
    attempts = [True, False] if use_substitutes else [False]
    proto = None
    report_check: dict[str, Any] = {}
    for substitute in attempts:
        with onnx_friendly_filters(substitute) as replaced, unfused_attention(model):
            proto = _trace_to_onnx(module, example, dynamic, opset, name)
        _name_dynamic_dims(proto)
        export_s = time.perf_counter() - start
        if not check:
            break
        session = _ort_session(proto.SerializeToString(), threads)
        report_check = _compare(session, module, samples, names)
        report_check["filters_substituted"] = replaced
        failures = _score_failures(report_check)
        if failures and substitute:
            log.warning("scores differ with substituted filters (%s); retracing", failures)
            continue
        break
    assert proto is not None
    if check:
        diff = report_check["logits_max_abs_diff"]
        first = report_check["logits_max_abs_diff_per_sample"][0]
        report_check["logits_tolerance"] = logits_tolerance
        if dynamic and first <= logits_tolerance and not diff <= logits_tolerance:
            size = "x".join(str(d) for d in samples[-1].shape[1:3])
            raise ExportError(
                f"{name}: the --dynamic export does not reproduce PyTorch at {size} (logits "
                f"differ by {diff:.3g}, by {first:.3g} at the tracing size): its forward "
                "depends on the input size; trace at a --height/--width that is not a multiple "
                "of 32, or export at a fixed size without --dynamic"
            )
        if not diff <= logits_tolerance:
            scale = report_check["logits_scale"]
            raise ExportError(
                f"{name}: onnxruntime logits differ from PyTorch by {diff:.3g} "
                f"(> {logits_tolerance:g}; largest |logit| {scale:.3g}, relative "
                f"{diff / max(scale, 1e-30):.2g}); not writing {out} (--tolerance sets the limit)"
            )
        failures = _score_failures(report_check)
        if failures:
            raise ExportError(
                f"{name}: onnxruntime anomaly scores differ from PyTorch: {', '.join(failures)}; "
                f"not writing {out}"
            )
        if report_check["nonfinite"]:
            raise ExportError(
                f"{name}: onnxruntime produced non-finite values {report_check['nonfinite']}; "
                f"not writing {out}"
            )
        report_check["check_s"] = time.perf_counter() - start - export_s

    onnx = require("onnx", "ONNX export")
    meta = build_metadata(
        model_name=name,
        class_names=list(class_names),
        num_classes=num_classes,
        methods=methods,
        height=None if dynamic else height,
        width=None if dynamic else width,
        dynamic=dynamic,
        checkpoint_sha256=checkpoint_sha256,
        thresholds=thresholds,
        opset=opset,
        model_options=model_options,
    )
    check_public = {k: v for k, v in report_check.items() if k != "score_scale"}
    meta[f"{METADATA_PREFIX}export_check"] = json.dumps(check_public, sort_keys=True)
    onnx.helper.set_model_props(proto, meta)
    proto.doc_string = f"hazardseg {__version__} export of {name}"
    data = proto.SerializeToString()
    target = Path(out)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return ExportReport(
        path=target,
        model_name=name,
        methods=list(methods),
        input_shape=_shape_of(proto.graph.input[0]),
        outputs={
            o.name: {"dtype": _dtype_of(o), "shape": _shape_of(o)} for o in proto.graph.output
        },
        dynamic=dynamic,
        opset=opset,
        size_bytes=len(data),
        export_s=export_s,
        check=check_public,
        metadata=meta,
    )


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    methods: Sequence[str] | str | None = None,
    height: int | None = None,
    width: int | None = None,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    model_name: str | None = None,
    state_path: str | os.PathLike[str] | None = None,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    check: bool = True,
    threads: int | None = None,
    logits_tolerance: float = LOGITS_TOLERANCE,
) -> ExportReport:
    """Export a hazardseg checkpoint (or bare state dict with ``model_name``) to ONNX.

    Fitted methods (sml) read their statistics and options from ``state_path`` (default:
    ``anomaly_state.pt`` beside the checkpoint); calibrated thresholds found there for the
    exported methods go into the metadata. ``method_options``: method -> keyword arguments
    (e.g. ``{"energy": {"temperature": 2.0}}``). See :func:`export_model` for the rest.
    """
    from hazardseg.anomaly.state import default_state_path, load_method_state, matching_thresholds
    from hazardseg.models.checkpoint import load_model

    names = resolve_method_names(methods)
    model, info = load_model(checkpoint, model_name=model_name)
    spath = Path(state_path) if state_path is not None else default_state_path(checkpoint)
    state = load_method_state(spath) if spath.is_file() else None
    if state_path is not None and state is None:
        raise ExportError(f"anomaly state file not found: {spath}")
    built = build_methods(names, state, info["sha256"], spath, method_options)
    thresholds = matching_thresholds(state, built, info["sha256"]) if state else {}
    return export_model(
        model,
        out,
        model_name=info["model_name"],
        class_names=info.get("class_names") or None,
        methods=built,
        height=height,
        width=width,
        dynamic=dynamic,
        opset=opset,
        checkpoint_sha256=info["sha256"],
        thresholds=thresholds,
        model_options=info.get("model_options"),
        check=check,
        threads=threads,
        logits_tolerance=logits_tolerance,
    )
