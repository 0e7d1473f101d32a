"""Array renderers shared by predict, visualize and the report panels: class-colour
overlays, score heat maps, error and detection maps. Arrays in, (H, W, 3) uint8 arrays out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps

from hazardseg.data.labels import IGNORE_INDEX
from hazardseg.data.registry import ANOMALY_COLOR, IGNORE_COLOR, DatasetDef, get_dataset

SCORE_CMAP = "inferno"
TP_COLOR = np.array([0, 200, 0], dtype=np.uint8)
FP_COLOR = np.array([230, 20, 20], dtype=np.uint8)
FN_COLOR = np.array([30, 110, 255], dtype=np.uint8)
WRONG_COLOR = np.array([230, 20, 20], dtype=np.uint8)


def drawing(dataset: DatasetDef | None) -> DatasetDef:
    """The dataset whose colours and ids a drawing uses (default: StreetHazards)."""
    return dataset if dataset is not None else get_dataset("streethazards")


def _gray(image: np.ndarray, dim: float = 0.6) -> np.ndarray:
    """Return a dimmed grayscale copy of an RGB image as float (H, W, 3) in [0, 255]."""
    g = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat((g * dim)[..., None], 3, axis=2)


def overlay_segmentation(
    image: np.ndarray, ids: np.ndarray, alpha: float = 0.5, dataset: DatasetDef | None = None
) -> np.ndarray:
    """Blend the class colours of ``ids`` (``dataset``'s palette) over ``image``; returns
    (H, W, 3) uint8."""
    check_same_size(image, ids, "ids")
    colours = drawing(dataset).colorize(ids).astype(np.float32)
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def score_range(
    scores: Sequence[np.ndarray], low: float = 1.0, high: float = 99.0
) -> tuple[float, float]:
    """Return a shared (vmin, vmax) colour range: the percentiles of all finite scores."""
    finite = [s[np.isfinite(s)].ravel() for s in scores if s is not None]
    values = np.concatenate(finite) if finite else np.empty(0, dtype=np.float32)
    if values.size == 0:
        return 0.0, 1.0
    vmin, vmax = (float(v) for v in np.percentile(values, [low, high]))
    if not vmax > vmin:
        vmin, vmax = float(values.min()), float(values.max())
    if not vmax > vmin:
        vmax = vmin + 1.0
    return vmin, vmax


def heatmap_rgb(score: np.ndarray, vmin: float, vmax: float, cmap: str = SCORE_CMAP) -> np.ndarray:
    """Map a score map to an (H, W, 3) uint8 colour image over [vmin, vmax] (NaN -> black)."""
    s = np.asarray(score, dtype=np.float64)
    span = vmax - vmin if vmax > vmin else 1.0
    norm = np.clip((s - vmin) / span, 0.0, 1.0)
    rgba = colormaps[cmap](np.where(np.isfinite(s), norm, 0.0))
    rgb = (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)
    rgb[~np.isfinite(s)] = 0
    return rgb


def error_map(
    image: np.ndarray, gt: np.ndarray, pred: np.ndarray, dataset: DatasetDef | None = None
) -> np.ndarray:
    """Colour the prediction errors over a dimmed image: wrong pixels red, anomaly ground
    truth in the anomaly colour (no known class can be right there), unannotated pixels in the
    ignore colour; correct pixels keep the dimmed image. ``dataset`` encodes ``gt``."""
    check_same_size(image, gt, "gt")
    check_same_size(image, pred, "pred")
    labels = drawing(dataset).labels
    out = _gray(image).astype(np.uint8)
    known = gt < labels.num_classes
    out[known & (pred != gt)] = WRONG_COLOR
    for a in labels.anomaly_ids:
        out[gt == a] = ANOMALY_COLOR
    out[gt == IGNORE_INDEX] = IGNORE_COLOR
    return out


def detection_overlay(
    image: np.ndarray,
    detection: np.ndarray,
    gt: np.ndarray,
    dataset: DatasetDef | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Colour true positives, false positives and false negatives of a binary anomaly
    detection over a dimmed image; pixels with ``gt == 255`` are not counted. ``dataset``
    encodes ``gt``.

    Returns the (H, W, 3) uint8 image and the pixel counts ``{"tp", "fp", "fn"}``.
    """
    check_same_size(image, detection, "detection")
    check_same_size(image, gt, "gt")
    det = detection.astype(bool)
    valid = gt != IGNORE_INDEX
    pos = np.isin(gt, drawing(dataset).labels.anomaly_ids)
    tp, fp, fn = det & pos & valid, det & ~pos & valid, ~det & pos & valid
    out = _gray(image).astype(np.uint8)
    out[tp], out[fp], out[fn] = TP_COLOR, FP_COLOR, FN_COLOR
    return out, {"tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum())}


def check_same_size(image: np.ndarray, other: np.ndarray, name: str) -> None:
    """Raise ValueError naming `name` unless `other` has the image's height and width."""
    if image.shape[:2] != other.shape[:2]:
        raise ValueError(f"{name} has size {other.shape[:2]}, image has {image.shape[:2]}")


def mask_overlay(
    image: np.ndarray, pred: np.ndarray, mask: np.ndarray, dataset: DatasetDef | None = None
) -> np.ndarray:
    """Segmentation colours (``dataset``'s palette) blended over the image with detected
    anomaly pixels painted in the anomaly colour; returns (H, W, 3) uint8."""
    out = overlay_segmentation(image, pred, alpha=0.45, dataset=dataset)
    out[mask] = (0.3 * out[mask] + 0.7 * np.array(ANOMALY_COLOR)).astype(np.uint8)
    return out
