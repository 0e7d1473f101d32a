"""Panels: pure array helpers against hand-computed cases, figure layout, PNG output."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, f1_score

from hazardseg.data.classes import ANOMALY_ID, IGNORE_INDEX, PALETTE
from hazardseg.inference.panels import (
    PanelData,
    comparison_grid,
    panel_axes,
    sample_panel,
    save_figure,
)
from hazardseg.inference.render import (
    FN_COLOR,
    FP_COLOR,
    TP_COLOR,
    detection_overlay,
    error_map,
    heatmap_rgb,
    score_range,
)
from hazardseg.inference.visualize import (
    best_f1_threshold,
    per_image_ap,
    per_image_miou,
    select_indices,
)


def _sample(with_score: bool, seed: int = 0, h: int = 40, w: int = 64) -> PanelData:
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 13, (h, w)).astype(np.uint8)
    gt[0, :] = IGNORE_INDEX
    if with_score:
        gt[10:20, 10:30] = ANOMALY_ID
    score = rng.random((h, w)).astype(np.float32)
    score[10:20, 10:30] += 0.8
    return PanelData(
        image=rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
        pred=rng.integers(0, 13, (h, w)).astype(np.uint8),
        confidence=rng.random((h, w)).astype(np.float32),
        gt=gt,
        score=score if with_score else None,
        threshold=1.0 if with_score else None,
        threshold_label="calibrated",
        name=f"s{seed}",
        miou=0.25,
    )


@pytest.mark.parametrize(("with_score", "n_panels"), [(True, 9), (False, 6)])
def test_sample_panel_axes_and_png(tmp_path, with_score, n_panels):
    fig = sample_panel(_sample(with_score))
    assert len(panel_axes(fig)) == n_panels
    n_colorbars = 2 if with_score else 1
    assert len(fig.axes) == n_panels + n_colorbars
    path = save_figure(fig, tmp_path / "p.png")
    img = np.asarray(Image.open(path))
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300
    assert not list(tmp_path.glob(".*.tmp"))


def test_comparison_grid_has_row_per_sample(tmp_path):
    samples = [_sample(True, seed=i) for i in range(3)]
    fig = comparison_grid(samples, title="grid")
    assert len(panel_axes(fig)) == 3 * 9
    path = save_figure(fig, tmp_path / "g.png")
    h, w = np.asarray(Image.open(path)).shape[:2]
    assert w > h  # 9 columns, 3 rows of 64x40 images


def test_panel_rejects_mismatched_sizes():
    s = _sample(False)
    s.pred = s.pred[:-1]
    with pytest.raises(ValueError, match="pred has size"):
        sample_panel(s)


def test_error_map_and_detection_overlay_colours():
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    gt = np.array([[1, 2, ANOMALY_ID], [IGNORE_INDEX, 3, ANOMALY_ID]], dtype=np.uint8)
    pred = np.array([[1, 5, 0], [0, 3, 0]], dtype=np.uint8)
    err = error_map(image, gt, pred)
    assert tuple(err[0, 1]) == (230, 20, 20)  # wrong
    assert tuple(err[0, 2]) == tuple(PALETTE[ANOMALY_ID])
    assert tuple(err[1, 0]) == (255, 255, 255)
    assert tuple(err[0, 0]) == tuple(err[1, 1])  # both correct: dimmed image
    det = np.array([[True, False, True], [True, True, False]])
    out, counts = detection_overlay(image, det, gt)
    assert counts == {"tp": 1, "fp": 2, "fn": 1}  # ignored pixel (1,0) not counted
    assert tuple(out[0, 2]) == tuple(TP_COLOR)
    assert tuple(out[0, 0]) == tuple(FP_COLOR)
    assert tuple(out[1, 2]) == tuple(FN_COLOR)


def test_score_range_and_heatmap():
    s = np.arange(101, dtype=np.float32).reshape(1, -1)
    s[0, 0] = np.inf
    lo, hi = score_range([s], 0, 100)
    assert (lo, hi) == (1.0, 100.0)
    rgb = heatmap_rgb(np.array([[np.nan, 0.0, 1.0]]), 0.0, 1.0)
    assert tuple(rgb[0, 0]) == (0, 0, 0)
    assert rgb[0, 2].sum() > rgb[0, 1].sum()
    assert score_range([np.zeros((2, 2))]) == (0.0, 1.0)


def test_per_image_miou_hand_computed():
    gt = np.array([[0, 0, 1, 1], [ANOMALY_ID, IGNORE_INDEX, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [5, 5, 1, 1]])
    # class 0: I=1, U=2; class 1: I=4, U=5; anomaly and ignore pixels excluded
    assert per_image_miou(pred, gt) == pytest.approx((1 / 2 + 4 / 5) / 2)
    assert math.isnan(per_image_miou(pred, np.full((2, 4), IGNORE_INDEX)))


def test_per_image_ap_and_best_f1_match_sklearn():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 13, (30, 30))
    gt[5:15, 5:12] = ANOMALY_ID
    gt[0] = IGNORE_INDEX
    score = rng.random((30, 30)).round(2)  # ties
    score[5:15, 5:12] += 0.3
    # the official per-image protocol: every pixel, ignore (PNG 0) counted as normal
    everything = (gt == ANOMALY_ID).ravel().astype(int)
    expected = average_precision_score(everything, score.ravel().astype(np.float32))
    assert per_image_ap(score, gt) == pytest.approx(expected, abs=1e-12)
    valid = gt != IGNORE_INDEX
    y = (gt[valid] == ANOMALY_ID).astype(int)
    t, f1 = best_f1_threshold(score, gt)
    assert f1 == pytest.approx(f1_score(y, score[valid] >= t))
    for cand in np.unique(score[valid]):
        assert f1_score(y, score[valid] >= cand) <= f1 + 1e-12
    no_anomaly = np.zeros((4, 4), dtype=np.uint8)
    assert math.isnan(per_image_ap(score[:4, :4], no_anomaly))
    assert math.isnan(best_f1_threshold(score[:4, :4], no_anomaly)[0])


def test_select_indices():
    values = [0.5, math.nan, 0.9, 0.1, 0.7]
    assert select_indices(values, 2, "best") == [2, 4]
    assert select_indices(values, 2, "worst") == [3, 0]
    assert select_indices(values, 3, "even") == [0, 2, 4]
    assert select_indices(values, 10, "even") == [0, 1, 2, 3, 4]
