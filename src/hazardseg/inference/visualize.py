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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hazardseg.config import EvalConfig
from hazardseg.data.labels import LabelSpec
from hazardseg.data.split import DataSource
from hazardseg.data.transforms import load_image
from hazardseg.errors import HazardsegError
from hazardseg.evaluation.spec import RunOptions
from hazardseg.inference.panels import PanelData, comparison_grid, sample_panel, save_figure
from hazardseg.inference.predictor import MapPredictor
from hazardseg.io import atomic_write_json
from hazardseg.metrics.ood_functional import exact_curve_metrics, image_metrics
from hazardseg.metrics.ood_protocol import per_image_masks
from hazardseg.metrics.segmentation import ConfusionMatrix
from hazardseg.models.checkpoint import LoadedCheckpoint

SELECT_MODES = ("even", "best", "worst")
SELECT_BY = ("miou", "ap")


@dataclass(frozen=True)
class PanelSelection:
    """Which samples ``visualize`` draws and with which anomaly method."""

    samples: int | None = 6
    """Number of samples (ignored when ``indices`` are given)."""
    indices: Sequence[int] | None = None
    method: str = "max_logit"
    select: str = "even"
    """"even" (spread over the split), "best" or "worst" by ``by``."""
    by: str = "miou"
    """Per-image metric that ranks samples: "miou" or "ap" (the official per-image AP)."""
    grid: bool = True
    """Also write one comparison grid."""


def per_image_miou(pred: np.ndarray, gt: np.ndarray, num_classes: int = 13) -> float:
    """Mean IoU of one image (the dataset mIoU's definition, :class:`ConfusionMatrix`, on its
    pixels): classes present in the ground truth or the prediction; NaN when none is."""
    cm = ConfusionMatrix(num_classes)
    cm.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(gt.astype(np.int64)))
    return float(cm.compute()["miou"])


def per_image_ap(score: np.ndarray, gt: np.ndarray, labels: LabelSpec | None = None) -> float:
    """The image's AP as the per-image protocol (and results.json's ``per_image``) computes
    it: :func:`~hazardseg.metrics.ood_functional.image_metrics` over
    :func:`~hazardseg.metrics.ood_protocol.per_image_masks` of the dataset's ``labels``
    (default StreetHazards'); NaN without both classes."""
    is_anom, valid = per_image_masks(torch.from_numpy(gt.astype(np.int64)), labels=labels)
    return float(image_metrics(torch.from_numpy(score), is_anom, valid)["aupr"])


def best_f1_threshold(
    score: np.ndarray, gt: np.ndarray, labels: LabelSpec | None = None
) -> tuple[float, float]:
    """The threshold (score >= t is anomalous) with the best pixel F1 on this image's
    annotated pixels, and that F1; (NaN, NaN) when the image has no anomaly pixel."""
    from hazardseg.metrics.ood_protocol import evaluation_masks

    is_anom, valid = evaluation_masks(torch.from_numpy(gt.astype(np.int64)), labels=labels)
    if not bool((is_anom & valid).any()):
        return math.nan, math.nan
    res = exact_curve_metrics(torch.from_numpy(score), is_anom, valid)
    return float(res["best_f1_threshold"]), float(res["best_f1"])


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


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
    split: str,
    count: int,
    samples: int | None,
    indices: Sequence[int] | None,
    select: str,
    by: str,
    source: DataSource,
) -> None:
    if select not in SELECT_MODES:
        raise HazardsegError(f"--select {select!r}: expected one of {', '.join(SELECT_MODES)}")
    if by not in SELECT_BY:
        raise HazardsegError(f"--by {by!r}: expected one of {', '.join(SELECT_BY)}")
    if by == "ap" and select != "even" and not source.dataset.splits[split].anomalies:
        with_anomalies = [n for n, info in source.dataset.splits.items() if info.anomalies]
        raise HazardsegError(
            f"--by ap needs anomaly labels: split {split!r} has none (use "
            f"{' or '.join(with_anomalies) or 'a split with anomalies'})"
        )
    if by == "miou" and select != "even" and source.dataset.labels.num_classes == 0:
        raise HazardsegError(f"--by miou needs class labels: {source.dataset.name} has none")
    if indices is not None:
        bad = [i for i in indices if not 0 <= i < count]
        if bad:
            raise HazardsegError(f"--indices {bad[0]}: split '{split}' has {count} images")
    elif samples is None or samples < 1:
        raise HazardsegError(f"--samples {samples}: expected a positive number of samples")


def visualize(
    checkpoint: str | os.PathLike[str] | LoadedCheckpoint,
    data: str | os.PathLike[str] | DataSource,
    split: str,
    out_dir: str | os.PathLike[str],
    spec: EvalConfig | None = None,
    run: RunOptions | None = None,
    selection: PanelSelection | None = None,
) -> dict[str, Any]:
    """Write one panel PNG per chosen sample (``<split>_<index>.png``), a comparison grid
    (``<split>_grid.png``) and ``panels.json``; return that summary.

    Maps come from :class:`~hazardseg.inference.predictor.MapPredictor` with ``spec``
    (default: the checkpoint's) and ``run``; per-image mIoU and AP are computed by the same
    code as ``results.json`` (the dataset mIoU's definition on one image; the official
    per-image AP).
    """
    sel = selection or PanelSelection()
    samples, indices, method, select, by = sel.samples, sel.indices, sel.method, sel.select, sel.by
    source = DataSource.of(data)
    source.dataset.require_labels(split, "drawing ground truth of")
    dataset = source.open(split)
    labels = source.dataset.labels
    _parse_selection(split, len(dataset), samples, indices, select, by, source)
    predictor = MapPredictor(checkpoint, method, spec, run)
    with_scores = source.dataset.splits[split].anomalies
    num_classes = int(predictor.info["num_classes"])
    same_classes = num_classes == labels.num_classes

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
            miou=per_image_miou(maps.pred, gt, num_classes) if same_classes else None,
            gt_dataset=source.dataset,
            pred_dataset=predictor.dataset,
        )
        if with_scores:
            data.score = maps.score
            data.ap = per_image_ap(maps.score, gt, labels)
            if predictor.threshold is not None:
                data.threshold, data.threshold_label = predictor.threshold, "calibrated"
            else:
                data.threshold, _ = best_f1_threshold(maps.score, gt, labels)
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
                "miou": _finite(data.miou),
                "ap": _finite(data.ap),
                "ap_note": None
                if data.ap is None or math.isfinite(data.ap)
                else "no anomaly pixels: AP undefined",
                "threshold": data.threshold,
                "threshold_source": data.threshold_label or None,
                "panel": str(path),
            }
        )
    summary: dict[str, Any] = {
        "checkpoint": str(predictor.checkpoint.path),
        "split": split,
        "method": method,
        "select": "indices" if indices is not None else select,
        "by": by,
        "samples": rows,
        "grid": None,
    }
    if sel.grid and panels:
        title = f"{split}: {len(panels)} samples, method {method}"
        summary["grid"] = str(
            save_figure(comparison_grid(panels, title), out / f"{split}_grid.png")
        )
    atomic_write_json(out / "panels.json", summary)
    return summary
