"""``visualize``: qualitative panels of chosen samples of a split, and a comparison grid.

Samples are chosen evenly over the split, by index, or as the best / worst by per-image
mIoU or per-image anomaly average precision. On the test split the panels add the anomaly
score map, the thresholded detection and a TP/FP/FN overlay; the threshold is the calibrated
one from ``anomaly_state.pt`` when present, else each image's own best-F1 threshold (an
oracle, labelled as such).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hazardseg.data.classes import ANOMALY_ID, IGNORE_INDEX, NUM_CLASSES
from hazardseg.data.streethazards import StreetHazards
from hazardseg.data.transforms import load_image
from hazardseg.errors import HazardsegError
from hazardseg.inference.panels import PanelData, comparison_grid, sample_panel, save_figure
from hazardseg.inference.predictor import MapPredictor
from hazardseg.io import atomic_write_json

SELECT_MODES = ("even", "best", "worst")
SELECT_BY = ("miou", "ap")


def per_image_miou(pred: np.ndarray, gt: np.ndarray, num_classes: int = NUM_CLASSES) -> float:
    """Mean IoU over the known classes present in the ground truth or the prediction of one
    image (anomaly and ignored pixels excluded); NaN when there is no such pixel."""
    valid = gt < num_classes
    if not valid.any():
        return math.nan
    p, g = pred[valid].astype(np.int64), gt[valid].astype(np.int64)
    cm = np.bincount(g * num_classes + p, minlength=num_classes**2).reshape(num_classes, -1)
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean())


def _ranked(score: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Cumulative TP/FP counts at each distinct score (descending) over annotated pixels."""
    valid = (gt != IGNORE_INDEX) & np.isfinite(score)
    s = score[valid].astype(np.float64)
    pos = gt[valid] == ANOMALY_ID
    order = np.argsort(-s, kind="mergesort")
    s, pos = s[order], pos[order]
    tp, fp = np.cumsum(pos), np.cumsum(~pos)
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.empty(0, int)
    return s[last], tp[last], fp[last], int(pos.sum())


def per_image_ap(score: np.ndarray, gt: np.ndarray) -> float:
    """Average precision of anomaly pixels (positive) against annotated known pixels; NaN
    when the image lacks either class."""
    _, tp, fp, npos = _ranked(score, gt)
    if npos == 0 or tp.size == 0 or fp[-1] == 0:
        return math.nan
    precision = tp / (tp + fp)
    recall = tp / npos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def best_f1_threshold(score: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """The threshold (score >= t is anomalous) with the best pixel F1 on this image, and
    that F1; (NaN, NaN) when the image has no anomaly pixel."""
    s, tp, fp, npos = _ranked(score, gt)
    if npos == 0 or s.size == 0:
        return math.nan, math.nan
    f1 = 2 * tp / (tp + fp + npos)
    i = int(np.argmax(f1))
    return float(s[i]), float(f1[i])


def select_indices(values: Sequence[float], n: int, mode: str) -> list[int]:
    """Pick ``n`` indices: evenly spread ("even"), or the highest ("best") / lowest
    ("worst") ``values`` (NaN values never chosen by best/worst)."""
    total = len(values)
    n = min(n, total)
    if mode == "even":
        return sorted({round(float(x)) for x in np.linspace(0, total - 1, n)}) if n else []
    ranked = [i for i in range(total) if not math.isnan(values[i])]
    ranked.sort(key=lambda i: values[i], reverse=(mode == "best"))
    return ranked[:n]


def _parse_selection(
    split: str, count: int, samples: int | None, indices: Sequence[int] | None, select: str, by: str
) -> None:
    if select not in SELECT_MODES:
        raise HazardsegError(f"--select {select!r}: expected one of {', '.join(SELECT_MODES)}")
    if by not in SELECT_BY:
        raise HazardsegError(f"--by {by!r}: expected one of {', '.join(SELECT_BY)}")
    if by == "ap" and select != "even" and split != "test":
        raise HazardsegError(f"--by ap needs anomaly labels: use --split test, not {split!r}")
    if indices is not None:
        bad = [i for i in indices if not 0 <= i < count]
        if bad:
            raise HazardsegError(f"--indices {bad[0]}: split '{split}' has {count} images")
    elif samples is None or samples < 1:
        raise HazardsegError(f"--samples {samples}: expected a positive number of samples")


def visualize(
    checkpoint: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    split: str,
    out_dir: str | os.PathLike[str],
    *,
    samples: int | None = 6,
    indices: Sequence[int] | None = None,
    method: str = "max_logit",
    select: str = "even",
    by: str = "miou",
    grid: bool = True,
    **settings: Any,
) -> dict[str, Any]:
    """Write one panel PNG per chosen sample (``<split>_<index>.png``), a comparison grid
    (``<split>_grid.png``) and ``panels.json``; return that summary.

    ``settings`` are evaluation-spec fields (``resize``, ``device``, ``precision``, ``tta``,
    ``config_file``) resolved as in ``evaluate``, plus ``model_name`` (bare state dicts) and
    ``state_path``; maps come from the one forward pass.
    """
    dataset = StreetHazards(data_root, split)
    _parse_selection(split, len(dataset), samples, indices, select, by)
    predictor = MapPredictor(checkpoint, method, **settings)
    with_scores = split == "test"

    def sample_data(i: int) -> PanelData:
        item = dataset[i]
        gt = item["mask"].numpy()
        pil = load_image(dataset.samples[i].image_path)
        if (pil.height, pil.width) != gt.shape:
            pil = pil.resize((gt.shape[1], gt.shape[0]))
        maps = predictor(pil, out_size=gt.shape)
        data = PanelData(
            image=np.asarray(pil, dtype=np.uint8),
            pred=maps.pred,
            confidence=maps.confidence,
            gt=gt,
            name=f"{split} #{i} ({dataset.samples[i].rel})",
            miou=per_image_miou(maps.pred, gt),
        )
        if with_scores:
            data.score = maps.score
            data.ap = per_image_ap(maps.score, gt)
            if predictor.threshold is not None:
                data.threshold, data.threshold_label = predictor.threshold, "calibrated"
            else:
                data.threshold, _ = best_f1_threshold(maps.score, gt)
                data.threshold_label = "per-image best-F1 (oracle)"
                if math.isnan(data.threshold):
                    data.threshold, data.threshold_label = None, "no anomaly in image"
        return data

    if indices is not None:
        chosen = list(indices)
    elif select == "even":
        chosen = select_indices([0.0] * len(dataset), samples or 0, "even")
    else:
        stats = [sample_data(i) for i in range(len(dataset))]
        values = [s.miou if by == "miou" else s.ap for s in stats]
        chosen = select_indices(
            [math.nan if v is None else v for v in values], samples or 0, select
        )
    out = Path(out_dir)
    panels: list[PanelData] = []
    rows: list[dict[str, Any]] = []
    for i in chosen:
        data = sample_data(i)
        panels.append(data)
        path = save_figure(sample_panel(data), out / f"{split}_{i:04d}.png")
        rows.append(
            {
                "index": i,
                "image": str(dataset.samples[i].image_path),
                "miou": data.miou,
                "ap": data.ap,
                "threshold": data.threshold,
                "threshold_source": data.threshold_label or None,
                "panel": str(path),
            }
        )
    summary: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "split": split,
        "method": method,
        "select": "indices" if indices is not None else select,
        "by": by,
        "samples": rows,
        "grid": None,
    }
    if grid and panels:
        title = f"{split}: {len(panels)} samples, method {method}"
        summary["grid"] = str(
            save_figure(comparison_grid(panels, title), out / f"{split}_grid.png")
        )
    atomic_write_json(out / "panels.json", summary)
    return summary
