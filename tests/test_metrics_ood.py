"""Pooled and per-image OOD metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from hazardseg.metrics import PerImageOOD, PooledOOD, evaluation_masks, exact_curve_metrics

TOL_EXACT = 1e-12


def reference(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """scikit-learn metrics; FPR95 = FPR of the first ROC point with TPR >= 0.95."""
    s = scores.astype(np.float32).astype(np.float64)
    fpr, tpr, _ = roc_curve(labels, s, drop_intermediate=False)
    prec, rec, thr = precision_recall_curve(labels, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * prec * rec / (prec + rec))[:-1]
    i = int(np.argmax(f1))
    return {
        "auroc": roc_auc_score(labels, s),
        "aupr": average_precision_score(labels, s),
        "fpr95": float(fpr[np.searchsorted(tpr, 0.95, side="left")]),
        "best_f1": float(f1[i]),
        "best_f1_threshold": float(thr[i]),
    }


def make_pixels(n: int, kind: str, seed: int = 0, pos_frac: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, generator=g) < pos_frac
    base = torch.randn(n, generator=g) + 1.2 * y.float()
    if kind == "float32":
        s = base
    elif kind == "float16":
        s = base.to(torch.float16)
    elif kind == "bfloat16":
        s = base.to(torch.bfloat16)
    elif kind == "float64":
        s = base.to(torch.float64) + 1e-9
    elif kind == "ties":  # 7 distinct values: heavy ties
        s = torch.round(base * 1.5).clamp(-3, 3)
    elif kind == "float16_like":  # float16 values stored as float32
        s = base.to(torch.float16).to(torch.float32)
    else:
        raise AssertionError(kind)
    return s, y


def assert_matches(res: dict, ref: dict, tol: float) -> None:
    for key in ("auroc", "aupr", "fpr95", "best_f1"):
        assert abs(res[key] - ref[key]) <= tol, (key, res[key], ref[key])


# --------------------------------------------------------------------------- masks


def test_evaluation_masks_hand_case():
    mask = torch.tensor([[0, 1, 13], [255, 12, 13]])
    is_anomaly, valid = evaluation_masks(mask)
    assert is_anomaly.tolist() == [[False, False, True], [False, False, True]]
    assert valid.tolist() == [[True, True, True], [False, True, True]]
    _, valid2 = evaluation_masks(mask, exclude_unlabeled=True)
    assert valid2.tolist() == [[False, True, True], [False, True, True]]


# --------------------------------------------------------------------------- pooled, exact


@pytest.mark.parametrize(
    "kind", ["float32", "float16", "bfloat16", "float64", "ties", "float16_like"]
)
def test_pooled_matches_sklearn_exactly(kind):
    s, y = make_pixels(60_000, kind)
    valid = torch.rand(s.shape, generator=torch.Generator().manual_seed(1)) < 0.9
    acc = PooledOOD()
    acc.update(s, y, valid)
    res = acc.compute()
    ref = reference(s[valid].to(torch.float32).numpy(), y[valid].numpy())
    assert res["exact"] is True
    assert res["error_bound"] == {"auroc": 0.0, "aupr": 0.0, "fpr95": 0.0}
    assert_matches(res, ref, TOL_EXACT)
    assert res["best_f1_threshold"] == pytest.approx(ref["best_f1_threshold"], abs=0)
    assert res["num_pos"] == int((y & valid).sum())
    assert res["num_neg"] == int((~y & valid).sum())
    assert res["num_nonfinite"] == 0
    assert res["undefined_reason"] is None


def test_fpr95_tie_step_and_hand_case():
    # Scores 3 > 2 > 1; 20 positives: 18 at score 3, 2 at score 1; negatives: 1 at 3, 4 at 2,
    # 5 at 1. TPR after score 3 = 0.9, after score 2 = 0.9, after score 1 = 1.0 >= 0.95.
    s = torch.tensor([3.0] * 18 + [1.0] * 2 + [3.0] + [2.0] * 4 + [1.0] * 5)
    y = torch.tensor([True] * 20 + [False] * 10)
    acc = PooledOOD()
    acc.update(s, y)
    res = acc.compute()
    assert res["fpr95"] == 1.0
    # AUROC by hand: pairs (pos, neg) ordered correctly + half of ties, over 200 pairs.
    wins = 18 * (4 + 5) + 18 * 1 * 0.5 + 2 * 5 * 0.5
    assert res["auroc"] == pytest.approx(wins / 200, abs=1e-15)
    # AP by hand: recall steps 0.9 at precision 18/19, 0.1 at precision 20/30.
    assert res["aupr"] == pytest.approx(0.9 * 18 / 19 + 0.1 * 20 / 30, abs=1e-15)
    assert res["best_f1"] == pytest.approx(2 * 18 / (18 + 1 + 20))
    assert res["best_f1_threshold"] == 3.0
    assert_matches(res, reference(s.numpy(), y.numpy()), TOL_EXACT)


def test_signed_zeros_tie_and_nonfinite_are_reported():
    s = torch.tensor([0.0, -0.0, 1.0, float("nan"), float("inf"), -float("inf"), -1.0, 0.5])
    y = torch.tensor([True, False, True, True, False, True, False, False])
    valid = torch.tensor([True, True, True, True, True, False, True, True])
    acc = PooledOOD()
    acc.update(s, y, valid)
    res = acc.compute()
    assert res["num_nonfinite"] == 2  # nan and +inf; -inf is not evaluated
    keep = torch.isfinite(s) & valid
    assert_matches(res, reference(s[keep].numpy(), y[keep].numpy()), TOL_EXACT)
    assert res["num_thresholds"] == 4  # 1.0, 0.5, 0.0 (both zeros), -1.0
    per_image = exact_curve_metrics(s, y, valid)
    assert per_image["num_nonfinite"] == 2
    assert per_image["auroc"] == pytest.approx(res["auroc"], abs=1e-15)


def test_no_positive_or_no_negative_gives_nan_with_reason():
    acc = PooledOOD()
    acc.update(torch.rand(100), torch.zeros(100, dtype=torch.bool))
    res = acc.compute()
    assert math.isnan(res["auroc"]) and math.isnan(res["aupr"]) and math.isnan(res["fpr95"])
    assert "no anomaly" in res["undefined_reason"]
    assert res["num_neg"] == 100 and res["num_pos"] == 0
    assert res["curves"]["roc"]["fpr"] == []
    assert math.isnan(acc.metrics_at_threshold(0.5)["recall"])
    acc2 = PooledOOD()
    acc2.update(torch.rand(10), torch.ones(10, dtype=torch.bool))
    assert "no normal" in acc2.compute()["undefined_reason"]
    assert math.isnan(PooledOOD().compute()["auroc"])


def test_empty_ignore_mask_equals_no_mask():
    s, y = make_pixels(20_000, "float32", seed=3)
    a, b = PooledOOD(), PooledOOD()
    a.update(s, y, torch.ones_like(y))
    b.update(s, y)
    ra, rb = a.compute(), b.compute()
    for key in ("auroc", "aupr", "fpr95", "best_f1", "num_pos", "num_neg"):
        assert ra[key] == rb[key]


def test_metrics_at_threshold_and_calibration_helpers():
    s, y = make_pixels(30_000, "ties", seed=4)
    acc = PooledOOD()
    acc.update(s, y)
    sn, yn = s.numpy(), y.numpy()
    for t in (-3.0, -0.5, 0.0, 1.0, 1.5, 3.0, 3.5):
        r = acc.metrics_at_threshold(t)
        flagged = sn >= t
        tp, fp = int((flagged & yn).sum()), int((flagged & ~yn).sum())
        assert (r["tp"], r["fp"]) == (tp, fp)
        assert r["recall"] == pytest.approx(tp / yn.sum())
        assert r["fpr"] == pytest.approx(fp / (~yn).sum())
        assert r["exact"]
    res = acc.compute()
    best = acc.metrics_at_threshold(res["best_f1_threshold"])
    assert best["f1"] == pytest.approx(res["best_f1"], abs=1e-15)
    assert acc.metrics_at_threshold(100.0)["precision"] == 0.0
    t = acc.threshold_for_tpr(0.95)
    assert acc.metrics_at_threshold(t)["fpr"] == pytest.approx(res["fpr95"], abs=1e-15)
    t = acc.threshold_for_fpr(0.05)
    assert acc.metrics_at_threshold(t)["fpr"] <= 0.05
    with pytest.raises(ValueError, match="NaN"):
        acc.metrics_at_threshold(float("nan"))


def test_curves_are_downsampled_monotone_and_keep_endpoints():
    s, y = make_pixels(50_000, "float32", seed=5)
    acc = PooledOOD()
    acc.update(s, y)
    res = acc.compute(max_curve_points=200)
    roc, pr = res["curves"]["roc"], res["curves"]["pr"]
    assert 50 <= len(roc["fpr"]) <= 200
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"]) == len(pr["precision"])
    assert np.all(np.diff(roc["fpr"]) >= 0) and np.all(np.diff(roc["tpr"]) >= 0)
    assert np.all(np.diff(roc["thresholds"]) < 0)
    assert roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert res["fpr95"] in roc["fpr"]  # the FPR95 point is kept
    full = acc.compute(max_curve_points=10**9)["curves"]["roc"]
    assert len(full["fpr"]) == res["num_thresholds"]


# --------------------------------------------------------------------------- histogram stage


@pytest.mark.parametrize("bits", [17, 22])
def test_histogram_stage_error_within_reported_bound(bits):
    s, y = make_pixels(400_000, "float32", seed=6)
    acc = PooledOOD(bits=bits, max_distinct=1000)
    acc.update(s, y)
    res = acc.compute()
    assert acc.mode == "histogram" and res["exact"] is False
    ref = reference(s.numpy(), y.numpy())
    for key in ("auroc", "aupr", "fpr95"):
        assert abs(res[key] - ref[key]) <= res["error_bound"][key] + 1e-12, key
    assert abs(res["auroc"] - ref["auroc"]) <= 1e-5
    if bits == 22:
        assert res["error_bound"]["auroc"] < 2e-5
        for key in ("aupr", "fpr95"):
            assert abs(res[key] - ref[key]) <= 2e-5, key


def test_histogram_is_exact_for_float16_and_pure_bins():
    s, y = make_pixels(100_000, "float16", seed=7)
    acc = PooledOOD(max_distinct=10)
    acc.update(s, y)
    res = acc.compute()
    assert acc.mode == "histogram" and res["exact"] is True
    assert_matches(res, reference(s.float().numpy(), y.numpy()), TOL_EXACT)
    assert acc.nbytes <= 64 * 2**20


@pytest.mark.slow
def test_ten_million_pixels_in_chunks_equal_one_shot():
    n = 10_500_000
    s, y = make_pixels(n, "float16", seed=8, pos_frac=0.02)
    valid = torch.ones(n, dtype=torch.bool)
    valid[::97] = False
    one = PooledOOD()
    one.update(s, y, valid)
    chunked = PooledOOD()
    for start in range(0, n, 921_600):
        part = slice(start, start + 921_600)
        chunked.update(s[part], y[part], valid[part])
    r1, r2 = one.compute(), chunked.compute()
    for key in ("auroc", "aupr", "fpr95", "best_f1", "best_f1_threshold", "num_pos"):
        assert r1[key] == r2[key], key
    assert torch.equal(one.hist.counts, chunked.hist.counts)
    assert r1["exact"] and r1["num_pos"] + r1["num_neg"] == n - len(range(0, n, 97))


# --------------------------------------------------------------------------- merging


@pytest.mark.parametrize("max_distinct", [1 << 21, 500])
def test_merge_in_any_order_equals_one_accumulator(max_distinct):
    s, y = make_pixels(80_000, "float32", seed=9)
    whole = PooledOOD(max_distinct=max_distinct)
    whole.update(s, y)
    shards = []
    for part in torch.tensor_split(torch.arange(s.numel()), 4):
        acc = PooledOOD(max_distinct=max_distinct)
        acc.update(s[part], y[part])
        shards.append(acc)
    for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
        merged = PooledOOD(max_distinct=max_distinct)
        for i in order:
            merged.merge(shards[i])
        a, b = merged.compute(), whole.compute()
        assert merged.mode == whole.mode
        for key in ("auroc", "aupr", "fpr95", "best_f1", "best_f1_threshold", "num_neg"):
            assert a[key] == b[key], key


@pytest.mark.parametrize("max_distinct", [1 << 21, 500])
def test_state_dict_round_trip_with_weights_only(max_distinct):
    s, y = make_pixels(5_000, "float32", seed=10)
    acc = PooledOOD(bits=17, max_distinct=max_distinct)
    acc.update(s, y)
    buf = io.BytesIO()
    torch.save(acc.state_dict(), buf)
    buf.seek(0)
    back = PooledOOD.from_state_dict(torch.load(buf, weights_only=True))
    assert back.compute()["aupr"] == acc.compute()["aupr"]
    assert back.mode == acc.mode


def test_bad_inputs_raise():
    acc = PooledOOD()
    with pytest.raises(ValueError, match="one shape"):
        acc.update(torch.rand(3), torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        acc.update(torch.rand(3), torch.zeros(3))
    with pytest.raises(ValueError, match="floating"):
        acc.update(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="bits"):
        PooledOOD(bits=30)
    with pytest.raises(ValueError, match="bits"):
        PooledOOD(bits=16)


# --------------------------------------------------------------------------- per image


def _images(seed: int = 11):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(5, 32, 48, generator=g)
    labels = torch.zeros(5, 32, 48, dtype=torch.bool)
    labels[0, 4:12, 5:20] = True
    labels[1, 20:, 30:] = True
    labels[2] = True  # all anomaly: skipped
    # image 3: no anomaly: skipped
    labels[4, ::3, ::2] = True
    scores = scores + 1.5 * labels.float()
    scores[1] = torch.round(scores[1])  # heavy ties
    valid = torch.ones_like(labels)
    valid[:, 0, :] = False
    return scores, labels, valid


def _closest_recall_fpr95(scores: np.ndarray, labels: np.ndarray) -> float:
    """Official per-image FPR95: the ROC point (down to full recall) whose recall is closest
    to 0.95, the lowest threshold among equally close points."""
    fpr, tpr, _ = roc_curve(labels, scores.astype(np.float32), drop_intermediate=False)
    full = int(np.argmax(tpr >= 1.0))
    gap = np.abs(tpr[1 : full + 1] - 0.95)  # roc_curve starts with an extra (0, 0) point
    return float(fpr[1 + np.flatnonzero(gap == gap.min()).max()])


def test_per_image_matches_sklearn_per_image_and_skips():
    scores, labels, valid = _images()
    acc = PerImageOOD()
    acc.update(scores, labels, valid, image_ids=[f"img{i}" for i in range(5)])
    res = acc.compute()
    refs = []
    for i in (0, 1, 4):
        v = valid[i]
        refs.append(reference(scores[i][v].numpy(), labels[i][v].numpy()))
        refs[-1]["fpr95"] = _closest_recall_fpr95(scores[i][v].numpy(), labels[i][v].numpy())
    for key in ("auroc", "aupr", "fpr95"):
        assert res[key] == pytest.approx(np.mean([r[key] for r in refs]), abs=TOL_EXACT)
    assert res["num_images"] == 3 and res["num_skipped"] == 2


def test_per_image_merge_order_and_ids():
    scores, labels, valid = _images(12)
    ids = [f"t5/{i}.png" for i in range(5)]
    whole = PerImageOOD()
    whole.update(scores, labels, valid, image_ids=ids)
    a, b = PerImageOOD(), PerImageOOD()
    for i in (4, 1, 2):
        a.update(scores[i], labels[i], valid[i], image_ids=ids[i])
    for i in (3, 0):
        b.update(scores[i], labels[i], valid[i], image_ids=ids[i])
    assert b.merge(a).compute() == whole.compute()
    with pytest.raises(ValueError, match="already"):
        whole.update(scores[0], labels[0], valid[0], image_ids=ids[0])
    with pytest.raises(ValueError, match="both"):
        PerImageOOD().merge(whole).merge(whole)
    with pytest.raises(ValueError, match="ids"):
        PerImageOOD().update(scores, labels, valid, image_ids=["x"])


def test_per_image_without_any_usable_image_is_nan():
    acc = PerImageOOD()
    acc.update(torch.rand(8, 8), torch.zeros(8, 8, dtype=torch.bool))
    res = acc.compute()
    assert math.isnan(res["auroc"]) and res["num_images"] == 0 and res["num_skipped"] == 1


# --------------------------------------------------------------------------- capacity


def test_coarsened_histogram_equals_a_coarser_one():
    from hazardseg.metrics._histogram import ScoreHistogram

    s, y = make_pixels(50_000, "float32", seed=13)
    s[:10] = torch.tensor(
        [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-40, -1e-40, 3e38, -3e38, 1.0]
    )
    fine, coarse = ScoreHistogram(19), ScoreHistogram(18)
    fine.update(s, y, None)
    coarse.update(s, y, None)
    fine.coarsen()
    assert fine.bits == 18 and fine.counts.dtype == torch.int64
    assert torch.equal(fine.counts, coarse.counts.long())
    occupied = (coarse.counts[: coarse.nbins] + coarse.counts[coarse.nbins : -1]) > 0
    assert torch.equal(fine.lo[occupied], coarse.lo[occupied])
    assert torch.equal(fine.hi[occupied], coarse.hi[occupied])


def test_int32_counts_widen_before_overflow_and_merge_across_resolutions():
    s, y = make_pixels(30_000, "float32", seed=14)
    big = PooledOOD(max_distinct=10)
    big.update(s[:10_000], y[:10_000])
    assert big.hist.bits == 22 and big.hist.counts.dtype == torch.int32
    big.hist.total = 2**31 - 5_000  # pretend 2.1 billion pixels were counted
    big.update(s[10_000:], y[10_000:])
    assert big.hist.bits == 21 and big.hist.counts.dtype == torch.int64
    assert big.nbytes <= 64 * 2**20
    ref = PooledOOD(bits=21, max_distinct=10)
    ref.update(s, y)
    assert torch.equal(big.hist.counts, ref.hist.counts.long())
    merged = PooledOOD(max_distinct=10)
    merged.update(s[:5], y[:5])
    merged.merge(ref)  # a 22-bit int32 accumulator absorbs a 21-bit one
    assert merged.hist.bits == 21
    assert merged.compute()["num_neg"] == ref.compute()["num_neg"] + int((~y[:5]).sum())


def test_state_stays_bounded_in_both_stages():
    s, y = make_pixels(600_000, "float32", seed=15)
    acc = PooledOOD()
    acc.update(s[:250_000], y[:250_000])  # below 2**18 distinct scores: exact stage
    assert acc.mode == "exact" and acc.nbytes <= 16 * 2**20
    acc.update(s[250_000:], y[250_000:])  # beyond: histogram stage
    assert acc.mode == "histogram" and acc.nbytes <= 64 * 2**20
