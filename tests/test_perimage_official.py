"""PerImageOOD against an independent implementation of the official StreetHazards evaluation.

The reference follows the definitions of hendrycks/anomaly-seg (``eval_ood.py``,
``anom_utils.py``), written here without hazardseg code:

* labels: PNG value - 1 (so PNG 0 becomes -1); positive = 13, every other pixel negative;
* anomaly score = the method's score (the official code negates its confidence);
* an image counts only when it has both positive and negative pixels;
* AUROC / AUPR: scikit-learn's ``roc_auc_score`` / ``average_precision_score``;
* FPR95: brute force over the distinct scores t (recall and FPR of ``score >= t`` by direct
  counting), keeping the thresholds from the highest down to the first with full recall, and
  taking the one whose recall is closest to 0.95, the lowest threshold among equally close;
* the protocol value: the mean over the counted images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from hazardseg.data.classes import ids_to_png
from hazardseg.metrics import ood_functional
from hazardseg.metrics.ood import PerImageOOD
from hazardseg.metrics.ood_functional import exact_curve_metrics, image_metrics
from hazardseg.metrics.ood_protocol import evaluation_masks, per_image_masks, protocol_definitions

TOL = 1e-9


def official_fpr95(scores: np.ndarray, positive: np.ndarray) -> float:
    p, n = int(positive.sum()), int((~positive).sum())
    best = None  # (gap, -threshold, fpr): smallest gap, then lowest threshold
    lowest_full = scores[positive].min()  # the first threshold with full recall
    for t in np.unique(scores):
        if t < lowest_full:
            continue
        flagged = scores >= t
        recall = np.float64(int((flagged & positive).sum())) / np.float64(p)
        gap = abs(recall - 0.95)
        key = (gap, t, int((flagged & ~positive).sum()) / n)
        if best is None or gap < best[0] or (gap == best[0] and t < best[1]):
            best = key
    assert best is not None
    return best[2]


def official_image(scores: np.ndarray, png: np.ndarray) -> tuple[float, float, float] | None:
    label = png.astype(np.int64) - 1  # the official loader's shift
    positive = label == 13
    if positive.all() or not positive.any():
        return None
    s = scores.astype(np.float32).ravel()
    y = positive.ravel()
    return (
        roc_auc_score(y, s),
        average_precision_score(y, s),
        official_fpr95(s, y),
    )


def official_protocol(scores: np.ndarray, png: np.ndarray) -> dict[str, float]:
    per = [official_image(scores[i], png[i]) for i in range(len(scores))]
    kept = [r for r in per if r is not None]
    return {
        "auroc": float(np.mean([r[0] for r in kept])),
        "aupr": float(np.mean([r[1] for r in kept])),
        "fpr95": float(np.mean([r[2] for r in kept])),
        "num_images": len(kept),
        "num_skipped": len(per) - len(kept),
    }


def _id_masks(seed: int, n: int = 6, size=(24, 30)) -> torch.Tensor:
    """hazardseg id masks: classes 0..12, anomaly 13, 255 (PNG 0); two images to skip."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.randint(0, 13, (n, *size), generator=g)
    mask[torch.rand(n, *size, generator=g) < 0.15] = 255
    mask[0, 3:10, 4:15] = 13
    mask[1, 12:, 20:] = 13
    mask[2] = 13  # only anomaly: skipped
    mask[2, 0, :4] = 255  # ... unless PNG-0 pixels count as normal (they do)
    # image 3: no anomaly: skipped
    mask[4] = 13  # only anomaly and nothing else: skipped
    mask[5, ::3, ::2] = 13
    return mask


def _scores(mask: torch.Tensor, seed: int, kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    s = torch.randn(mask.shape, generator=g) + 1.2 * (mask == 13).float()
    s[mask == 255] += 0.8  # PNG-0 pixels look somewhat anomalous: their treatment matters
    if kind == "float16-valued":
        s = s.half().float()
    elif kind == "float16":
        s = s.half()
    elif kind == "ties":
        s = torch.round(s * 2) / 2
    return s


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ["float32", "float16-valued", "float16", "ties"])
def test_per_image_equals_official_definitions(seed: int, kind: str) -> None:
    mask = _id_masks(seed)
    scores = _scores(mask, seed, kind)
    acc = PerImageOOD()
    is_anom, valid = per_image_masks(mask)
    acc.update(scores, is_anom, valid, image_ids=[f"t5/{i}.png" for i in range(len(mask))])
    res = acc.compute()
    ref = official_protocol(scores.float().numpy(), ids_to_png(mask.numpy()))
    for key in ("auroc", "aupr", "fpr95"):
        assert abs(res[key] - ref[key]) <= TOL, key
    assert res["num_images"] == ref["num_images"] == 4
    assert res["num_skipped"] == ref["num_skipped"] == 2
    # the PNG-0 pixels matter: ignoring them (the pooled masks) gives other numbers
    other = PerImageOOD()
    other.update(scores, *evaluation_masks(mask))
    assert abs(other.compute()["auroc"] - ref["auroc"]) > 1e-4


def test_fpr95_is_closest_recall_with_lowest_threshold_among_ties() -> None:
    # 50 positives: recalls 0.94 and 0.96 are equally close to 0.95 (also in float64).
    # Scores descending: 47 positives, 3 negatives, 1 positive (recall 0.96), 4 negatives,
    # 2 positives, 10 negatives.
    labels = [1] * 47 + [0] * 3 + [1] + [0] * 4 + [1] * 2 + [0] * 10
    y = torch.tensor(labels, dtype=torch.bool)
    s = torch.arange(len(labels), 0, -1, dtype=torch.float32)
    res = image_metrics(s, y)
    # points with recall 0.94: fps 0..3; with recall 0.96: fps 3..7; lowest threshold: fps 7
    assert res["fpr95"] == pytest.approx(7 / 17, abs=0)
    assert res["fpr95"] == official_fpr95(s.numpy(), y.numpy())
    # the pooled rule (first point with TPR >= 0.95) would give 3 / 17
    assert exact_curve_metrics(s, y)["fpr95"] == pytest.approx(3 / 17)


def test_torch_sort_path_equals_numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    mask = _id_masks(7)
    scores = _scores(mask, 7, "ties")
    is_anom, valid = per_image_masks(mask)
    a = PerImageOOD()
    a.update(scores, is_anom, valid)
    monkeypatch.setattr(ood_functional, "_NUMPY_SORT_ON_CPU", False)
    b = PerImageOOD()
    b.update(scores, is_anom, valid)
    assert a.compute() == b.compute()


def test_per_image_masks() -> None:
    mask = torch.tensor([[0, 5, 13, 255], [12, 255, 13, 1]])
    is_anom, valid = per_image_masks(mask)
    assert torch.equal(is_anom, mask == 13) and bool(valid.all())
    is_anom, valid = per_image_masks(mask, exclude_unlabeled=True)
    assert torch.equal(valid, (mask != 0) & (mask != 255))
    assert torch.equal(is_anom, mask == 13)


def test_nonfinite_scores_are_excluded_and_counted() -> None:
    mask = _id_masks(3)
    scores = _scores(mask, 3, "float32")
    scores[0, 0, 0] = float("nan")
    scores[5, 1, 1] = float("inf")
    acc = PerImageOOD()
    acc.update(scores, *per_image_masks(mask))
    res = acc.compute()
    assert res["num_nonfinite"] == 2
    clean = scores.clone()
    keep = torch.isfinite(clean)
    r0 = image_metrics(scores[0], mask[0] == 13)
    r0_ref = roc_auc_score((mask[0] == 13)[keep[0]].numpy(), clean[0][keep[0]].numpy())
    assert abs(r0["auroc"] - r0_ref) <= TOL


def test_protocol_definitions_name_both_rules() -> None:
    d = protocol_definitions()
    assert "closest to 0.95" in d["per_image"] and "PNG value 0" in d["per_image"]
    assert "searchsorted" in d["pooled_fpr95"]
    assert "NOT the official" in protocol_definitions(exclude_unlabeled=True)["per_image"]


def test_results_json_names_each_definition(tmp_path) -> None:
    from hazardseg.errors import DataError
    from hazardseg.evaluation.results import load_results, protocol_section, save_results
    from test_results import _results

    doc = _results()
    doc["protocol"] = protocol_section(False, {"threshold_rule": ">", "min_pred_size": 500})
    save_results(tmp_path / "results.json", doc)
    defs = load_results(tmp_path)["protocol"]["definitions"]
    assert set(defs) == {"pooled_fpr95", "per_image", "components"}
    assert "score > threshold" in defs["components"] and "< 500 px" in defs["components"]
    doc["protocol"]["definitions"]["per_image"] = 3
    with pytest.raises(DataError, match=r"protocol\.definitions\.per_image"):
        save_results(tmp_path / "bad.json", doc)
