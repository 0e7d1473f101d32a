"""ConfusionMatrix against scikit-learn and hand-computed IoU."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, jaccard_score

from hazardseg.data.classes import ANOMALY_ID, IGNORE_INDEX, KNOWN_CLASS_NAMES, NUM_CLASSES
from hazardseg.metrics import ConfusionMatrix


def _random_pair(seed: int, shape=(2, 48, 64)):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, NUM_CLASSES, shape, generator=g)
    target[torch.rand(shape, generator=g) < 0.1] = ANOMALY_ID
    target[torch.rand(shape, generator=g) < 0.05] = IGNORE_INDEX
    pred = torch.randint(0, NUM_CLASSES, shape, generator=g)
    return pred, target


def test_matches_sklearn_confusion_matrix_and_iou():
    pred, target = _random_pair(0)
    cm = ConfusionMatrix(NUM_CLASSES)
    cm.update(pred, target)
    keep = target < NUM_CLASSES
    t, p = target[keep].numpy(), pred[keep].numpy()
    expected = confusion_matrix(t, p, labels=list(range(NUM_CLASSES)))
    np.testing.assert_array_equal(cm.matrix.numpy(), expected)
    r = cm.compute(KNOWN_CLASS_NAMES)
    ref = jaccard_score(t, p, labels=list(range(NUM_CLASSES)), average=None)
    np.testing.assert_allclose(r["iou"].numpy(), ref, rtol=1e-12)
    assert r["miou"] == pytest.approx(ref.mean())
    assert r["miou_no_unlabeled"] == pytest.approx(ref[1:].mean())
    assert r["pixel_accuracy"] == pytest.approx((t == p).mean())
    assert r["class_names"] == list(KNOWN_CLASS_NAMES)


def test_hand_computed_absent_class_is_nan_and_excluded():
    # 3 classes: class 2 absent from GT and prediction.
    target = torch.tensor([0, 0, 1, 1, 255, 13])
    pred = torch.tensor([0, 1, 1, 1, 2, 2])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    r = cm.compute(["a", "b", "c"])
    assert r["iou"][0].item() == pytest.approx(0.5)  # tp 1, gt 2, pred 1
    assert r["iou"][1].item() == pytest.approx(2 / 3)  # tp 2, gt 2, pred 3
    assert math.isnan(r["iou"][2].item())
    assert r["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert r["miou_no_unlabeled"] == pytest.approx(2 / 3)
    assert r["pixel_accuracy"] == pytest.approx(3 / 4)
    d = cm.to_dict(["a", "b", "c"])
    assert d["iou"] == {"a": pytest.approx(0.5), "b": pytest.approx(2 / 3), "c": None}
    json.dumps(d, allow_nan=False)


def test_predicted_but_absent_in_gt_counts_as_zero():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    r = cm.compute()
    assert r["iou"].tolist() == [0.5, 0.0]
    assert r["miou"] == pytest.approx(0.25)


def test_empty_matrix_gives_nan():
    cm = ConfusionMatrix()
    cm.update(torch.tensor([1, 2]), torch.tensor([255, 13]))
    r = cm.compute()
    assert cm.matrix.sum() == 0
    assert math.isnan(r["miou"]) and math.isnan(r["pixel_accuracy"])
    assert cm.to_dict()["miou"] is None


def test_merge_and_chunks_equal_one_shot_then_reset():
    pred, target = _random_pair(1, (4, 32, 32))
    one = ConfusionMatrix()
    one.update(pred, target)
    parts = [ConfusionMatrix() for _ in range(4)]
    for i, part in enumerate(parts):
        part.update(pred[i], target[i])
    merged = ConfusionMatrix()
    for part in reversed(parts):
        merged.merge(part)
    assert torch.equal(merged.matrix, one.matrix)
    assert merged.matrix.dtype == torch.int64
    merged.reset()
    assert merged.matrix.sum() == 0
    merged.all_reduce()  # no process group: no-op


def test_rejects_bad_input():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shapes differ"):
        cm.update(torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"0\.\.2"):
        cm.update(torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="class names"):
        cm.compute(["a"])
    with pytest.raises(ValueError, match="merge"):
        cm.merge(ConfusionMatrix(4))
