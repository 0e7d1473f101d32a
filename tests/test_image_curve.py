"""The compact per-image ROC counts give the official metrics of the full curve, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hazardseg.metrics import ood_functional
from hazardseg.metrics._curve import official_image_metrics
from hazardseg.metrics._image_curve import compact_roc_counts, order_keys


def full_counts(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC points at every distinct float32 score (independent: a stable sort of all pixels)."""
    s = s.astype(np.float32).astype(np.float64)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[ends]
    return tps, ends + 1 - tps


def test_order_keys_follow_float_order():
    v = np.array([-np.inf, -3.5, -1e-38, -0.0, 0.0, 1e-45, 2.0, 3e38, np.inf], np.float32)
    k = order_keys(v).astype(np.int64)
    assert np.all(np.diff(k[[0, 1, 2, 3, 5, 6, 7, 8]]) > 0)
    assert k[3] == k[4]  # -0.0 ties with +0.0


@pytest.mark.parametrize("kind", ["normal", "ties", "float16", "narrow", "ulps", "extreme"])
def test_compact_counts_give_the_full_curve_metrics(kind):
    rng = np.random.default_rng(abs(hash(kind)) % 2**32)
    for _ in range(40):
        n = int(rng.integers(2, 4000))
        if kind == "normal":
            s = rng.standard_normal(n)
        elif kind == "ties":
            s = rng.integers(-4, 4, n).astype(np.float64)
        elif kind == "float16":
            s = rng.standard_normal(n).astype(np.float16)
        elif kind == "narrow":
            s = 1 + 1e-3 * rng.standard_normal(n)
        elif kind == "ulps":  # scores a few float32 ulps apart: one level-2 bin
            s = np.float32(1) + rng.integers(0, 40, n).astype(np.float32) * np.float32(1.2e-7)
        else:
            s = rng.choice(np.array([-3e38, -1.0, 0.0, 1e-40, 7.0, 3e38]), n)
        s = np.asarray(s, dtype=np.float32)
        y = rng.random(n) < rng.uniform(0.01, 0.9)
        if y.all() or not y.any():
            continue
        if kind in ("normal", "narrow"):
            s[y] += np.float32(rng.uniform(0, 1) * (1e-3 if kind == "narrow" else 1))
        got = official_image_metrics(*map(torch.from_numpy, compact_roc_counts(s, y)))
        want = official_image_metrics(*map(torch.from_numpy, full_counts(s, y)))
        assert got == pytest.approx(want, abs=1e-12, rel=0)


def test_compact_curve_keeps_positive_points_and_run_ends():
    # scores: 5(+) 4(-) 3(-) 3(+) 2(-) 1(-)
    s = np.array([5, 4, 3, 3, 2, 1], np.float32)
    y = np.array([1, 0, 0, 1, 0, 0], bool)
    tps, fps = compact_roc_counts(s, y)
    # points: (1,0)@5, run end (1,1)@4, (2,2)@3 [one negative ties], tail (2,4)
    assert tps.tolist() == [1, 1, 2, 2] and fps.tolist() == [0, 1, 2, 4]


def test_image_metrics_cpu_path_equals_sort_path(monkeypatch):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(180, 320, generator=g)
    y = torch.zeros(180, 320, dtype=torch.bool)
    y[50:90, 100:160] = True
    s[y] += 1.0
    fast = ood_functional.image_metrics(s, y)
    monkeypatch.setattr(ood_functional, "_NUMPY_SORT_ON_CPU", False)
    slow = ood_functional.image_metrics(s, y)
    for key in ("auroc", "aupr", "fpr95"):
        assert fast[key] == pytest.approx(slow[key], abs=1e-12, rel=0)
