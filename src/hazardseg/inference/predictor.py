"""One image in, per-pixel maps out, with PyTorch: :class:`MapPredictor`.

Shared by ``predict`` and ``visualize``; the onnxruntime backend
(:class:`hazardseg.deploy.predictor.OnnxMapPredictor`) has the same interface
(:class:`hazardseg.inference.interface.Predictor`). Fitted method state and the calibrated
threshold come from the anomaly state file (``anomaly_state.pt`` beside the checkpoint, or
``run.state_path``); nothing is fitted or written here.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from PIL import Image

from hazardseg import distributed
from hazardseg.anomaly.state import AnomalyState
from hazardseg.config import EvalConfig
from hazardseg.data.transforms import build_eval_transform
from hazardseg.errors import CheckpointError, HazardsegError
from hazardseg.evaluation.methods import build_methods, fit_description, threshold_settings
from hazardseg.evaluation.spec import RunOptions, check_spec, resolve_spec, state_file
from hazardseg.inference.interface import Maps
from hazardseg.models.checkpoint import LoadedCheckpoint, open_checkpoint
from hazardseg.models.forward import forward_scores


class MapPredictor:
    """A loaded model plus one anomaly method (its fitted state restored from the state file).

    Images go through the one forward pass of hazardseg
    (:func:`hazardseg.models.forward.forward_scores`) with the evaluation spec (default: the
    checkpoint's ``eval:`` section): the input resize policy, precision, TTA and device,
    logits resized to the output size, then the score. A score map therefore equals the one
    ``evaluate --save-maps`` writes for the same image, and a threshold from ``calibrate``
    applies when it was calibrated under the same settings (see :attr:`calibrated`).
    """

    backend = "torch"

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] | LoadedCheckpoint,
        method: str = "max_logit",
        spec: EvalConfig | None = None,
        run: RunOptions | None = None,
    ) -> None:
        run = run or RunOptions()
        ckpt = open_checkpoint(checkpoint)
        self.checkpoint = ckpt
        self.info = ckpt.info
        self.dataset = ckpt.classes()
        self.spec = spec if spec is not None else resolve_spec(ckpt.config)
        check_spec(self.spec)
        self.device = distributed.resolve_device(self.spec.device)
        self.model = ckpt.model.to(self.device).eval()
        self.method_name = method
        methods = build_methods(method, run.method_options, ckpt.family)
        if list(methods) != [method]:
            raise HazardsegError(
                f"method {method!r}: predict draws one anomaly method at a time; "
                f"choose one of {', '.join(methods)}"
            )
        self.method = methods[method]
        self.resize = self.spec.resize
        self.transform = build_eval_transform(self.resize, at_label_resolution=True)
        self.state = AnomalyState.open(state_file(run, ckpt.path), ckpt.sha256, for_writing=False)
        self.state_path = self.state.path
        wanted = fit_description(self.spec)
        fits = self.state.restore({method: self.method}, wanted, explicit=run.explicit)
        if self.method.needs_fit and not fits.restored:
            raise CheckpointError(
                f"{self.state.no_fit_text(self.method, wanted)}: run `hazardseg calibrate "
                f"--checkpoint {ckpt.path} --methods {method}` with these settings first"
            )
        self.notes = fits.notes
        self.fit = fits.fits.get(method)
        # maps are computed at the image's own size: the label resolution of predict
        self.settings = threshold_settings(self.spec, self.device, at_label_resolution=True)
        self.calibrated: dict[str, Any] | None = self.state.threshold_for(
            self.method, self.fit, self.settings
        )

    @property
    def threshold(self) -> float | None:
        """The calibrated threshold that applies, or None when none was stored for these
        settings."""
        return None if self.calibrated is None else float(self.calibrated["threshold"])

    def missing_threshold(self) -> str:
        """Why no calibrated threshold applies (the stored settings that differ)."""
        return self.state.missing_threshold(self.method, self.fit, self.settings)

    @property
    def batch_size(self) -> int:
        """Images of one size per forward pass (the spec's ``batch_size``)."""
        return int(self.spec.batch_size)

    def describe(self) -> dict[str, Any]:
        """What this predictor does, for ``predictions.json``."""
        return {
            "backend": self.backend,
            "checkpoint": str(self.checkpoint.path),
            "method": self.method_name,
            "resize": self.resize,
            "precision": self.settings.precision,
            "tta": self.settings.tta,
            "device": str(self.device),
            "state_file": str(self.state_path),
            "fit": self.fit,
        }

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
        input_size = (int(x.shape[-2]), int(x.shape[-1]))
        return [
            Maps(
                pred=pred[i].to(torch.uint8).numpy(),
                confidence=conf[i].numpy().astype(np.float32),
                score=score[i].numpy().astype(np.float32),
                input_size=input_size,
            )
            for i in range(len(images))
        ]

    def __call__(self, image: Image.Image, out_size: tuple[int, int] | None = None) -> Maps:
        """Run the model on one RGB image; maps at ``out_size`` (H, W), by default the
        image's own size."""
        return self.predict_batch([image], out_size)[0]
