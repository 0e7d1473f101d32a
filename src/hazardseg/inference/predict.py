"""``predict``: segmentation, anomaly heat map, thresholded anomaly mask and overlay for any
image files, and an overlay video for videos.

Images become maps through a :class:`hazardseg.inference.interface.Predictor`: the PyTorch
:class:`hazardseg.inference.predictor.MapPredictor` or the onnxruntime
:class:`hazardseg.deploy.predictor.OnnxMapPredictor` (``open_predictor`` builds either).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hazardseg.data.imageio import check_regular_file
from hazardseg.data.inputs import collect_images
from hazardseg.data.transforms import load_image
from hazardseg.errors import DataError, HazardsegError
from hazardseg.inference.interface import Maps, Predictor, threshold_source
from hazardseg.inference.render import heatmap_rgb, mask_overlay, score_range
from hazardseg.io import atomic_path, atomic_write_json
from hazardseg.progress import Progress

log = logging.getLogger(__name__)

SCORE_DTYPES: tuple[str, ...] = ("float32", "float16")
"""Data types ``--save-scores`` writes."""


@dataclass(frozen=True)
class PredictOptions:
    """What ``predict`` writes and how: the detection threshold (None: the calibrated one),
    every N-th video frame, raw score arrays, progress."""

    threshold: float | None = None
    every: int = 1
    save_scores: str | None = None
    """Also write each image's score map as ``scores/<method>/<key>.npy`` in this dtype
    ("float32" or "float16"): the layout ``eval-maps --maps OUT/scores/<method>`` reads."""
    progress: bool = False

    def check(self) -> None:
        """Reject invalid values with one-line errors."""
        if self.every < 1:
            raise HazardsegError(f"--every {self.every}: expected a positive number of frames")
        if self.save_scores is not None and self.save_scores not in SCORE_DTYPES:
            raise HazardsegError(
                f"--save-scores {self.save_scores!r}: expected one of {', '.join(SCORE_DTYPES)}"
            )


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _save_scores(score: np.ndarray, path: Path, dtype: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, score.astype(dtype))


def _write_outputs(
    out: Path, key: str, path: Path, pil: Image.Image, maps: Maps, thr: float, classes: Any
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
    _save_png(classes.colorize(maps.pred), files["segmentation"])
    _save_png(heatmap_rgb(maps.score, vmin, vmax), files["heat"])
    _save_png(mask.astype(np.uint8) * 255, files["mask"])
    _save_png(mask_overlay(rgb, maps.pred, mask, classes), files["overlay"])
    size = maps.input_size
    return {
        "image": str(path),
        "width": pil.width,
        "height": pil.height,
        "input_size": None if size is None else f"{size[1]}x{size[0]}",
        "anomaly_fraction": float(mask.mean()),
        "heat_range": [vmin, vmax],
        "files": {k: str(v) for k, v in files.items()},
    }


def resolve_threshold(predictor: Predictor, threshold: float | None) -> tuple[float, str]:
    """The detection threshold and where it comes from: ``threshold`` when given, else the
    calibrated one that applies to the predictor's settings (HazardsegError naming the
    settings that differ when there is none)."""
    if threshold is not None:
        return float(threshold), "--threshold"
    if predictor.threshold is not None:
        where = str(getattr(predictor, "state_path", "state"))
        return predictor.threshold, threshold_source(predictor, where)
    method = predictor.method_name
    raise HazardsegError(
        f"{predictor.missing_threshold()}; run `hazardseg calibrate --methods {method} ...` "
        "with these settings, or pass --threshold X"
    )


def _unique_dir(out: Path, stem: str, taken: set[str]) -> Path:
    name, n = stem, 1
    while name.lower() in taken:
        n += 1
        name = f"{stem}_{n}"
    taken.add(name.lower())
    return out / name


def predict(
    predictor: Predictor,
    inputs: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    options: PredictOptions | None = None,
) -> dict[str, Any]:
    """Write ``<key>_seg.png``, ``<key>_heat.png``, ``<key>_mask.png`` and
    ``<key>_overlay.png`` per image into ``out_dir`` plus ``predictions.json``; for each
    video input (mp4/avi/mkv/mov/webm), ``out_dir/<name>/overlay.mp4``, ``frames.jsonl`` and
    ``video.json`` (frames streamed, never all in memory).

    Consecutive images of one size are run as one batch of up to ``predictor.batch_size``.
    The threshold is ``options.threshold`` when given, else the calibrated one that applies
    (HazardsegError naming the settings that differ when none does). Images that cannot be
    decoded are skipped with a warning and listed under ``failed``. ``predictions.json``
    records what the predictor did (backend, resize, precision, TTA, input sizes).
    """
    from hazardseg.inference.video import is_video

    options = options or PredictOptions()
    options.check()
    videos = [Path(p) for p in inputs if is_video(p) and not Path(p).is_dir()]
    still = [p for p in inputs if not (is_video(p) and not Path(p).is_dir())]
    for v in videos:
        check_regular_file(v)
    images = collect_images(still) if still else []
    thr, source = resolve_threshold(predictor, options.threshold)
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    pending: list[tuple[Path, str, Image.Image]] = []
    batch_size = predictor.batch_size
    method = predictor.method_name
    bar = Progress(len(images), "predict", unit="image", show=options.progress and bool(images))

    def flush() -> None:
        if pending:
            maps = predictor.predict_batch([pil for _, _, pil in pending])
            for (path, key, pil), m in zip(pending, maps, strict=True):
                rows.append(_write_outputs(out, key, path, pil, m, thr, predictor.dataset))
                if options.save_scores is not None:
                    target = out / "scores" / method / f"{key}.npy"
                    _save_scores(m.score, target, options.save_scores)
                    rows[-1]["files"]["scores"] = str(target)
            bar.update(len(pending))
            pending.clear()

    with bar:
        for path, key in images:
            try:
                pil = load_image(path)
            except DataError as exc:
                log.warning("skipping %s", exc)
                failed.append({"path": str(path), "error": str(exc)})
                bar.update(1)
                continue
            if pending and pending[0][2].size != pil.size:
                flush()
            pending.append((path, key, pil))
            if len(pending) >= batch_size:
                flush()
        flush()
    video_rows: list[dict[str, Any]] = []
    taken: set[str] = set()
    for video in videos:
        vdir = _unique_dir(out, video.stem, taken)
        info = predict_video(
            predictor, video, vdir, thr, every=options.every, progress=options.progress
        )
        video_rows.append({"video": str(video), "out": str(vdir), **info})
    summary = {
        **predictor.describe(),
        "threshold": thr,
        "threshold_source": source,
        "batch_size": batch_size,
        "save_scores": options.save_scores,
        "images": rows,
        "videos": video_rows,
        "failed": failed,
    }
    atomic_write_json(out / "predictions.json", summary)
    return summary


def predict_video(
    predictor: Predictor,
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
    from hazardseg.inference.video import process_video

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
            results.append((mask_overlay(frame, m.pred, mask, predictor.dataset), record))
        return results

    summary = process_video(
        path, out_dir, frame_fn, every=every, batch_size=predictor.batch_size, progress=progress
    )
    return summary.to_dict()
