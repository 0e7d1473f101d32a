"""Component-level metrics on hand-drawn masks and against a direct set-based formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from hazardseg.metrics import TAUS, ComponentMetrics, component_scores


def brute_force(gt: np.ndarray, pred: np.ndarray) -> tuple[list[float], list[float]]:
    """The published definitions, written with Python sets over pixel coordinates."""
    eight = np.ones((3, 3), dtype=bool)
    gl, ng = ndimage.label(gt, structure=eight)
    pl, npred = ndimage.label(pred, structure=eight)
    gt_comps = [set(zip(*np.nonzero(gl == i), strict=True)) for i in range(1, ng + 1)]
    pred_comps = [set(zip(*np.nonzero(pl == j), strict=True)) for j in range(1, npred + 1)]
    all_gt = set().union(*gt_comps) if gt_comps else set()
    sious = []
    for k, comp in enumerate(gt_comps):
        touching = set().union(*[p for p in pred_comps if p & comp]) if pred_comps else set()
        others = set().union(*[c for i, c in enumerate(gt_comps) if i != k]) if ng > 1 else set()
        sious.append(len(comp & touching) / len((comp | touching) - others))
    ppvs = [len(p & all_gt) / len(p) for p in pred_comps]
    return sious, ppvs


def test_hand_drawn_adjusted_union():
    gt = np.zeros((12, 12), dtype=bool)
    pred = np.zeros_like(gt)
    gt[1:3, 1:3] = True  # A: 4 px
    gt[1:3, 5:7] = True  # B: 4 px
    pred[1:3, 1:7] = True  # one prediction covering A, B and 4 px between them
    gt[8:10, 8:10] = True  # C: 4 px, missed
    pred[6, 0] = True  # a 1-px false positive
    siou, ppv = component_scores(gt, pred)
    # sIoU(A) = |A| / |(A u P) \ B| = 4 / (12 - 4); same for B; C = 0.
    np.testing.assert_allclose(siou, [0.5, 0.5, 0.0])
    np.testing.assert_allclose(sorted(ppv), [0.0, 8 / 12])


def test_diagonal_pixels_are_one_component():
    gt = np.eye(6, dtype=bool)
    siou, ppv = component_scores(gt, gt.copy())
    assert siou.tolist() == [1.0] and ppv.tolist() == [1.0]


@pytest.mark.parametrize("seed", range(4))
def test_matches_set_based_definition_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    gt = ndimage.binary_opening(rng.random((40, 40)) < 0.35)
    pred = ndimage.binary_dilation(gt, iterations=int(rng.integers(0, 2))) ^ (
        rng.random((40, 40)) < 0.08
    )
    siou, ppv = component_scores(gt, pred)
    ref_siou, ref_ppv = brute_force(gt, pred)
    np.testing.assert_allclose(siou, ref_siou, rtol=1e-12)
    np.testing.assert_allclose(ppv, ref_ppv, rtol=1e-12)


def _scene():
    scores = np.zeros((2, 16, 16), dtype=np.float32)
    is_anomaly = np.zeros((2, 16, 16), dtype=bool)
    is_anomaly[0, 2:6, 2:6] = True  # found exactly
    scores[0, 2:6, 2:6] = 0.9
    is_anomaly[0, 10:14, 10:14] = True  # half found: sIoU 0.5
    scores[0, 10:12, 10:14] = 0.5
    scores[1, 0:2, 0:3] = 0.7  # false positive, PPV 0
    is_anomaly[1, 8:12, 8:12] = True  # missed
    return scores, is_anomaly


def test_accumulated_f1_per_tau_by_hand():
    scores, is_anomaly = _scene()
    acc = ComponentMetrics(threshold=0.5)
    acc.update(torch.from_numpy(scores), torch.from_numpy(is_anomaly))
    res = acc.compute()
    assert res["num_gt_components"] == 3 and res["num_pred_components"] == 3
    assert res["mean_siou"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert res["mean_ppv"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    expected = {}
    for tau in TAUS:
        tp = 1 + (tau <= 0.5)
        fn = 3 - tp
        fp = 1  # only the PPV-0 component
        expected[f"{tau:.2f}"] = 2 * tp / (2 * tp + fn + fp)
    assert res["f1_per_tau"] == pytest.approx(expected)
    assert res["mean_f1"] == pytest.approx(np.mean(list(expected.values())))
    assert res["threshold"] == 0.5


def test_threshold_is_inclusive_and_valid_mask_removes_predictions():
    scores, is_anomaly = _scene()
    strict = ComponentMetrics(threshold=0.5000001)
    strict.update(scores, is_anomaly)
    assert strict.compute()["num_pred_components"] == 2  # the 0.5 block is not flagged
    valid = np.ones_like(is_anomaly)
    valid[1, 0:2, 0:3] = False  # false positive lies in ignored pixels
    acc = ComponentMetrics(threshold=0.5)
    acc.update(scores, is_anomaly, valid)
    assert acc.compute()["num_pred_components"] == 2


def test_merge_equals_one_pass_and_size_filters():
    scores, is_anomaly = _scene()
    whole = ComponentMetrics(0.5)
    whole.update(scores, is_anomaly)
    a, b = ComponentMetrics(0.5), ComponentMetrics(0.5)
    a.update(scores[1], is_anomaly[1])
    b.update(scores[0], is_anomaly[0])
    assert a.merge(b).compute() == whole.compute()
    filtered = ComponentMetrics(0.5, min_pred_size=7)
    filtered.update(scores, is_anomaly)
    res = filtered.compute()
    assert res["num_pred_components"] == 2  # the 6-px false positive is dropped
    assert res["num_gt_components"] == 3
    no_small_gt = ComponentMetrics(0.5, min_gt_size=17)
    no_small_gt.update(scores, is_anomaly)
    res = no_small_gt.compute()
    assert res["num_gt_components"] == 0  # every 16-px object becomes ignored ...
    assert res["num_pred_components"] == 1  # ... with the predictions on it
    with pytest.raises(ValueError, match="merge"):
        whole.merge(filtered)


def test_empty_and_bad_input():
    acc = ComponentMetrics(0.0)
    acc.update(np.full((8, 8), -1.0), np.zeros((8, 8), dtype=bool))
    res = acc.compute()
    assert math.isnan(res["mean_f1"]) and math.isnan(res["mean_siou"])
    assert res["num_gt_components"] == 0
    with pytest.raises(ValueError, match="shape"):
        acc.update(np.zeros((4, 4)), np.zeros((4, 5), dtype=bool))
    with pytest.raises(ValueError, match="finite"):
        ComponentMetrics(float("nan"))
