"""The onnxruntime prediction backend: :class:`OnnxMapPredictor`, the
:class:`hazardseg.inference.interface.Predictor` of an exported graph, and
:func:`open_predictor`, which builds the predictor of either backend.

It follows the PyTorch contract exactly (:class:`hazardseg.inference.predictor.MapPredictor`):

1. the evaluation spec is the one the export was made for (its ``resize``; fp32, no TTA),
   with ``--resize`` / ``--batch-size`` / a ``--config`` file over it, resolved by
   :func:`hazardseg.evaluation.spec.resolve_spec`;
2. the image is resized by that policy with the evaluation transform's resize (the same
   pixels PyTorch sees); a fixed-size graph must take that size, else the image is refused
   with what to do (a fixed graph never silently changes the policy);
3. the graph's logits are resized bilinearly to the output size and the score is computed
   from them by the method itself (``sml`` with the fitted statistics stored in the
   metadata); when no resize is needed the graph's own outputs are used;
4. a calibrated threshold applies only when it was calibrated under the same settings
   (resize, label resolution, fp32, no TTA, the method's fit), as in PyTorch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hazardseg.anomaly.thresholds import (
    ThresholdSettings,
    describe_fit,
    find_threshold,
    missing_threshold_text,
)
from hazardseg.config import EvalConfig
from hazardseg.data.registry import model_classes
from hazardseg.deploy import DeployError
from hazardseg.evaluation.spec import RunOptions, SpecRequest, check_spec, resolve_spec
from hazardseg.inference.interface import Maps, Predictor

BACKENDS = ("torch", "onnxruntime")


class OnnxMapPredictor:
    """An exported graph (``hazardseg export``) run with onnxruntime, one anomaly method."""

    backend = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        method: str = "max_logit",
        spec: EvalConfig | None = None,
        threads: int | None = None,
    ) -> None:
        from hazardseg.data.transforms import parse_resize_policy
        from hazardseg.deploy.onnx_runtime import OnnxSegmenter

        self.segmenter = OnnxSegmenter(onnx_path, threads=threads)
        meta = self.segmenter.metadata
        if method not in self.segmenter.methods:
            raise DeployError(
                f"{onnx_path}: method '{method}' was not exported (exported: "
                f"{', '.join(self.segmenter.methods) or 'none'}); re-export with --method {method}"
            )
        self.spec = spec if spec is not None else onnx_spec(meta.spec)
        check_spec(self.spec)
        _check_graph_spec(self.spec)
        self.method_name = method
        self.dataset = model_classes(meta.dataset, meta.class_names, meta.num_classes)
        self.resize = self.spec.resize
        self.policy = parse_resize_policy(self.resize)
        self.batch_size = int(self.spec.batch_size)
        self.device = "cpu (onnxruntime)"
        self.state_path = Path(onnx_path)
        self.method = _exported_method(meta, method)
        self.fit = (meta.method_states.get(method) or {}).get("fit")
        if self.fit and str(self.fit.get("resize")) != str(self.resize):
            # as in PyTorch: a state fitted under one resize is not used at another
            raise DeployError(
                f"method '{method}' needs fitted state under resize {self.resize}, tta none; "
                f"{onnx_path} holds the state fitted on {describe_fit(self.fit)}: predict at "
                f"--resize {self.fit.get('resize')} or export a state fitted at {self.resize}"
            )
        self.settings = ThresholdSettings(
            resize=self.resize,
            at_label_resolution=True,
            precision="fp32",
            tta="none",
            precision_requested=self.spec.precision,
        )
        self.calibrated: dict[str, Any] | None = find_threshold(
            meta.threshold_entries, method, self.method.options, self.fit, self.settings
        )

    @property
    def threshold(self) -> float | None:
        """The calibrated threshold stored in the graph's metadata for these settings."""
        return None if self.calibrated is None else float(self.calibrated["threshold"])

    def missing_threshold(self) -> str:
        """Why no calibrated threshold of the metadata applies (the settings that differ)."""
        return missing_threshold_text(
            self.segmenter.metadata.threshold_entries,
            self.method_name,
            self.method.options,
            self.fit,
            self.settings,
            str(self.state_path),
        )

    def describe(self) -> dict[str, Any]:
        """What this predictor does, for ``predictions.json``."""
        size = self.segmenter.input_size
        return {
            "backend": self.backend,
            "onnx": str(self.state_path),
            "method": self.method_name,
            "resize": self.resize,
            "precision": "fp32",
            "tta": "none",
            "device": self.device,
            "graph_input": "dynamic" if size is None else f"{size[1]}x{size[0]}",
            "fit": self.fit,
        }

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) the network sees for an image of this size: the resize policy's, which a
        fixed-size graph must accept."""
        want = self.policy.output_size(height, width)
        fixed = self.segmenter.input_size
        if fixed is not None and tuple(fixed) != tuple(want):
            fh, fw = fixed
            raise DeployError(
                f"{self.state_path.name} takes {fw}x{fh} (WxH) images, but resize "
                f"{self.resize} makes this {width}x{height} image {want[1]}x{want[0]}: "
                f"export with --dynamic (or at --width {want[1]} --height {want[0]}), or pass "
                f"--resize {fw}x{fh} (thresholds calibrated at another resize do not apply)"
            )
        return want

    def predict_batch(
        self, images: Sequence[Image.Image], out_size: tuple[int, int] | None = None
    ) -> list[Maps]:
        """Maps of RGB images of one size at ``out_size`` (H, W; default: their size)."""
        from hazardseg.data.transforms import resize_uint8_image
        from hazardseg.models.forward import resize_logits

        if not images:
            return []
        w0, h0 = images[0].size
        if any(im.size != (w0, h0) for im in images):
            raise ValueError("predict_batch needs images of one size")
        out_h, out_w = out_size or (h0, w0)
        gh, gw = self.input_size(h0, w0)
        arr = np.stack([resize_uint8_image(im, (gh, gw)) for im in images])
        exact = (gh, gw) == (out_h, out_w)
        out = self.segmenter.run(
            arr, methods=[self.method_name], logits=not exact, confidence=exact
        )
        if exact:
            pred, conf, score = out.class_map, out.confidence, out.scores[self.method_name]
        else:
            with torch.inference_mode():
                logits = resize_logits(torch.from_numpy(out.logits), (out_h, out_w))
                c, p = logits.softmax(dim=1).max(dim=1)
                pred, conf = p.to(torch.uint8).numpy(), c.numpy()
                score = self.method.score(logits).float().numpy()
        return [
            Maps(
                pred=np.asarray(pred[i], dtype=np.uint8),
                confidence=np.asarray(conf[i], dtype=np.float32),
                score=np.asarray(score[i], dtype=np.float32),
                input_size=(gh, gw),
            )
            for i in range(len(images))
        ]


def onnx_spec(graph_spec: Mapping[str, Any]) -> EvalConfig:
    """The evaluation spec of an exported graph: the spec it was made for (its resize; fp32,
    no TTA)."""
    return resolve_spec({"eval": {"resize": graph_spec.get("resize", "native")}})


def _check_graph_spec(spec: EvalConfig) -> None:
    from hazardseg.models.forward import parse_tta

    if parse_tta(spec.tta) is not None:
        raise DeployError(
            f"--tta {spec.tta}: the exported graph runs one view (no test-time augmentation); "
            "use the torch backend for TTA"
        )
    if spec.precision not in ("auto", "fp32"):
        raise DeployError(
            f"--precision {spec.precision}: the exported graph computes in fp32; use the torch "
            "backend for other precisions"
        )
    if str(spec.device).lower() not in ("auto", "cpu"):
        raise DeployError(
            f"--device {spec.device}: the onnxruntime backend runs on the CPU; use the torch "
            "backend for other devices"
        )
    if not spec.at_label_resolution:
        raise DeployError(
            "at_label_resolution false: predict computes maps at the image's own size"
        )


def _exported_method(meta: Any, name: str) -> Any:
    """The method ``name`` with the options (and fitted statistics) it was exported with."""
    from hazardseg.anomaly import create_method

    method = create_method(name, **dict(meta.method_options.get(name) or {}))
    if method.needs_fit:
        entry = meta.method_states.get(name)
        if entry is None:
            raise DeployError(
                f"{name}: this export (hazardseg {meta.hazardseg_version or '?'}) does not "
                "carry its fitted statistics; export it again with this hazardseg version"
            )
        method.load_state_dict({k: torch.as_tensor(v) for k, v in entry["state"].items()})
    return method


def open_predictor(
    backend: str,
    method: str,
    *,
    source: str | os.PathLike[str] | Any | None,
    request: SpecRequest | None = None,
    run: RunOptions | None = None,
    threads: int | None = None,
) -> Predictor:
    """The predictor of ``backend`` for ``source``: "torch" (a checkpoint; ``request``
    resolved over its ``eval:`` section) or "onnxruntime" (an exported graph; ``request``
    resolved over the spec the export was made for). ``threads``: onnxruntime's."""
    if backend not in BACKENDS:
        raise DeployError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    request = request or SpecRequest()
    run = dataclasses.replace(run or RunOptions(), explicit=request.explicit)
    if backend == "onnxruntime":
        if source is None:
            raise DeployError("--backend onnxruntime needs --onnx MODEL.onnx (hazardseg export)")
        from hazardseg.deploy.onnx_runtime import read_metadata

        graph_spec = read_metadata(source).spec
        spec = request.resolve({"eval": {"resize": graph_spec.get("resize", "native")}})
        return OnnxMapPredictor(source, method, spec, threads)
    if source is None:
        raise DeployError("--checkpoint is required with the torch backend")
    from hazardseg.inference.predictor import MapPredictor
    from hazardseg.models.checkpoint import open_checkpoint

    ckpt = open_checkpoint(source)
    return MapPredictor(ckpt, method, request.resolve(ckpt.config), run)
