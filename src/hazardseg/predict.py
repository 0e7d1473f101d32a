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
from hazardseg.data.classes import ANOMALY_ID, PALETTE, colorize
from hazardseg.data.imageio import check_regular_file
from hazardseg.data.inputs import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from hazardseg.data.inputs import collect_images as collect_images
from hazardseg.data.transforms import build_eval_transform, load_image
from hazardseg.errors import CheckpointError, DataError, HazardsegError
from hazardseg.evaluation.spec import resolve_spec
from hazardseg.io import atomic_path, atomic_write_json
from hazardseg.models.checkpoint import load_model
from hazardseg.models.inference import forward_scores, parse_tta
from hazardseg.reports.panels import heatmap_rgb, overlay_segmentation, score_range

log = logging.getLogger(__name__)


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


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def mask_overlay(image: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Segmentation colours blended over the image with detected anomaly pixels painted in
    the anomaly colour; returns (H, W, 3) uint8."""
    out = overlay_segmentation(image, pred, alpha=0.45)
    out[mask] = (0.3 * out[mask] + 0.7 * PALETTE[ANOMALY_ID]).astype(np.uint8)
    return out


def _write_outputs(
    out: Path, key: str, path: Path, pil: Image.Image, maps: Maps, thr: float
) -> dict[str, Any]:
    """Write the four PNGs of one image; return its predictions.json row."""
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
    return {
        "image": str(path),
        "width": pil.width,
        "height": pil.height,
        "anomaly_fraction": float(mask.mean()),
        "heat_range": [vmin, vmax],
        "files": {k: str(v) for k, v in files.items()},
    }


def _resolve_threshold(
    predictor: Any, threshold: float | None, checkpoint: Any
) -> tuple[float, str]:
    if threshold is not None:
        return float(threshold), "--threshold"
    if predictor.threshold is not None:
        return predictor.threshold, f"calibrated ({predictor.state_path})"
    method = predictor.method_name
    raise HazardsegError(
        f"no calibrated threshold for method '{method}' in {predictor.state_path}: run "
        f"`hazardseg calibrate --checkpoint {checkpoint} --methods {method} ...` or pass "
        "--threshold X"
    )


BACKENDS = ("torch", "onnxruntime")


def _make_predictor(
    checkpoint: str | os.PathLike[str] | None,
    method: str,
    spec: EvalConfig | None,
    run: dict[str, Any],
    settings: dict[str, Any],
) -> Any:
    """A MapPredictor (PyTorch) or an OnnxMapPredictor (exported graph)."""
    backend = run["backend"]
    if backend not in BACKENDS:
        raise HazardsegError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        if run["onnx"] is None:
            raise HazardsegError("--backend onnxruntime needs --onnx MODEL.onnx (hazardseg export)")
        from hazardseg.deploy.predictor import OnnxMapPredictor

        unsupported = sorted(k for k in settings if k not in ("resize", "batch_size", "device"))
        if unsupported or settings.get("device") not in (None, "auto", "cpu"):
            bad = ", ".join(unsupported) or f"device={settings['device']}"
            raise HazardsegError(f"--backend onnxruntime: {bad} applies to the torch backend only")
        return OnnxMapPredictor(
            run["onnx"],
            method,
            resize=settings.get("resize"),
            batch_size=settings.get("batch_size") or 1,
            threads=run["threads"],
        )
    if checkpoint is None:
        raise HazardsegError("--checkpoint is required with the torch backend")
    return MapPredictor(
        checkpoint,
        method,
        spec=spec,
        model_name=run["model_name"],
        state_path=run["state_path"],
        **settings,
    )


def _unique_dir(out: Path, stem: str, taken: set[str]) -> Path:
    name, n = stem, 1
    while name.lower() in taken:
        n += 1
        name = f"{stem}_{n}"
    taken.add(name.lower())
    return out / name


def predict(
    checkpoint: str | os.PathLike[str] | None,
    inputs: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    method: str = "max_logit",
    threshold: float | None = None,
    state_path: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
    spec: EvalConfig | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Write ``<key>_seg.png``, ``<key>_heat.png``, ``<key>_mask.png`` and
    ``<key>_overlay.png`` per image into ``out_dir`` plus ``predictions.json``; for each
    video input (mp4/avi/mkv/mov/webm), ``out_dir/<name>/overlay.mp4``, ``frames.jsonl`` and
    ``video.json`` (frames streamed, never all in memory).

    ``settings`` are evaluation-spec fields (``resize``, ``device``, ``batch_size``,
    ``precision``, ``tta``, ``config_file``) and the run options ``backend`` ("torch" or
    "onnxruntime"), ``onnx`` (the exported graph for onnxruntime; ``checkpoint`` may then be
    None), ``threads`` (onnxruntime), ``every`` (process every N-th video frame) and
    ``progress``. Consecutive images of one size are run as one batch of up to
    ``batch_size``. The threshold is ``threshold`` when given, else the calibrated one stored
    for the method (HazardsegError when neither exists). Images that cannot be decoded are
    skipped with a warning and listed under ``failed`` in the returned summary.
    """
    run = {
        "backend": settings.pop("backend", "torch") or "torch",
        "onnx": settings.pop("onnx", None),
        "threads": settings.pop("threads", None),
        "every": int(settings.pop("every", 1) or 1),
        "progress": bool(settings.pop("progress", False)),
        "model_name": model_name,
        "state_path": state_path,
    }
    if run["every"] < 1:
        raise HazardsegError(f"--every {run['every']}: expected a positive number of frames")
    from hazardseg.deploy.video import is_video

    videos = [Path(p) for p in inputs if is_video(p) and not Path(p).is_dir()]
    still = [p for p in inputs if not (is_video(p) and not Path(p).is_dir())]
    for v in videos:
        check_regular_file(v)
    images = collect_images(still) if still else []
    predictor = _make_predictor(checkpoint, method, spec, run, settings)
    thr, source = _resolve_threshold(predictor, threshold, checkpoint)
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    pending: list[tuple[Path, str, Image.Image]] = []
    batch_size = predictor.batch_size

    def flush() -> None:
        if pending:
            maps = predictor.predict_batch([pil for _, _, pil in pending])
            for (path, key, pil), m in zip(pending, maps, strict=True):
                rows.append(_write_outputs(out, key, path, pil, m, thr))
            pending.clear()

    for path, key in images:
        try:
            pil = load_image(path)
        except DataError as exc:
            log.warning("skipping %s", exc)
            failed.append({"path": str(path), "error": str(exc)})
            continue
        if pending and pending[0][2].size != pil.size:
            flush()
        pending.append((path, key, pil))
        if len(pending) >= batch_size:
            flush()
    flush()
    video_rows: list[dict[str, Any]] = []
    if videos:
        from hazardseg.deploy.predictor import predict_video

        taken: set[str] = set()
        for video in videos:
            vdir = _unique_dir(out, video.stem, taken)
            info = predict_video(
                predictor, video, vdir, thr, every=run["every"], progress=run["progress"]
            )
            video_rows.append({"video": str(video), "out": str(vdir), **info})
    summary = {
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "backend": run["backend"],
        "onnx": None if run["onnx"] is None else str(run["onnx"]),
        "method": method,
        "threshold": thr,
        "threshold_source": source,
        "resize": predictor.resize,
        "device": str(predictor.device),
        "batch_size": batch_size,
        "images": rows,
        "videos": video_rows,
        "failed": failed,
    }
    atomic_write_json(out / "predictions.json", summary)
    return summary
