"""Run a hazardseg ONNX export with onnxruntime: uint8 RGB images in, numpy maps out.

::

    seg = OnnxSegmenter("model.onnx", threads=2)
    out = seg.run(frames)            # list of (H, W, 3) uint8 RGB, or one (N, H, W, 3) array
    out.class_map[0]                 # (H, W) uint8 known-class ids
    out.confidence[0]                # (H, W) float32 maximum softmax probability
    out.scores["sml"][0]             # (H, W) float32 anomaly score, higher = more anomalous
    seg.metadata.thresholds["sml"]   # calibrated threshold saved at export, if any
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hazardseg.deploy import DeployError, require
from hazardseg.deploy.interface import (
    CLASS_MAP,
    CONFIDENCE,
    EXPORT_FORMAT,
    INPUT_NAME,
    LOGITS,
    METADATA_PREFIX,
    SCORE_PREFIX,
)

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "layout", "all")
"""onnxruntime graph optimisation levels, weakest to strongest ("layout" needs ORT >= 1.22)."""


@dataclass(frozen=True)
class OnnxMetadata:
    """The hazardseg metadata of an exported model (``hazardseg.*`` metadata_props)."""

    format: int
    hazardseg_version: str
    model_name: str
    model_options: dict[str, Any]
    num_classes: int
    class_names: list[str]
    methods: list[str]
    method_options: dict[str, dict[str, Any]]
    threshold_entries: list[dict[str, Any]]
    """Calibrated thresholds of the exported methods, each with the settings it was
    calibrated under (resize, label resolution, precision, TTA, fit)."""
    input_size: tuple[int, int] | None
    """(H, W) the graph accepts, or None when any size is accepted (dynamic export)."""
    layout: str
    normalization: dict[str, Any]
    checkpoint_sha256: str
    opset: int
    export_check: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=lambda: {"resize": "native"})
    """The evaluation spec the graph was made for (``resize``; precision fp32, no TTA)."""
    method_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Fitted exported methods: ``{name: {"fit": {...}, "state": {...}}}``."""
    dataset: str | None = None
    """The dataset the model was trained on (its classes)."""

    @property
    def thresholds(self) -> dict[str, dict[str, Any]]:
        """Method -> the calibrated threshold under the graph's own spec (its resize, fp32,
        no TTA), where one was stored."""
        from hazardseg.anomaly.thresholds import ThresholdSettings, find_threshold

        settings = ThresholdSettings(
            resize=str(self.spec.get("resize", "native")),
            at_label_resolution=True,
            precision="fp32",
            tta="none",
        )
        out = {}
        for m in self.methods:
            fit = (self.method_states.get(m) or {}).get("fit")
            entry = find_threshold(
                self.threshold_entries, m, self.method_options.get(m, {}), fit, settings
            )
            if entry is not None:
                out[m] = entry
        return out

    @property
    def dynamic(self) -> bool:
        """Whether the graph accepts any image size."""
        return self.input_size is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = dict(self.__dict__)
        d["input_size"] = list(self.input_size) if self.input_size else None
        return d


def _threshold_entries(value: Any) -> list[dict[str, Any]]:
    """Threshold entries of the metadata: a list (this format), or a mapping method -> entry
    (exports of earlier versions: entries without a fit)."""
    if isinstance(value, dict):
        return [{**e, "method": m, "fit": None} for m, e in value.items() if isinstance(e, dict)]
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise ValueError("thresholds must be a list of entries")
    return list(value)


def parse_metadata(props: Mapping[str, str], where: str = "ONNX model") -> OnnxMetadata:
    """Validate and decode ``hazardseg.*`` metadata_props (a key -> string mapping)."""
    p = METADATA_PREFIX
    if f"{p}format" not in props:
        raise DeployError(
            f"{where}: not a hazardseg export (no '{p}format' metadata); export the "
            "checkpoint with `hazardseg export`"
        )
    try:
        fmt = int(props[f"{p}format"])
        if fmt > EXPORT_FORMAT:
            raise DeployError(
                f"{where}: hazardseg export format {fmt} is newer than this hazardseg supports "
                f"({EXPORT_FORMAT}); upgrade hazardseg"
            )
        size = props[f"{p}input_size"]
        input_size = None if size == "dynamic" else tuple(int(v) for v in json.loads(size))
        meta = OnnxMetadata(
            format=fmt,
            hazardseg_version=props.get(f"{p}version", ""),
            model_name=props[f"{p}model_name"],
            model_options=json.loads(props.get(f"{p}model_options", "{}")),
            num_classes=int(props[f"{p}num_classes"]),
            class_names=list(json.loads(props[f"{p}class_names"])),
            methods=list(json.loads(props[f"{p}methods"])),
            method_options=json.loads(props.get(f"{p}method_options", "{}")),
            threshold_entries=_threshold_entries(json.loads(props.get(f"{p}thresholds", "[]"))),
            input_size=input_size,  # type: ignore[arg-type]
            layout=props.get(f"{p}input_layout", "NHWC"),
            normalization=json.loads(props.get(f"{p}normalization", "{}")),
            checkpoint_sha256=props.get(f"{p}checkpoint_sha256", ""),
            opset=int(props.get(f"{p}opset", "0")),
            export_check=json.loads(props.get(f"{p}export_check", "{}")),
            spec=json.loads(props.get(f"{p}spec", '{"resize": "native"}')),
            method_states=json.loads(props.get(f"{p}method_states", "{}")),
            dataset=props.get(f"{p}dataset") or None,
        )
    except DeployError:
        raise
    except (KeyError, ValueError, TypeError) as exc:
        raise DeployError(
            f"{where}: malformed hazardseg metadata ({type(exc).__name__}: {exc})"
        ) from None
    if meta.layout != "NHWC":
        raise DeployError(f"{where}: input layout {meta.layout!r} is not supported (NHWC)")
    if input_size is not None and len(input_size) != 2:
        raise DeployError(f"{where}: malformed hazardseg input_size {size!r}")
    return meta


def read_metadata(path: str | os.PathLike[str]) -> OnnxMetadata:
    """The hazardseg metadata of an .onnx file (reads the graph, does not start a session)."""
    onnx = require("onnx", "reading an ONNX model")
    p = Path(path)
    if not p.is_file():
        raise DeployError(f"ONNX model not found: {p}")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf decode errors come in several types
        raise DeployError(f"{p}: not a readable ONNX model ({exc})") from None
    return parse_metadata({e.key: e.value for e in model.metadata_props}, str(p))


@dataclass
class OnnxOutputs:
    """Maps of a batch of N images, each (N, H, W) at the input size."""

    class_map: np.ndarray
    """Known-class ids, uint8 (int64 when the model has more than 256 classes)."""
    confidence: np.ndarray | None
    """Maximum softmax probability, float32."""
    scores: dict[str, np.ndarray]
    """Anomaly score per exported method, float32, higher = more anomalous."""
    logits: np.ndarray | None = None
    """(N, C, H, W) float32, only when asked for."""


def _session_options(
    ort: Any, threads: int | None, optimization: str, spinning: bool | None
) -> Any:
    if optimization not in OPTIMIZATION_LEVELS:
        raise DeployError(
            f"unknown graph optimisation level {optimization!r}; expected one of "
            f"{', '.join(OPTIMIZATION_LEVELS)}"
        )
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    layout = getattr(ort.GraphOptimizationLevel, "ORT_ENABLE_LAYOUT", None)
    if optimization == "layout" and layout is None:
        raise DeployError("graph optimisation level 'layout' needs onnxruntime >= 1.22")
    levels["layout"] = layout
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if threads is not None:
        if threads < 0:
            raise DeployError(f"threads must be >= 0 (0 = onnxruntime's default), got {threads}")
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if spinning is not None:
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
    return options


class OnnxSegmenter:
    """An onnxruntime session on a hazardseg export, validated against its metadata.

    ``threads``: intra-op threads (None or 0 = onnxruntime's default, one per core);
    ``optimization``: graph optimisation level (see :data:`OPTIMIZATION_LEVELS`);
    ``spinning``: let idle worker threads spin (None = onnxruntime's default; False is kinder
    to other processes on a shared CPU); ``providers``: onnxruntime execution providers
    (default: CPU).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        optimization: str = "all",
        spinning: bool | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        ort = require("onnxruntime", "running an ONNX model")
        self.path = Path(path)
        if not self.path.is_file():
            raise DeployError(f"ONNX model not found: {self.path}")
        options = _session_options(ort, threads, optimization, spinning)
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            text = " ".join(str(exc).split())[:300]
            raise DeployError(f"{self.path}: onnxruntime cannot load this model ({text})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = parse_metadata(props, str(self.path))
        self._check_signature()

    def _check_signature(self) -> None:
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            names = [i.name for i in inputs]
            raise DeployError(f"{self.path}: expected one input '{INPUT_NAME}', found {names}")
        inp = inputs[0]
        if inp.type != "tensor(uint8)" or len(inp.shape) != 4 or inp.shape[3] != 3:
            raise DeployError(
                f"{self.path}: input '{INPUT_NAME}' is {inp.type} {inp.shape}; expected uint8 "
                "(N, H, W, 3)"
            )
        size = self.metadata.input_size
        if size is not None and [inp.shape[1], inp.shape[2]] != list(size):
            raise DeployError(
                f"{self.path}: input shape {inp.shape} does not match the metadata size {size}"
            )
        self.output_names = [o.name for o in self.session.get_outputs()]
        expected = [LOGITS, CLASS_MAP, CONFIDENCE, *self.score_names.values()]
        missing = [n for n in expected if n not in self.output_names]
        if missing:
            raise DeployError(
                f"{self.path}: outputs {missing} are missing (has {self.output_names})"
            )

    @property
    def methods(self) -> list[str]:
        """Exported anomaly methods, in output order."""
        return list(self.metadata.methods)

    @property
    def score_names(self) -> dict[str, str]:
        """Method name -> output name."""
        return {m: SCORE_PREFIX + m for m in self.metadata.methods}

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) the graph accepts, or None for any size."""
        return self.metadata.input_size

    def _batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[None]
        if not isinstance(images, np.ndarray):
            items = list(images)
            if not items:
                raise DeployError("no images given")
            shapes = {tuple(np.shape(i)) for i in items}
            if len(shapes) > 1:
                raise DeployError(f"images of one batch must share one size, got {sorted(shapes)}")
            images = np.stack([np.asarray(i) for i in items])
        if images.ndim != 4 or images.shape[-1] != 3:
            raise DeployError(
                f"expected RGB images (H, W, 3) or a batch (N, H, W, 3), got shape "
                f"{tuple(images.shape)}"
            )
        if images.dtype != np.uint8:
            raise DeployError(
                f"expected uint8 RGB images, got dtype {images.dtype}; convert with "
                "np.clip(x, 0, 255).astype(np.uint8) (0..255 values)"
            )
        size = self.metadata.input_size
        if size is not None and tuple(images.shape[1:3]) != tuple(size):
            raise DeployError(
                f"{self.path.name} takes {size[0]}x{size[1]} (HxW) images, got "
                f"{images.shape[1]}x{images.shape[2]}; resize them or export with --dynamic"
            )
        return np.ascontiguousarray(images)

    def run(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        *,
        methods: Sequence[str] | None = None,
        logits: bool = False,
        confidence: bool = True,
    ) -> OnnxOutputs:
        """Maps for a batch of uint8 RGB images (one (H, W, 3) array, a list of them of one
        size, or an (N, H, W, 3) array). ``methods``: the scores to return (default: all
        exported); ``logits``: also return the logits."""
        batch = self._batch(images)
        wanted = self.methods if methods is None else list(methods)
        unknown = [m for m in wanted if m not in self.metadata.methods]
        if unknown:
            raise DeployError(
                f"{self.path.name}: anomaly method(s) {', '.join(unknown)} were not exported "
                f"(exported: {', '.join(self.methods) or 'none'})"
            )
        names = [CLASS_MAP]
        if confidence:
            names.append(CONFIDENCE)
        if logits:
            names.append(LOGITS)
        names += [SCORE_PREFIX + m for m in wanted]
        values = dict(zip(names, self.session.run(names, {INPUT_NAME: batch}), strict=True))
        return OnnxOutputs(
            class_map=values[CLASS_MAP],
            confidence=values.get(CONFIDENCE),
            scores={m: values[SCORE_PREFIX + m] for m in wanted},
            logits=values.get(LOGITS),
        )

    def __repr__(self) -> str:
        size = (
            "dynamic" if self.input_size is None else f"{self.input_size[0]}x{self.input_size[1]}"
        )
        return (
            f"OnnxSegmenter({str(self.path)!r}, model={self.metadata.model_name}, "
            f"methods={self.methods}, input={size})"
        )
