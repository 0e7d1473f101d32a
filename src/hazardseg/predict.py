"""``predict``: segmentation, anomaly heat map, thresholded anomaly mask and overlay for any
image files.

:class:`MapPredictor` (shared with ``visualize``) turns one image into per-pixel maps; fitted
method state and the calibrated threshold come from ``anomaly_state.pt`` beside the
checkpoint (or an explicit state file).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hazardseg.anomaly import create_method
from hazardseg.anomaly.state import (
    default_state_path,
    load_method_state,
    matching_thresholds,
    restore_methods,
)
from hazardseg.data.classes import ANOMALY_ID, PALETTE, colorize
from hazardseg.data.inputs import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from hazardseg.data.inputs import collect_images as collect_images
from hazardseg.data.transforms import build_eval_transform, load_image
from hazardseg.errors import CheckpointError, DataError, HazardsegError
from hazardseg.io import atomic_path, atomic_write_json
from hazardseg.models.checkpoint import load_model
from hazardseg.reports.panels import heatmap_rgb, overlay_segmentation, score_range

log = logging.getLogger(__name__)

PAD_MULTIPLE = 32
"""Inputs are padded (edge replication) to a multiple of this, then the maps are cropped."""


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
    """A loaded model plus one anomaly method (restored from the state file when fitted)."""

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        method: str = "max_logit",
        *,
        model_name: str | None = None,
        resize: str | None = None,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.model, self.info = load_model(checkpoint, model_name=model_name)
        self.model.eval()
        self.method_name = method
        self.method = create_method(method)
        cfg_eval = (self.info.get("config") or {}).get("eval") or {}
        self.resize = resize or str(cfg_eval.get("resize") or "native")
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
        entry = (
            matching_thresholds(state, {method: self.method}, sha).get(method) if state else None
        )
        self.calibrated: dict[str, Any] | None = entry

    @property
    def threshold(self) -> float | None:
        """The calibrated threshold of the method, or None when none was stored."""
        return None if self.calibrated is None else float(self.calibrated["threshold"])

    @torch.inference_mode()
    def __call__(self, image: Image.Image, out_size: tuple[int, int] | None = None) -> Maps:
        """Run the model on an RGB image; maps are returned at ``out_size`` (H, W), by
        default the image's own size."""
        h0, w0 = image.height, image.width
        out_size = out_size or (h0, w0)
        x, _ = self.transform(image, Image.new("L", image.size))
        x = x.unsqueeze(0)
        h, w = x.shape[-2:]
        ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        need_features = bool(self.method.needs_features)
        out = self.model(x, return_features=True) if need_features else self.model(x)
        logits = out["out"].float()
        score = self.method.score(logits, out.get("features")).float()
        logits, score = logits[..., :h, :w], score[..., :h, :w]
        if (h, w) != tuple(out_size):
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
            score = F.interpolate(
                score[:, None], size=out_size, mode="bilinear", align_corners=False
            )[:, 0]
        prob = logits.softmax(dim=1)
        conf, pred = prob.max(dim=1)
        return Maps(
            pred=pred[0].to(torch.uint8).numpy(),
            confidence=conf[0].numpy().astype(np.float32),
            score=score[0].numpy().astype(np.float32),
        )


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def mask_overlay(image: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Segmentation colours blended over the image with detected anomaly pixels painted in
    the anomaly colour; returns (H, W, 3) uint8."""
    out = overlay_segmentation(image, pred, alpha=0.45)
    out[mask] = (0.3 * out[mask] + 0.7 * PALETTE[ANOMALY_ID]).astype(np.uint8)
    return out


def predict(
    checkpoint: str | os.PathLike[str],
    inputs: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    method: str = "max_logit",
    threshold: float | None = None,
    model_name: str | None = None,
    resize: str | None = None,
    state_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Write ``<key>_seg.png``, ``<key>_heat.png``, ``<key>_mask.png`` and
    ``<key>_overlay.png`` per image into ``out_dir`` plus ``predictions.json``.

    The threshold is ``threshold`` when given, else the calibrated one stored for the method
    (HazardsegError when neither exists). Images that cannot be decoded are skipped with a
    warning and listed under ``failed`` in the returned summary.
    """
    images = collect_images(inputs)
    predictor = MapPredictor(
        checkpoint, method, model_name=model_name, resize=resize, state_path=state_path
    )
    if threshold is not None:
        thr, source = float(threshold), "--threshold"
    elif predictor.threshold is not None:
        thr, source = predictor.threshold, f"calibrated ({predictor.state_path})"
    else:
        raise HazardsegError(
            f"no calibrated threshold for method '{method}' in {predictor.state_path}: run "
            f"`hazardseg calibrate --checkpoint {checkpoint} --methods {method} ...` or pass "
            "--threshold X"
        )
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for path, key in images:
        try:
            pil = load_image(path)
        except DataError as exc:
            log.warning("skipping %s", exc)
            failed.append({"path": str(path), "error": str(exc)})
            continue
        maps = predictor(pil)
        rgb = np.asarray(pil, dtype=np.uint8)
        mask = np.nan_to_num(maps.score, nan=-np.inf) >= thr
        vmin, vmax = score_range([maps.score])
        files = {
            "segmentation": out / f"{key}_seg.png",
            "heat": out / f"{key}_heat.png",
            "mask": out / f"{key}_mask.png",
            "overlay": out / f"{key}_overlay.png",
        }
        _save_png(colorize(maps.pred), files["segmentation"])
        _save_png(heatmap_rgb(maps.score, vmin, vmax), files["heat"])
        _save_png(mask.astype(np.uint8) * 255, files["mask"])
        _save_png(mask_overlay(rgb, maps.pred, mask), files["overlay"])
        rows.append(
            {
                "image": str(path),
                "width": pil.width,
                "height": pil.height,
                "anomaly_fraction": float(mask.mean()),
                "heat_range": [vmin, vmax],
                "files": {k: str(v) for k, v in files.items()},
            }
        )
    summary = {
        "checkpoint": str(checkpoint),
        "method": method,
        "threshold": thr,
        "threshold_source": source,
        "resize": predictor.resize,
        "images": rows,
        "failed": failed,
    }
    atomic_write_json(out / "predictions.json", summary)
    return summary
