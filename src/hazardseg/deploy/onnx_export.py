"""ONNX export of a segmentation network with input normalisation and logit-based anomaly scores
inside the graph, checked against PyTorch with onnxruntime before the file is written.

The exported graph (see ``docs/deployment.md``)::

    input   image       uint8   (N, H, W, 3)   RGB, NHWC (the layout decoders produce)
    output  logits      float32 (N, C, H, W)
            class_map   uint8   (N, H, W)      argmax of the logits (int64 when C > 256)
            confidence  float32 (N, H, W)      maximum softmax probability
            score_<m>   float32 (N, H, W)      one per exported anomaly method, higher = more
                                               anomalous, same values as ``create_method(m)``

The graph and its tracing are in :mod:`hazardseg.deploy.onnx_graph`, the self-check in
:mod:`hazardseg.deploy.onnx_check`, the exportable methods in
:mod:`hazardseg.deploy.export_methods`. The check compares the exported scores with the
unmodified methods; when SML's scores traced with the ONNX-friendly filters differ, the
export is traced again with the original helpers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hazardseg import __version__
from hazardseg.anomaly.base import AnomalyMethod
from hazardseg.data.registry import model_classes
from hazardseg.deploy import ExportError, require
from hazardseg.deploy.export_methods import build_methods, resolve_method_names
from hazardseg.deploy.interface import (
    INPUT_NAME,
    METADATA_PREFIX,
)
from hazardseg.deploy.onnx_check import (
    LOGITS_TOLERANCE,
    check_samples,
    compare_with_pytorch,
    require_agreement,
    score_failures,
)
from hazardseg.deploy.onnx_graph import (
    DeployModule,
    name_dynamic_dims,
    onnx_friendly_filters,
    trace_to_onnx,
    unfused_attention,
)
from hazardseg.deploy.onnx_metadata import ExportSource, build_metadata
from hazardseg.io import atomic_path
from hazardseg.models.checkpoint import LoadedCheckpoint, open_checkpoint

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
MIN_OPSET = 18
DEFAULT_SIZE = (720, 1280)
"""Export size (H, W) when neither a size nor --dynamic is given: StreetHazards' frames."""
DEFAULT_DYNAMIC_TRACE_SIZE = (200, 264)
"""Tracing size of a --dynamic export: not a multiple of 32, so that padding branches (smp
models pad to a multiple of 32) are part of the graph."""


@dataclass(frozen=True)
class ExportOptions:
    """How to export: the graph's input size, the opset and the onnxruntime self-check.

    Without ``dynamic`` the graph takes images of exactly ``height`` x ``width`` (default
    :data:`DEFAULT_SIZE`); with ``dynamic`` any size, traced at ``height`` x ``width``
    (default :data:`DEFAULT_DYNAMIC_TRACE_SIZE`). The batch size is always free. ``check``
    runs onnxruntime (``threads``; None: all cores) on sample images drawn with ``seed`` and
    refuses the export when the logits differ from PyTorch by more than ``logits_tolerance``
    or a score by more than 1e-3 of its scale.
    """

    height: int | None = None
    width: int | None = None
    dynamic: bool = False
    opset: int = DEFAULT_OPSET
    check: bool = True
    threads: int | None = None
    logits_tolerance: float = LOGITS_TOLERANCE
    seed: int = 0

    def resolved(self) -> ExportOptions:
        """These options with the default size filled in; ExportError when unusable."""
        if self.opset < MIN_OPSET:
            raise ExportError(
                f"--opset {self.opset}: the exporter needs opset {MIN_OPSET} or newer"
            )
        height, width = self.height, self.width
        if self.dynamic:
            height = height or DEFAULT_DYNAMIC_TRACE_SIZE[0]
            width = width or DEFAULT_DYNAMIC_TRACE_SIZE[1]
        elif height is None and width is None:
            height, width = DEFAULT_SIZE
        if height is None or width is None:
            raise ExportError(
                f"give both --height and --width (got height={height}, width={width})"
            )
        if height < 16 or width < 16:
            raise ExportError(f"export size {height}x{width} is too small; expected at least 16x16")
        return dataclasses.replace(self, height=int(height), width=int(width))


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
            ties = c.get("score_pixels_near_ties") or {}
            if ties:
                lines.append(
                    f"{c['argmax_disagreements']} pixel(s) where the top two logits tie to float "
                    "rounding took another class in onnxruntime; scores that use the class ("
                    + ", ".join(ties)
                    + ") were compared away from them ("
                    + ", ".join(f"{k} {v} px" for k, v in ties.items())
                    + " left out)"
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


def _shape_of(value_info: Any) -> list[int | str]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _dtype_of(value_info: Any) -> str:
    onnx = require("onnx", "ONNX export")
    elem = value_info.type.tensor_type.elem_type
    return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)))


def _trace_and_check(
    model: nn.Module,
    module: DeployModule,
    samples: list[torch.Tensor],
    opts: ExportOptions,
    name: str,
) -> tuple[Any, float, dict[str, Any]]:
    """(ModelProto, export seconds, check report): traced with the ONNX-friendly SML filters
    first when sml is exported, and again without them when its scores then differ."""
    start = time.perf_counter()
    attempts = [True, False] if "sml" in module.methods else [False]
    proto = None
    export_s = 0.0
    report_check: dict[str, Any] = {}
    for substitute in attempts:
        with onnx_friendly_filters(substitute) as replaced, unfused_attention(model):
            proto = trace_to_onnx(module, samples[0], opts.dynamic, opts.opset, name)
        name_dynamic_dims(proto)
        export_s = time.perf_counter() - start
        if not opts.check:
            break
        report_check = compare_with_pytorch(
            proto.SerializeToString(), module, samples, opts.threads
        )
        report_check["filters_substituted"] = replaced
        failures = score_failures(report_check)
        if failures and substitute:
            log.warning("scores differ with substituted filters (%s); retracing", failures)
            continue
        break
    assert proto is not None
    return proto, export_s, report_check


def export_model(
    model: nn.Module,
    out: str | os.PathLike[str],
    *,
    options: ExportOptions | None = None,
    methods: Mapping[str, AnomalyMethod] | None = None,
    source: ExportSource | None = None,
) -> ExportReport:
    """Export ``model`` (+ the fitted, feature-free ``methods``) to ``out`` as one ONNX graph.

    ``options`` (default :class:`ExportOptions`) sets the size, the opset and the self-check,
    which raises :class:`ExportError`, writing nothing, when onnxruntime does not reproduce
    PyTorch. ``source`` goes into the metadata.
    """
    require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")
    source = source or ExportSource()
    name = str(source.model_name or getattr(model, "name", "") or type(model).__name__)
    methods = dict(methods or {})
    for mname, method in methods.items():
        if method.needs_features:
            raise ExportError(
                f"anomaly method '{mname}' cannot be exported: it needs the network's features"
            )
        method.check_fitted()
    opts = (options or ExportOptions()).resolved()
    assert opts.height is not None and opts.width is not None
    class_names = source.class_names
    num_classes = int(getattr(model, "num_classes", 0) or len(class_names or []))
    if class_names is None:
        class_names = list(model_classes(source.dataset, None, num_classes).class_names)
    source = dataclasses.replace(source, model_name=name, class_names=list(class_names))
    model = model.eval()
    module = DeployModule(model, methods).eval()
    samples = check_samples(opts.height, opts.width, opts.dynamic, opts.seed)
    start = time.perf_counter()
    proto, export_s, report_check = _trace_and_check(model, module, samples, opts, name)
    if opts.check:
        report_check["logits_tolerance"] = opts.logits_tolerance
        require_agreement(
            report_check,
            samples,
            tolerance=opts.logits_tolerance,
            dynamic=opts.dynamic,
            model_name=name,
            out=out,
        )
        report_check["check_s"] = time.perf_counter() - start - export_s

    onnx = require("onnx", "ONNX export")
    meta = build_metadata(num_classes=num_classes, methods=methods, options=opts, source=source)
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
        dynamic=opts.dynamic,
        opset=opts.opset,
        size_bytes=len(data),
        export_s=export_s,
        check=check_public,
        metadata=meta,
    )


def spec_export_size(resize: str) -> tuple[int, int]:
    """(H, W) of a fixed-size export for a spec's resize policy: the policy's own size for
    "WxH", the policy applied to :data:`DEFAULT_SIZE` (StreetHazards' 1280x720 frames)
    otherwise."""
    from hazardseg.data.transforms import parse_resize_policy

    return parse_resize_policy(resize).output_size(*DEFAULT_SIZE)


def export_checkpoint(
    checkpoint: str | os.PathLike[str] | LoadedCheckpoint,
    out: str | os.PathLike[str],
    *,
    options: ExportOptions | None = None,
    methods: Sequence[str] | str | None = None,
    state_path: str | os.PathLike[str] | None = None,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> ExportReport:
    """Export a hazardseg checkpoint (or a :class:`LoadedCheckpoint` of a bare state dict) to
    ONNX for the checkpoint's evaluation spec.

    The graph is made for the spec's resize policy (recorded in the metadata): without a size
    and ``--dynamic`` it takes the policy's size (:func:`spec_export_size`). Fitted methods
    (sml) read their statistics from ``state_path`` (default: ``anomaly_state.pt`` beside
    the checkpoint), the fit under that resize without TTA; calibrated thresholds of the
    exported methods (with the settings they were calibrated under) go into the metadata.
    ``method_options``: method -> keyword arguments (e.g. ``{"energy": {"temperature": 2}}``).
    """
    from hazardseg.anomaly.state import AnomalyState, default_state_path
    from hazardseg.evaluation.spec import resolve_spec

    ckpt = open_checkpoint(checkpoint)
    family = ckpt.family
    names = resolve_method_names(methods, family)
    spec = resolve_spec(ckpt.config)
    spath = Path(state_path) if state_path is not None else default_state_path(ckpt.path)
    if state_path is not None and not spath.is_file():
        raise ExportError(f"anomaly state file not found: {spath}")
    state = AnomalyState.read(spath) if spath.is_file() else None
    wanted = {
        "split": spec.fit_split,
        "max_images": spec.fit_images,
        "resize": spec.resize,
        "tta": "none",
    }
    built, fits = build_methods(names, state, ckpt.sha256, wanted, method_options, family)
    thresholds = [
        t
        for t in (state.thresholds if state is not None else [])
        if t["method"] in built
        and t.get("options", built[t["method"]].options) == built[t["method"]].options
        and t.get("fit") == fits.get(t["method"])
    ]
    opts = options or ExportOptions()
    if not opts.dynamic and opts.height is None and opts.width is None:
        height, width = spec_export_size(spec.resize)
        opts = dataclasses.replace(opts, height=height, width=width)
    elif not opts.dynamic:
        made_for = spec_export_size(spec.resize)
        if spec.resize != "native" and (opts.height, opts.width) != made_for:
            log.warning(
                "the graph takes %sx%s (HxW) images but the checkpoint evaluates at resize %s "
                "(%sx%s): predict with it will need --resize %sx%s, and thresholds calibrated "
                "at that resize",
                opts.height, opts.width, spec.resize, made_for[0], made_for[1],
                opts.width, opts.height,
            )  # fmt: skip
    source = ExportSource(
        model_name=ckpt.model_name,
        class_names=ckpt.class_names,
        dataset=ckpt.dataset,
        checkpoint_sha256=ckpt.sha256,
        model_options=ckpt.info.get("model_options"),
        spec={"resize": spec.resize},
        fits=fits,
        thresholds=thresholds,
    )
    return export_model(ckpt.model, out, options=opts, methods=built, source=source)
