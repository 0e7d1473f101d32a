"""``predict``: segmentation, anomaly heat map, thresholded anomaly mask and overlay for any
image files.

Images are turned into maps by :class:`hazardseg.inference.predictor.MapPredictor` (PyTorch)
or :class:`hazardseg.deploy.predictor.OnnxMapPredictor` (an exported graph).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hazardseg.config import EvalConfig
from hazardseg.data.classes import colorize
from hazardseg.data.imageio import check_regular_file
from hazardseg.data.inputs import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from hazardseg.data.inputs import collect_images as collect_images
from hazardseg.data.transforms import load_image
from hazardseg.errors import DataError, HazardsegError
from hazardseg.inference.predictor import MapPredictor, Maps
from hazardseg.inference.render import heatmap_rgb, mask_overlay, score_range
from hazardseg.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


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
