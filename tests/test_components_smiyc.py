"""ComponentMetrics against an independent implementation of SegmentMeIfYouCan's definition.

The reference follows road-anomaly-benchmark's ``metrics/instance_segmentation.py``
(``default_instancer``, ``segment_metrics``, ``MetricSegment.aggregate``), written here with
per-component loops and masks: a label map (0 normal, 1 anomaly, 255 void); flagged = score >
threshold (SMIYC) or >= (hazardseg's default); predictions on void pixels dropped; both masks
labelled once (8-connected); predicted components below ``segsize`` pixels removed; label-map
components (label 0 included) below ``instsize`` pixels made void; everything restricted to the
non-void pixels without relabelling; per ground-truth component the adjusted IoU, per predicted
component the precision; TP / FN / FP counts per tau summed over frames, F1 per tau, its mean.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from hazardseg.metrics.components import TAUS, ComponentMetrics, component_definition

TOL = 1e-9
EIGHT = np.ones((3, 3), dtype=int)


def smiyc_frame(scores, label, thresh, segsize, instsize, rule):
    flagged = scores > thresh if rule == ">" else scores >= thresh
    pred_mask = flagged & (label != 255)
    gt_inst, n_gt = ndi.label(label == 1, EIGHT)
    pred_inst, n_pred = ndi.label(pred_mask, EIGHT)
    for k in range(1, n_pred + 1):
        if np.count_nonzero(pred_inst == k) < segsize:
            pred_inst[pred_inst == k] = 0
    label = label.copy()
    original = gt_inst.copy()
    for k in range(n_gt + 1):
        if np.count_nonzero(original == k) < instsize:
            label[original == k] = 255
    roi = label != 255
    g, p = gt_inst[roi], pred_inst[roi]
    siou = []
    for k in np.unique(g[g > 0]):
        touching = np.unique(p[(g == k) & (p > 0)])
        covered = np.isin(p, touching)
        inter = np.count_nonzero((g == k) & covered)
        other = np.count_nonzero(~np.isin(g, [0, k]) & covered)
        siou.append(inter / (np.count_nonzero(covered) + np.count_nonzero(g == k) - inter - other))
    ppv = []
    for j in np.unique(p[p > 0]):
        comp = p == j
        ppv.append(np.count_nonzero(comp & (g > 0)) / np.count_nonzero(comp))
    return np.array(siou), np.array(ppv)


def smiyc_dataset(scores, labels, thresh, segsize, instsize, rule):
    pairs = zip(scores, labels, strict=True)
    frames = [smiyc_frame(s, lab, thresh, segsize, instsize, rule) for s, lab in pairs]
    f1, tps, fns, fps = [], [], [], []
    for t in np.linspace(0.25, 0.75, 11):
        tp = sum(int(np.count_nonzero(si >= t)) for si, _ in frames)
        fn = sum(int(np.count_nonzero(si < t)) for si, _ in frames)
        fp = sum(int(np.count_nonzero(pp < t)) for _, pp in frames)
        tps.append(tp), fns.append(fn), fps.append(fp)
        f1.append(2 * tp / (2 * tp + fn + fp))
    n_gt = sum(len(si) for si, _ in frames)
    n_pred = sum(len(pp) for _, pp in frames)
    return {
        "mean_f1": float(np.mean(f1)),
        "f1": f1,
        "tp": tps,
        "fn": fns,
        "fp": fps,
        "mean_siou": sum(float(np.sum(si)) for si, _ in frames) / n_gt if n_gt else np.nan,
        "mean_ppv": sum(float(np.sum(pp)) for _, pp in frames) / n_pred if n_pred else np.nan,
        "num_gt": n_gt,
        "num_pred": n_pred,
    }


def ours(scores, labels, thresh, segsize, instsize, rule):
    cm = ComponentMetrics(thresh, min_pred_size=segsize, min_gt_size=instsize, threshold_rule=rule)
    cm.update(
        torch.from_numpy(scores), torch.from_numpy(labels == 1), torch.from_numpy(labels != 255)
    )
    return cm


def _check(scores, labels, thresh, segsize, instsize, rule) -> None:
    cm = ours(scores, labels, thresh, segsize, instsize, rule)
    res = cm.compute()
    ref = smiyc_dataset(scores, labels, thresh, segsize, instsize, rule)
    assert list(cm.tp) == ref["tp"] and list(cm.fn) == ref["fn"] and list(cm.fp) == ref["fp"]
    assert res["num_gt_components"] == ref["num_gt"]
    assert res["num_pred_components"] == ref["num_pred"]
    for key in ("mean_f1", "mean_siou", "mean_ppv"):
        assert abs(res[key] - ref[key]) <= TOL or (np.isnan(res[key]) and np.isnan(ref[key]))
    for tau, f in zip(TAUS, ref["f1"], strict=True):
        assert abs(res["f1_per_tau"][f"{tau:.2f}"] - f) <= TOL


def _scene(seed: int, n: int = 3, size=(48, 64)):
    """Blobby anomaly objects of many sizes, a void band, coarsely quantised float16 scores."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.standard_normal((n, *size)), sigma=(0, 3, 3))
    labels = (field > 0.12).astype(np.uint8)
    labels[:, :, 30:33] = 255  # void band cutting through objects
    labels[0, 5:7, 5:7] = 1  # a tiny object
    noise = ndi.gaussian_filter(rng.standard_normal((n, *size)), sigma=(0, 2, 2))
    scores = np.round(8 * (2.0 * (labels == 1) + 3.0 * noise)) / 8  # many ties
    scores = scores.astype(np.float16).astype(np.float32)
    return scores, labels


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("rule", [">", ">="])
@pytest.mark.parametrize("segsize,instsize", [(0, 0), (12, 10), (40, 0), (0, 30), (150, 60)])
def test_equal_to_smiyc_definition(seed, rule, segsize, instsize) -> None:
    scores, labels = _scene(seed)
    thresh = float(np.quantile(scores, 0.7, method="nearest"))  # a score value: ties matter
    assert np.count_nonzero(scores == thresh) > 1
    _check(scores, labels, thresh, segsize, instsize, rule)


def test_filtering_never_splits_a_predicted_component() -> None:
    # a predicted bar crossing a small ground-truth object that spans its full height:
    # removing the object's pixels must not cut the bar into two components
    labels = np.zeros((1, 24, 48), dtype=np.uint8)
    labels[0, 6:18, 22:25] = 1  # 36 px: below min_gt_size
    scores = np.zeros((1, 24, 48), dtype=np.float32)
    scores[0, 10:13, 4:44] = 1.0
    for rule in (">", ">="):
        cm = ours(scores, labels, 0.5, 0, 50, rule)
        assert cm.compute()["num_pred_components"] == 1
        assert cm.compute()["num_gt_components"] == 0
        _check(scores, labels, 0.5, 0, 50, rule)
    # the bar's size counts its pixels on the ignored object too (labelled before the region
    # is restricted): 120 px in all, 111 outside the object
    assert ours(scores, labels, 0.5, 115, 50, ">=").compute()["num_pred_components"] == 1
    assert ours(scores, labels, 0.5, 121, 50, ">=").compute()["num_pred_components"] == 0


def test_threshold_rule_at_ties() -> None:
    labels = np.zeros((1, 10, 10), dtype=np.uint8)
    labels[0, 2:5, 2:5] = 1
    scores = np.zeros((1, 10, 10), dtype=np.float32)
    scores[0, 2:5, 2:5] = 0.5  # exactly the threshold
    assert ours(scores, labels, 0.5, 0, 0, ">=").compute()["mean_f1"] == 1.0
    assert ours(scores, labels, 0.5, 0, 0, ">").compute()["mean_f1"] == 0.0
    with pytest.raises(ValueError, match="threshold_rule"):
        ComponentMetrics(0.5, threshold_rule="<")
    with pytest.raises(ValueError, match="merge"):
        ComponentMetrics(0.5).merge(ComponentMetrics(0.5, threshold_rule=">"))


def test_background_smaller_than_min_gt_size_is_ignored_as_in_smiyc() -> None:
    # SMIYC's filter loop includes label 0: an image with fewer non-anomaly pixels than
    # min_gt_size has them all ignored
    labels = np.ones((1, 12, 12), dtype=np.uint8)
    labels[0, :, :1] = 0  # 12 normal pixels
    scores = np.ones((1, 12, 12), dtype=np.float32)
    _check(scores, labels, 0.5, 0, 20, ">=")
    assert ours(scores, labels, 0.5, 0, 20, ">=").compute()["mean_ppv"] == 1.0


def test_definition_names_rule_and_filters() -> None:
    cm = ComponentMetrics(0.1, 500, 100, ">")
    assert cm.definition == component_definition(">", 500, 100)
    assert "score > threshold" in cm.definition and "< 500 px" in cm.definition
    assert cm.compute()["definition"] == cm.definition
