"""open-mIoU against an independent implementation of DenseHybrid's ``evaluate_osr.py``
definition written here (sklearn's roc_curve and its loop for the threshold, the ENet-style
IoU with an ignore index), with score ties, odd sizes, a town calibrated on the other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_curve

from hazardseg.metrics.open_set import (
    OpenSetCalibration,
    OpenSetConfusion,
    roc_curve_threshold,
)

K = 5  # known classes; anomaly id K; ignore 255


def make_town(seed: int, n: int, ties: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(scores, argmax prediction, label) per image; labels 0..K-1, K (anomaly), 255."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = int(rng.integers(11, 30)), int(rng.integers(13, 37))
        lab = rng.integers(0, K, (h, w))
        lab[rng.random((h, w)) < 0.1] = 255
        y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        lab[y : y + 4, x : x + 5] = K
        pred = np.where(
            rng.random((h, w)) < 0.7, np.minimum(lab, K - 1), rng.integers(0, K, (h, w))
        )
        s = rng.normal(0, 1, (h, w)) + 1.5 * (lab == K)
        if ties:
            s = np.round(s, 1)
        out.append((s.astype(np.float32), pred, lab))
    return out


def ref_threshold(town, rate: float = 0.95) -> float:
    """OODCalibration.calculate_ood_scores: scores x0.5 bilinear, labels nearest, ignore out,
    roc_curve, first point with tpr > rate."""
    confs, gts = [], []
    for s, _, lab in town:
        conf = F.interpolate(torch.from_numpy(s)[None, None], scale_factor=0.5, mode="bilinear")[
            0, 0
        ]
        lbl = torch.from_numpy(np.where(lab == K, 1, np.where(lab == 255, 2, 0)).astype(np.float32))
        lbl = F.interpolate(lbl[None, None], scale_factor=0.5, mode="nearest")[0, 0].long()
        label, conf = lbl.view(-1), conf.reshape(-1)
        gts.append(label[label != 2].numpy())
        confs.append(conf[label != 2].numpy())
    fpr, tpr, thr = roc_curve(np.concatenate(gts), np.concatenate(confs))
    treshold = 0
    for i, _j, k in zip(tpr, fpr, thr, strict=True):
        if i > rate:
            treshold = k
            break
    return float(treshold)


def ref_open_miou(town, threshold: float) -> float:
    """OpenModel.forward + evaluate_open_dataset: OpenIoU(K+2, ignore_index=K+1)."""
    n = K + 2
    conf = np.zeros((n, n), np.int64)
    for s, pred, lab in town:
        classes = pred.copy()
        classes[s > threshold] = K
        y = np.where(lab == 255, K + 1, lab)
        conf += np.bincount(classes.ravel() + n * y.ravel(), minlength=n * n).reshape(n, n)
    conf[:, K + 1] = 0
    conf[K + 1, :] = 0
    tp = np.diag(conf)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (tp + (conf.sum(0) - tp) + (conf.sum(1) - tp))
    return float(np.nanmean(iou[:-2]))


def ref_closed_miou(towns) -> float:
    conf = np.zeros((K + 1, K + 1), np.int64)
    for _s, pred, lab in (f for t in towns for f in t):
        y = np.where(lab >= K, K, lab)
        conf += np.bincount(pred.ravel() + (K + 1) * y.ravel(), minlength=(K + 1) ** 2).reshape(
            K + 1, K + 1
        )
    conf[:, K] = 0
    conf[K, :] = 0
    tp = np.diag(conf)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (tp + (conf.sum(0) - tp) + (conf.sum(1) - tp))
    return float(np.nanmean(iou))


def ours(towns: dict[str, list]) -> dict:
    cal = OpenSetCalibration(list(towns))
    for name, town in towns.items():
        for s, _, lab in town:
            m = torch.from_numpy(lab)
            cal.update(torch.from_numpy(s)[None], (m == K)[None], (m != 255)[None], [name])
    thresholds = {g: c["threshold"] for g, c in cal.thresholds().items()}
    conf = OpenSetConfusion(K, thresholds)
    for name, town in towns.items():
        for s, pred, lab in town:
            known = torch.from_numpy(np.where(lab < K, lab, -1))
            conf.update(
                torch.from_numpy(pred)[None],
                torch.from_numpy(s)[None],
                known[None],
                torch.from_numpy(lab == K)[None],
                [name],
            )
    return {"thresholds": thresholds, **conf.compute()}


@pytest.mark.parametrize("ties", [False, True])
def test_open_miou_equals_densehybrid_definition(ties: bool) -> None:
    t5, t6 = make_town(1, 7, ties), make_town(2, 4, ties)
    got = ours({"t5": t5, "t6": t6})
    thr5, thr6 = ref_threshold(t6), ref_threshold(t5)  # each town calibrated on the other
    assert got["thresholds"]["t5"] == pytest.approx(thr5, abs=1e-9)
    assert got["thresholds"]["t6"] == pytest.approx(thr6, abs=1e-9)
    o5, o6 = ref_open_miou(t5, thr5), ref_open_miou(t6, thr6)
    assert got["groups"]["t5"]["open_miou"] == pytest.approx(o5, abs=1e-9)
    assert got["open_miou"] == pytest.approx((7 * o5 + 4 * o6) / 11, abs=1e-9)
    closed = ref_closed_miou([t5, t6])
    assert got["closed_miou"] == pytest.approx(closed, abs=1e-9)
    assert got["miou_drop"] == pytest.approx(closed - got["open_miou"], abs=1e-9)


def test_roc_threshold_follows_roc_curve_with_dropped_points() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.random(300) < 0.2
        s = np.round(rng.normal(0, 1, 300) + y, int(rng.integers(0, 3)))
        _fpr, tpr, thr = roc_curve(y, s)
        want = next((float(k) for i, k in zip(tpr, thr, strict=True) if i > 0.95), 0.0)
        values = np.unique(s)[::-1]
        neg = np.array([np.sum((s == v) & ~y) for v in values])
        pos = np.array([np.sum((s == v) & y) for v in values])
        assert roc_curve_threshold(neg, pos, values)[0] == want
