"""``predict`` with the onnxruntime backend, and ``predict`` on videos (either backend).

:class:`OnnxMapPredictor` has the interface of :class:`hazardseg.inference.predictor.MapPredictor`
(``predict_batch(images) -> [Maps]``, ``threshold``, ``method_name``, ``resize``), so the
``predict`` command writes the same files with either backend.

What the exported graph computes equals the PyTorch path (logits at the image's size, then
the score) when the graph accepts the image as it is: a ``--dynamic`` export and the
``native`` resize policy. Otherwise the image is resized to what the graph takes (its fixed
size, or the resize policy), the graph's logits are resized back to the image's size and the
logit-based scores (msp, max_logit, energy, entropy) are computed from them as in PyTorch;
for ``sml`` the graph's score map is resized instead (its fitted statistics live in the
graph), which is the one documented difference.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hazardseg.deploy import DeployError

LOGIT_METHODS = ("msp", "max_logit", "energy", "entropy")


class OnnxMapPredictor:
    """An exported graph (``hazardseg export``) run with onnxruntime, one anomaly method."""

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        method: str = "max_logit",
        *,
        resize: str | None = None,
        batch_size: int = 1,
        threads: int | None = None,
    ) -> None:
        from hazardseg.data.transforms import parse_resize_policy
        from hazardseg.deploy.onnx_runtime import OnnxSegmenter

        self.segmenter = OnnxSegmenter(onnx_path, threads=threads)
        if method not in self.segmenter.methods:
            raise DeployError(
                f"{onnx_path}: method '{method}' was not exported (exported: "
                f"{', '.join(self.segmenter.methods) or 'none'}); re-export with --method {method}"
            )
        self.method_name = method
        self.resize = resize or "native"
        self.policy = parse_resize_policy(self.resize)
        self.batch_size = int(batch_size)
        self.device = "cpu (onnxruntime)"
        self.state_path = Path(onnx_path)
        self.calibrated: dict[str, Any] | None = self.segmenter.metadata.thresholds.get(method)

    @property
    def threshold(self) -> float | None:
        """The calibrated threshold stored in the graph's metadata, or None."""
        return None if self.calibrated is None else float(self.calibrated["threshold"])

    def _graph_size(self, width: int, height: int) -> tuple[int, int]:
        """(W, H) the image is fed to the graph at."""
        fixed = self.segmenter.input_size
        if fixed is not None:
            return fixed[1], fixed[0]
        h, w = self.policy.output_size(height, width)
        return w, h

    def predict_batch(
        self, images: Sequence[Image.Image], out_size: tuple[int, int] | None = None
    ) -> list[Any]:
        """Maps of RGB images of one size at ``out_size`` (H, W; default: their size)."""
        import torch
        import torch.nn.functional as F

        from hazardseg.anomaly import create_method
        from hazardseg.inference.predictor import Maps

        if not images:
            return []
        w0, h0 = images[0].size
        out_h, out_w = out_size or (h0, w0)
        gw, gh = self._graph_size(w0, h0)
        feed = [im if im.size == (gw, gh) else im.resize((gw, gh), Image.BILINEAR) for im in images]
        arr = np.stack([np.asarray(im, dtype=np.uint8) for im in feed])
        exact = (gh, gw) == (out_h, out_w)
        rescore = not exact and self.method_name in LOGIT_METHODS
        out = self.segmenter.run(
            arr, methods=[self.method_name], logits=not exact, confidence=exact
        )
        if exact:
            pred, conf, score = out.class_map, out.confidence, out.scores[self.method_name]
        else:
            logits = F.interpolate(
                torch.from_numpy(out.logits), size=(out_h, out_w), mode="bilinear",
                align_corners=False,
            )  # fmt: skip
            c, p = logits.softmax(dim=1).max(dim=1)
            pred, conf = p.to(torch.uint8).numpy(), c.numpy()
            if rescore:
                score = create_method(self.method_name).score(logits).numpy()
            else:
                score = F.interpolate(
                    torch.from_numpy(out.scores[self.method_name])[:, None],
                    size=(out_h, out_w), mode="bilinear", align_corners=False,
                )[:, 0].numpy()  # fmt: skip
        return [
            Maps(
                pred=np.asarray(pred[i], dtype=np.uint8),
                confidence=np.asarray(conf[i], dtype=np.float32),
                score=np.asarray(score[i], dtype=np.float32),
            )
            for i in range(len(images))
        ]


def predict_video(
    predictor: Any,
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    threshold: float,
    *,
    every: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Stream one video through ``predictor`` (either backend): ``out_dir/overlay.mp4``
    (segmentation + detected anomalies), ``out_dir/frames.jsonl`` (per frame: anomaly
    fraction, threshold, method) and ``out_dir/video.json``; returns the summary."""
    from hazardseg.deploy.video import process_video
    from hazardseg.inference.render import mask_overlay

    method = predictor.method_name

    def frame_fn(frames: list[np.ndarray]) -> list[tuple[np.ndarray, dict[str, Any]]]:
        maps = predictor.predict_batch([Image.fromarray(f) for f in frames])
        results = []
        for frame, m in zip(frames, maps, strict=True):
            mask = np.nan_to_num(m.score, nan=-np.inf) >= threshold
            record = {
                "anomaly_fraction": float(mask.mean()),
                "threshold": float(threshold),
                "method": method,
            }
            results.append((mask_overlay(frame, m.pred, mask), record))
        return results

    summary = process_video(
        path, out_dir, frame_fn, every=every, batch_size=predictor.batch_size, progress=progress
    )
    return summary.to_dict()
