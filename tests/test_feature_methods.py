"""Feature-density methods (knn, mahalanobis) and the one-pass fitting of every fitted method."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TinyNet, make_tiny_tree, spec_for, torch_predictor
from hazardseg.anomaly import create_method, fit_methods
from hazardseg.anomaly.heat import HEAT
from hazardseg.anomaly.knn import KNN, kth_nn_distance, pixel_features
from hazardseg.anomaly.mahalanobis import Mahalanobis
from hazardseg.anomaly.sampling import BottomK, feature_keys
from hazardseg.anomaly.sml import SML
from hazardseg.anomaly.state import AnomalyState
from hazardseg.cli import main
from hazardseg.data.classes import KNOWN_CLASS_NAMES
from hazardseg.errors import HazardsegError
from hazardseg.evaluation import evaluate
from hazardseg.evaluation.spec import RunOptions
from hazardseg.models import create_model
from hazardseg.models.checkpoint import save_checkpoint

torch.set_num_threads(1)


def _data(n: int = 6, size: tuple[int, int] = (20, 24)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, *size, generator=g)
    masks = torch.randint(0, 5, (n, *size), generator=g)
    masks[:, :2] = 255  # "no class" pixels are skipped
    return images, masks


def _loader(images: torch.Tensor, masks: torch.Tensor, bs: int) -> list[dict[str, torch.Tensor]]:
    return [
        {"image": images[i : i + bs], "mask": masks[i : i + bs]} for i in range(0, len(images), bs)
    ]


def _outputs(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = model(images, return_features=True)
    return out["out"], out["features"]


# ------------------------------------------------------------------ sampling
def test_feature_keys_depend_on_rows_and_seed_only() -> None:
    x = torch.randn(50, 7, generator=torch.Generator().manual_seed(0))
    k = feature_keys(x, 3)
    assert k.dtype == torch.int64 and (k >= 0).all() and k.unique().numel() == 50
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(feature_keys(x[perm], 3), k[perm])
    assert not torch.equal(feature_keys(x, 4), k)
    sample = BottomK(10)
    for part in (x[perm][:17], x[perm][17:]):
        sample.update(feature_keys(part, 3), part)
    whole = BottomK(10)
    whole.update(k, x)
    assert torch.equal(sample.result(), whole.result())


# ------------------------------------------------------------------ knn
def test_knn_hand_made_bank() -> None:
    eye = torch.eye(4)
    m = KNN(k=1)
    m.load_state_dict({"bank": eye[:2]})  # e1, e2
    feats = torch.stack([eye[0], (eye[0] + eye[2]) / math.sqrt(2), eye[3] * 5.0])  # (3, 4)
    feats = feats.T.reshape(1, 4, 1, 3)
    s = m.score(torch.zeros(1, 3, 1, 3), feats)[0, 0]
    # e1 -> 0; (e1 + e3)/sqrt2 -> |e1 - (e1+e3)/sqrt2|; e4 (normalised) -> sqrt(2)
    expect = torch.tensor([0.0, math.sqrt(2 - 2 / math.sqrt(2)), math.sqrt(2)])
    torch.testing.assert_close(s, expect, atol=1e-6, rtol=0)
    m2 = KNN(k=2)
    m2.load_state_dict({"bank": eye[:2]})
    s2 = m2.score(torch.zeros(1, 3, 1, 3), feats)[0, 0]
    torch.testing.assert_close(s2[0], torch.tensor(math.sqrt(2)), atol=1e-6, rtol=0)
    q = F.normalize(torch.randn(300, 4), dim=1)
    bank = F.normalize(torch.randn(40, 4), dim=1)
    ref = torch.cdist(q, bank).sort(dim=1).values[:, 2]
    torch.testing.assert_close(kth_nn_distance(q, bank, 3, chunk=7), ref, atol=1e-5, rtol=0)


def test_knn_bank_class_balanced_deterministic_and_order_independent() -> None:
    model = TinyNet()
    images, masks = _data(6)
    logits, feats = _outputs(model, images)
    small = F.interpolate(masks[:, None].float(), size=feats.shape[-2:], mode="nearest")[:, 0]

    def fit(order: list[int], bs: int, seed: int = 0, bank: int = 40) -> torch.Tensor:
        m = KNN(k=1, bank_size=bank, balance="label", seed=seed)
        m.fit_begin()
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            m.fit_update(logits[idx], feats[idx], masks[idx])
        m.fit_end()
        assert m.bank is not None
        return m.bank

    a = fit([0, 1, 2, 3, 4, 5], 2)
    b = fit([5, 3, 1, 0, 4, 2], 4)
    c = fit([2, 0, 5, 1, 3, 4], 1)
    assert a.shape == (40, 6) and torch.equal(a, b) and torch.equal(a, c)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(40))
    assert not torch.equal(a, fit([0, 1, 2, 3, 4, 5], 2, seed=1))
    # balanced: 8 per class (5 classes), "no class" rows never enter the bank
    counts = torch.bincount(small.long().reshape(-1)[small.reshape(-1) < 5], minlength=5)
    assert (counts >= 8).all()
    norm = pixel_features(feats, exact=True)
    cls = small.long().reshape(-1)
    owner = []
    for row in a:
        hit = (norm == row).all(dim=1)
        assert hit.any() and (cls[hit] < 5).all()
        owner.append(int(cls[hit][0]))
    assert torch.bincount(torch.tensor(owner), minlength=5).tolist() == [8] * 5
    # bank larger than the data: every labelled vector once
    full = fit([0, 1, 2, 3, 4, 5], 3, bank=10**6)
    assert full.shape[0] == int((cls < 5).sum())


def test_knn_scores_shape_batch_independent_and_errors() -> None:
    model = TinyNet()
    images, masks = _data(4)
    m = KNN(k=3, bank_size=64)
    m.fit(model, _loader(images, masks, 2))
    logits, feats = _outputs(model, images)
    s = m.score(logits, feats)
    assert s.shape == (4, 20, 24) and s.dtype == torch.float32 and torch.isfinite(s).all()
    one = torch.cat([m.score(logits[i : i + 1], feats[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(s, one, atol=1e-5, rtol=1e-5)
    with pytest.raises(HazardsegError, match="k must be >= 1"):
        KNN(k=0)
    with pytest.raises(HazardsegError, match="balance must be one of"):
        KNN(balance="foo")
    with pytest.raises(HazardsegError, match="needs the model's features"):
        m.score(logits, None)
    with pytest.raises(HazardsegError, match="fitted on 6-dim"):
        m.score(logits, torch.zeros(1, 3, 2, 2))
    with pytest.raises(HazardsegError, match="B >= k=3"):
        KNN(k=3).load_state_dict({"bank": torch.zeros(2, 4)})
    unlabeled = KNN(balance="predicted", bank_size=32)
    unlabeled.fit(model, [{"image": images}])  # no labels needed
    assert unlabeled.bank is not None and 0 < unlabeled.bank.shape[0] <= 32
    pooled = KNN(balance="none", bank_size=32)
    pooled.fit(model, [{"image": images}])
    assert pooled.bank is not None and pooled.bank.shape == (32, 6)


# ------------------------------------------------------------------ mahalanobis
def test_mahalanobis_hand_made_case() -> None:
    # class 0 around (0, 0), class 1 around (10, 0): within-class covariance diag(0.5, 0.5)
    pts0 = torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    pts1 = pts0 + torch.tensor([10.0, 0])
    feats = torch.cat([pts0, pts1]).T.reshape(1, 2, 1, 8)
    labels = torch.tensor([[[0, 0, 0, 0, 1, 1, 1, 1]]])
    m = Mahalanobis(shrinkage=0.0)
    m.fit_begin()
    m.fit_update(torch.zeros(1, 3, 1, 8), feats, labels)
    m.fit_end()
    q = torch.tensor([[0.0, 2.0], [10.0, 0.0], [5.0, 0.0]]).T.reshape(1, 2, 1, 3)
    s = m.score(torch.zeros(1, 3, 1, 3), q)[0, 0]
    torch.testing.assert_close(s, torch.tensor([math.sqrt(8), 0.0, math.sqrt(50)]))
    assert m.class_valid is not None and m.class_valid.tolist() == [True, True, False]
    # shrinkage towards the scaled identity: diag(0.5) stays diag(0.5)
    m2 = Mahalanobis(shrinkage=0.5)
    m2.fit_begin()
    m2.fit_update(torch.zeros(1, 3, 1, 8), feats, labels)
    m2.fit_end()
    torch.testing.assert_close(
        m2.score(torch.zeros(1, 3, 1, 3), q), m.score(torch.zeros(1, 3, 1, 3), q)
    )


def test_mahalanobis_order_independent_and_errors() -> None:
    model = TinyNet()
    images, masks = _data(6)
    logits, feats = _outputs(model, images)

    def fit(order: list[int], bs: int) -> Mahalanobis:
        m = Mahalanobis()
        m.fit_begin()
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            m.fit_update(logits[idx], feats[idx], masks[idx])
        m.fit_end()
        return m

    a, b = fit([0, 1, 2, 3, 4, 5], 2), fit([4, 2, 0, 5, 3, 1], 3)
    assert torch.equal(a.class_valid, b.class_valid)
    # the whitening is defined up to eigenvector signs: compare what it measures
    torch.testing.assert_close(a.score(logits, feats), b.score(logits, feats), rtol=1e-4, atol=1e-4)
    s = a.score(logits, feats)
    assert s.shape == (6, 20, 24) and torch.isfinite(s).all() and (s >= 0).all()
    with pytest.raises(HazardsegError, match="mahalanobis need labels"):
        Mahalanobis().fit(model, [{"image": images}])
    with pytest.raises(HazardsegError, match="shrinkage must be in"):
        Mahalanobis(shrinkage=2)
    with pytest.raises(HazardsegError, match="missing tensors"):
        Mahalanobis().load_state_dict({"projection": torch.eye(2)})


# ------------------------------------------------------------------ one pass, state
def test_all_fitted_methods_share_one_pass() -> None:
    model = TinyNet()
    images, masks = _data(6)
    methods = {
        "sml": SML(),
        "heat": HEAT(num_components=3),
        "knn": KNN(bank_size=50),
        "mahalanobis": Mahalanobis(),
        "msp": create_method("msp"),
    }
    n = fit_methods(methods, model, _loader(images, masks, 2), max_images=5)
    assert n == 5 and model.calls == 3  # 3 batches, one forward each, for all four methods
    assert all(m.fitted for m in methods.values())
    # the convenience wrapper fits the same state as the shared pass
    for name in ("sml", "knn", "mahalanobis", "heat"):
        alone = create_method(name, **methods[name].options)
        alone.fit(model, _loader(images, masks, 2), max_images=5)
        for key, value in methods[name].state_dict().items():
            torch.testing.assert_close(alone.state_dict()[key], value)


def test_heat_one_pass_matches_two_pass_definition() -> None:
    """HEAT's normalisation from its image sample equals the exact two-pass statistics when
    the sample holds every fitting image."""
    model = TinyNet()
    images, masks = _data(5)
    h = HEAT(num_components=4)
    h.fit(model, _loader(images, masks, 2))
    logits, feats = _outputs(model, images)
    e, m, k, _ = h.components(logits, feats)
    expect = [(float(v.double().mean()), float(v.double().std(unbiased=False))) for v in (e, m, k)]
    assert h.norm is not None
    torch.testing.assert_close(
        h.norm, torch.tensor(expect, dtype=torch.float32), rtol=1e-4, atol=1e-5
    )


def test_state_round_trip(tmp_path: Path) -> None:
    model = TinyNet()
    images, masks = _data(4)
    methods = {"knn": KNN(k=2, bank_size=30), "mahalanobis": Mahalanobis(shrinkage=0.1)}
    fit_methods(methods, model, _loader(images, masks, 2))
    fit = {"split": "train", "max_images": 4, "resize": "native", "tta": "none"}
    path = tmp_path / "anomaly_state.pt"
    state = AnomalyState.open(path, "abc")
    for m in methods.values():
        state.record_fit(m, fit)
    state.save()
    fresh = {"knn": KNN(k=2, bank_size=30), "mahalanobis": Mahalanobis(shrinkage=0.1)}
    assert AnomalyState.read(path).restore(fresh, fit).restored == ["knn", "mahalanobis"]
    other = {"knn": KNN(k=3, bank_size=30)}
    assert AnomalyState.read(path).restore(other, fit).restored == []
    logits, feats = _outputs(model, images)
    for name in methods:
        assert torch.equal(fresh[name].score(logits, feats), methods[name].score(logits, feats))


# ------------------------------------------------------------------ commands
@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("featmethods")
    root = make_tiny_tree(
        base / "sh", counts={"train": 3, "validation": 2, "test": 3}, size=(72, 40)
    )
    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3").eval()
    ckpt = save_checkpoint(
        base / "run" / "best.pt",
        model,
        model_name="lraspp_mobilenet_v3",
        class_names=list(KNOWN_CLASS_NAMES),
        config={"eval": {"resize": "native", "batch_size": 2}},
        epoch=0,
        best_metric=None,
    )
    return {"root": root, "ckpt": ckpt}


def test_cli_evaluate_calibrate_predict_visualize(tree, tmp_path, monkeypatch, one_torch_thread):
    import hazardseg.evaluation.methods as em

    calls = []
    real = em.fit_methods

    def counting(methods, *args, **kwargs):
        calls.append(sorted(methods))
        return real(methods, *args, **kwargs)

    monkeypatch.setattr(em, "fit_methods", counting)
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(tree["ckpt"]), "--data", str(tree["root"])]
    args += ["--methods", "knn,mahalanobis,sml", "--out", str(out), "--quiet"]
    args += ["--option", "knn.bank_size=500", "--option", "knn.k=2", "--save-maps"]
    assert main(args) == 0
    assert calls == [["knn", "mahalanobis", "sml"]]  # one fitting pass for all three
    import json

    res = json.loads((out / "results.json").read_text())
    assert res["evaluation"]["state_fitted"] == ["knn", "mahalanobis", "sml"]
    for name in ("knn", "mahalanobis"):
        assert 0.0 <= res["methods"][name]["pooled"]["auroc"] <= 1.0
    state = AnomalyState.read(tree["ckpt"].parent / "anomaly_state.pt")
    (knn,) = [e for e in state.fits if e["method"] == "knn"]
    assert knn["state"]["bank"].shape[1] == 40 + 128
    assert knn["options"]["bank_size"] == 500
    # a second evaluate restores, no fitting pass
    spec = spec_for(tree["ckpt"], methods="knn,mahalanobis", components="none")
    run = RunOptions(method_options={"knn": {"bank_size": 500, "k": 2}})
    evaluate(tree["ckpt"], tree["root"], "test", spec, run, out_dir=tmp_path / "e2")
    assert len(calls) == 1
    cal = ["calibrate", "--checkpoint", str(tree["ckpt"]), "--data", str(tree["root"])]
    assert main([*cal, "--methods", "mahalanobis", "--quiet"]) == 0
    thresholds = AnomalyState.read(tree["ckpt"].parent / "anomaly_state.pt").thresholds
    assert "mahalanobis" in [t["method"] for t in thresholds]
    images = sorted((tree["root"] / "test" / "images" / "test").rglob("*.png"))
    from hazardseg.inference.predict import predict

    summary = predict(
        torch_predictor(tree["ckpt"], "mahalanobis", batch_size=1),
        [str(p) for p in images], tmp_path / "pred",
    )  # fmt: skip
    assert summary["threshold_source"].startswith("calibrated")
    from hazardseg.data.transforms import load_image

    pred = torch_predictor(tree["ckpt"], "mahalanobis")
    for img in images:
        rel = img.relative_to(tree["root"] / "test" / "images" / "test")
        saved = np.load(out / "maps" / "mahalanobis" / rel.with_suffix(".npy"))
        np.testing.assert_allclose(pred(load_image(img)).score, saved, rtol=1e-5, atol=1e-5)
    from hazardseg.inference.visualize import PanelSelection, visualize

    selection = PanelSelection(samples=1, method="mahalanobis", grid=False)
    vis = visualize(tree["ckpt"], tree["root"], "test", tmp_path / "vis", selection=selection)
    assert len(vis["samples"]) == 1
