"""One image in, per-pixel maps out: :class:`MapPredictor` (PyTorch) and its :class:`Maps`.

Shared by ``predict`` and ``visualize``; the ONNX backend
(:class:`hazardseg.deploy.predictor.OnnxMapPredictor`) returns the same :class:`Maps`.
Fitted method state and the calibrated threshold come from ``anomaly_state.pt`` beside the
checkpoint (or an explicit state file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hazardseg import distributed
from hazardseg.anomaly import create_method
from hazardseg.anomaly.state import (
    default_state_path,
    load_method_state,
    matching_thresholds,
    restore_methods,
)
from hazardseg.config import EvalConfig
from hazardseg.data.inputs import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from hazardseg.data.inputs import collect_images as collect_images
from hazardseg.data.transforms import build_eval_transform
from hazardseg.errors import CheckpointError
from hazardseg.evaluation.spec import resolve_spec
from hazardseg.models.checkpoint import load_model
from hazardseg.models.inference import forward_scores, parse_tta


@dataclass
class Maps:
    """Maps of one image at the requested output size (H, W)."""

    pred: np.ndarray
    """Known-class ids (uint8)."""
    confidence: np.ndarray
    """Maximum softmax probability (float32)."""
    score: np.ndarray
    """Anomaly score, higher = more anomalous (float32)."""


class MapPredictor:
    """A loaded model plus one anomaly method (restored from the state file when fitted).

    Images go through the one forward pass of hazardseg
    (:func:`hazardseg.models.inference.forward_scores`) with the evaluation spec resolved as
    in ``evaluate`` (checkpoint ``eval:`` section, then ``spec`` / keyword settings): the
    input resize policy, precision and device, logits resized to the output size, then the
    score. A score map therefore equals the one ``evaluate --save-maps`` writes for the
    same image, and a threshold from ``calibrate`` means the same here.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        method: str = "max_logit",
        *,
        spec: EvalConfig | None = None,
        model_name: str | None = None,
        state_path: str | os.PathLike[str] | None = None,
        **settings: Any,
    ) -> None:
        model, self.info = load_model(checkpoint, model_name=model_name)
        base = spec
        cfg = None if spec is not None else self.info.get("config")
        config_file = settings.pop("config_file", None)
        self.spec = resolve_spec(cfg, config_file, base=base, **settings)
        self.device = distributed.resolve_device(self.spec.device)
        self.model = model.to(self.device).eval()
        self.method_name = method
        self.method = create_method(method)
        self.resize = self.spec.resize
        self.transform = build_eval_transform(self.resize, at_label_resolution=True)
        spath = Path(state_path) if state_path is not None else default_state_path(checkpoint)
        self.state_path = spath
        state: dict[str, Any] | None = load_method_state(spath) if spath.is_file() else None
        sha = self.info["sha256"]
        if self.method.needs_fit:
            restored = restore_methods(state, {method: self.method}, sha) if state else []
            if not restored:
                raise CheckpointError(
                    f"method '{method}' needs fitted state and {spath} has none for this "
                    "checkpoint: run `hazardseg evaluate` or `hazardseg calibrate` with "
                    f"--methods {method} first"
                )
            fitted_tta = (state or {})["methods"][method].get("fit", {}).get("tta", "none")
            if fitted_tta != str(parse_tta(self.spec.tta) or "none"):
                raise CheckpointError(
                    f"method '{method}' in {spath} was fitted with tta {fitted_tta!r}, not "
                    f"{self.spec.tta!r}: run `hazardseg evaluate` or `hazardseg calibrate` with "
                    f"--methods {method} --tta {self.spec.tta} first"
                )
        entry = (
            matching_thresholds(state, {method: self.method}, sha, self.spec).get(method)
            if state
            else None
        )
        self.calibrated: dict[str, Any] | None = entry

    @property
    def threshold(self) -> float | None:
        """The calibrated threshold of the method, or None when none was stored."""
        return None if self.calibrated is None else float(self.calibrated["threshold"])

    @property
    def batch_size(self) -> int:
        """Images of one size per forward pass (the spec's ``batch_size``)."""
        return int(self.spec.batch_size)

    @torch.inference_mode()
    def predict_batch(
        self, images: list[Image.Image], out_size: tuple[int, int] | None = None
    ) -> list[Maps]:
        """Maps of RGB images of one size, at ``out_size`` (H, W; default: their size)."""
        if not images:
            return []
        size = images[0].size
        if any(im.size != size for im in images):
            raise ValueError("predict_batch needs images of one size")
        out_size = out_size or (size[1], size[0])
        blank = Image.new("L", size)
        x = torch.stack([self.transform(im, blank)[0] for im in images])
        scored = forward_scores(
            self.model,
            x,
            {self.method_name: self.method},
            self.device,
            out_size,
            precision=self.spec.precision,
            tta=self.spec.tta,
        )
        conf, pred = scored.logits.softmax(dim=1).max(dim=1)
        score = scored.scores[self.method_name].float()
        pred, conf, score = pred.cpu(), conf.cpu(), score.cpu()
        return [
            Maps(
                pred=pred[i].to(torch.uint8).numpy(),
                confidence=conf[i].numpy().astype(np.float32),
                score=score[i].numpy().astype(np.float32),
            )
            for i in range(len(images))
        ]

    def __call__(self, image: Image.Image, out_size: tuple[int, int] | None = None) -> Maps:
        """Run the model on one RGB image; maps at ``out_size`` (H, W), by default the
        image's own size."""
        return self.predict_batch([image], out_size)[0]
