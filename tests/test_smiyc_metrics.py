"""The ``smiyc`` protocol against an independent implementation of road-anomaly-benchmark's
definitions written here: ``PixBinaryClass`` (per-frame percentile bins from np.quantile and
np.histogram of the float16 scores, frames merged by sorting their edges) and ``SegEval``
(components at the best-F1 threshold rounded to float16, strict ``>``, each track's size
filters), with ties, saturated scores, odd sizes, frames without anomalies and empty frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score
from tests.dataset_trees import smiyc_tree

from hazardseg.config import EvalConfig
from hazardseg.data.split import DataSource
from hazardseg.evaluation import evaluate_maps
from hazardseg.evaluation.score_maps import MapWriter
from hazardseg.metrics.collector import MetricCollector
from hazardseg.metrics.components import ComponentMetrics
from hazardseg.metrics.smiyc import SmiycPixels, component_settings, component_threshold

# ----------------------------------------------------------------- the reference


def ref_frame(scores: np.ndarray, label: np.ndarray):
    """``binary_confusion_matrix`` (percentiles, 768 bins) of one frame, as its code does."""
    roi = label < 255
    prob, gt = scores[roi], label[roi].astype(bool)
    at_true, at_false = prob[gt], prob[~gt]
    vmin, vmax = np.min(prob), np.max(prob)
    vrange = vmax - vmin  # in float16, as the benchmark's numpy does
    eps = max(float(vrange) * 1e-2, 1e-2)  # float64 under its pinned numpy 1.23
    bins = [np.array([float(vmin) - eps, float(vmax) + eps])]
    if at_true.size:
        bins.append(np.quantile(at_true, np.linspace(0, 1, min(384, at_true.size))))
    if at_false.size:
        bins.append(np.quantile(at_false, np.linspace(0, 1, min(384, at_false.size))))
    bins = np.unique(np.concatenate(bins))
    tp_rel, _ = np.histogram(at_true, bins=bins)
    fp_rel, edges = np.histogram(at_false, bins=bins)
    return edges[::-1], tp_rel[::-1], fp_rel[::-1], at_true.size, at_false.size


def ref_pixel_metrics(frames: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """``aggregate_dynamic_bins`` then ``curves_from_cmats`` (the code of 2023-08-24)."""
    res = [ref_frame(s, lab) for s, lab in frames if (lab < 255).any()]
    thresholds = np.concatenate([r[0][1:] for r in res])
    tp_rel = np.concatenate([r[1] for r in res])
    fp_rel = np.concatenate([r[2] for r in res])
    npos, nneg = sum(r[3] for r in res), sum(r[4] for r in res)
    order = np.argsort(thresholds)[::-1]
    tp = np.cumsum(tp_rel[order].astype(np.float64))
    fp = np.cumsum(fp_rel[order].astype(np.float64))
    thr = thresholds[order]
    keep = np.concatenate([[0], np.nonzero(thr[:-1] != thr[1:])[0], [len(thr) - 1]])
    tp, fp, thr = tp[keep], fp[keep], thr[keep]
    fn, tn = npos - tp, nneg - fp
    if tp[0] != 0 or fp[0] != 0:
        tp, fp = np.concatenate([[0], tp]), np.concatenate([[0], fp])
        fn, tn = np.concatenate([[npos], fn]), np.concatenate([[nneg], tn])
        thr = np.concatenate([[float(np.max(thr)) + 1], thr])
    tpr, fpr = tp / (tp + fn), fp / (fp + tn)
    n_pred = tp + fp
    prec = np.ones(len(tp))
    prec[n_pred > 0] = tp[n_pred > 0] / n_pred[n_pred > 0]
    f1 = (2 * tp) / (2 * tp + fp + fn)
    i95 = np.searchsorted(tpr, 0.95)
    ix = np.nanargmax(f1)
    return {
        "aupr": float(np.sum(np.diff(tpr) * prec[1:])),
        "auroc": float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)),
        "fpr95": float(fpr[i95]) if i95 < len(tpr) else 1.0,
        "best_f1": float(f1[ix]),
        "best_f1_threshold": float(thr[ix]),
    }


def ref_segeval(frames, thresh_p: float, segsize: int, instsize: int) -> dict[str, float]:
    """``default_instancer`` + ``segment_metrics`` + their aggregation, with loops."""
    st = np.ones((3, 3), int)
    taus = np.linspace(0.25, 0.75, 11, endpoint=True)
    siou_all, prec_all, tp, fn, fp = [], [], np.zeros(11), np.zeros(11), np.zeros(11)
    for scores, label in frames:
        label = label.copy()
        pred = (scores > np.float16(thresh_p)).astype(np.uint8)  # compared in float16
        pred[label == 255] = 0
        gt_inst, n_gt = ndimage.label(label == 1, st)
        pr_inst, n_pr = ndimage.label(pred, st)
        for comp in range(n_pr + 1):
            if (pr_inst == comp).sum() < segsize:
                pr_inst[pr_inst == comp] = 0
        for comp in range(n_gt + 1):
            if (gt_inst == comp).sum() < instsize:
                label[gt_inst == comp] = 255
        roi = label < 255
        g, p = gt_inst[roi], pr_inst[roi]
        siou = []
        for i in np.unique(g[g > 0]):
            segs = np.unique(p[(g == i) & (p > 0)])
            inter = np.count_nonzero((g == i) & (p > 0))
            adj = np.count_nonzero(np.isin(p, segs) & (g > 0) & (g != i))
            union = np.count_nonzero(np.isin(p, segs)) + np.count_nonzero(g == i) - inter - adj
            siou.append(inter / union)
        prec = [np.count_nonzero((p == j) & (g > 0)) / np.count_nonzero(p == j)
                for j in np.unique(p[p > 0])]  # fmt: skip
        siou_all += siou
        prec_all += prec
        for k, t in enumerate(taus):
            tp[k] += sum(s >= t for s in siou)
            fn[k] += sum(s < t for s in siou)
            fp[k] += sum(q < t for q in prec)
    f1 = 2 * tp / (2 * tp + fn + fp)
    return {
        "mean_f1": float(np.mean(f1)),
        "mean_siou": float(np.mean(siou_all)),
        "mean_ppv": float(np.mean(prec_all)),
    }


# ----------------------------------------------------------------- data


def make_frames(seed: int, kind: str, n: int = 12) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        h, w = int(rng.integers(17, 61)), int(rng.integers(23, 77))  # odd sizes too
        lab = np.zeros((h, w), np.uint8)
        lab[: int(rng.integers(0, 5))] = 255
        for _ in range(int(rng.integers(0, 4)) if i % 5 else 0):  # some frames: no anomaly
            y, x = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
            dy, dx = (int(v) for v in rng.integers(2, 20, size=2))
            lab[y : y + dy, x : x + dx] = 1
        s = rng.normal(0.3, 0.15, (h, w)) + 0.45 * (lab == 1)
        if kind == "ties":
            s = np.round(s, 2)
        elif kind == "saturated":
            s = np.clip(s, 0, 1)  # the top value shared by several frames
        elif kind == "wide":
            s = s * 400 - 90
        frames.append((s.astype(np.float16), lab))
    return frames


def smiyc_of(frames, dtype=np.float16, ids=None) -> dict:
    acc = SmiycPixels()
    for k, (s, lab) in enumerate(frames):
        mask = torch.from_numpy(lab)
        acc.update(
            torch.from_numpy(s.astype(dtype))[None],
            (mask == 1)[None],
            (mask != 255)[None],
            [ids[k] if ids else f"{k:03d}"],
        )
    return acc.compute()


# ----------------------------------------------------------------- tests


@pytest.mark.parametrize("kind", ["plain", "ties", "saturated", "wide"])
@pytest.mark.parametrize("seed", [0, 1])
def test_pixel_metrics_equal_the_benchmark_definition(kind: str, seed: int) -> None:
    frames = make_frames(seed, kind)
    ref = ref_pixel_metrics(frames)
    got = smiyc_of(frames)
    assert got["undefined_reason"] is None
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


def test_float32_maps_are_rounded_to_float16_as_the_benchmark_stores_them() -> None:
    frames = make_frames(3, "plain")
    wide = [(s.astype(np.float32) + np.float32(1e-4), lab) for s, lab in frames]
    ref = ref_pixel_metrics([(s.astype(np.float16), lab) for s, lab in wide])
    got = smiyc_of(wide, dtype=np.float32)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


def test_frames_without_evaluated_pixels_are_left_out_and_counted() -> None:
    frames = make_frames(4, "plain")
    empty = (np.zeros((9, 13), np.float16), np.full((9, 13), 255, np.uint8))
    got = smiyc_of([*frames, empty])
    assert got["num_empty"] == 1 and got["num_frames"] == len(frames)
    assert got["aupr"] == pytest.approx(ref_pixel_metrics(frames)["aupr"], abs=1e-9)


def test_frame_order_is_the_id_order_whatever_the_update_order() -> None:
    frames = make_frames(5, "saturated")
    ids = [f"{k:03d}" for k in range(len(frames))]
    forward = smiyc_of(frames, ids=ids)
    backward = smiyc_of(frames[::-1], ids=ids[::-1])
    assert forward == backward
    assert forward["aupr"] == pytest.approx(ref_pixel_metrics(frames)["aupr"], abs=1e-9)


def test_scores_beyond_float16_make_the_protocol_undefined() -> None:
    frames = make_frames(6, "plain", n=3)
    big = [(s.astype(np.float32) * 1e6, lab) for s, lab in frames]
    got = smiyc_of(big, dtype=np.float32)
    assert got["undefined_reason"] and "float16" in got["undefined_reason"]


@pytest.mark.parametrize("track", ["anomaly", "obstacle"])
@pytest.mark.parametrize("kind", ["plain", "ties"])
def test_segeval_equals_the_benchmark_definition(track: str, kind: str) -> None:
    frames = [
        (np.kron(s, np.ones((4, 4), np.float16)), np.kron(lab, np.ones((4, 4), np.uint8)))
        for s, lab in make_frames(7, kind)
    ]  # fmt: skip  (components above the filters)
    thr = ref_pixel_metrics(frames)["best_f1_threshold"]
    opts = component_settings(track)
    ref = ref_segeval(frames, thr, opts["min_pred_size"], opts["min_gt_size"])
    cm = ComponentMetrics(component_threshold(thr), **opts)
    for s, lab in frames:
        cm.update(s, lab == 1, lab != 255)
    got = cm.compute()
    for key in ("mean_f1", "mean_siou", "mean_ppv"):
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key


def test_collector_and_eval_maps_report_the_protocol(tmp_path) -> None:
    root = tmp_path / "ra"
    labels = smiyc_tree(root, "anomaly")
    source = DataSource.of(root)
    rng = np.random.default_rng(0)
    writer = MapWriter(tmp_path / "out", source.dataset, "validation", "smiyc")
    frames, samples = [], source.dataset.samples(root, "validation")
    for sample in samples:
        lab = labels[source.dataset.frame_id(sample)]
        s = (rng.normal(0, 1, lab.shape) + 2.0 * (lab == 1)).astype(np.float32)
        writer.put("m", sample, torch.from_numpy(s))
        frames.append((s.astype(np.float16), lab))
    res = evaluate_maps(writer.method_dir("m"), source, spec=EvalConfig(components="none"))
    m = res["methods"]["external"]
    ref = ref_pixel_metrics(frames)
    for key in ("aupr", "auroc", "fpr95", "best_f1"):
        assert m["smiyc"][key] == pytest.approx(ref[key], abs=1e-9)
    assert m["per_image"] is None and "smiyc" in res["protocol"]["definitions"]
    # the exact pooled protocol stays beside it and equals scikit-learn on the same pixels
    y = np.concatenate([lab[lab != 255].ravel() for _, lab in frames])
    s = np.concatenate([f[0][f[1] != 255].ravel().astype(np.float64) for f in frames])
    assert m["pooled"]["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert m["pooled"]["aupr"] == pytest.approx(average_precision_score(y, s), abs=1e-6)
    collector = MetricCollector(methods=["m"], labels=source.dataset.labels, protocols=["smiyc"])
    assert collector.methods["m"].per_image is None and collector.methods["m"].smiyc is not None
