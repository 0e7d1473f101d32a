"""Anomaly scores, SML, HEAT, the method registry and the saved state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TinyNet
from hazardseg.anomaly import create_method, list_methods, parse_methods
from hazardseg.anomaly.heat import HEAT, spatial_kl
from hazardseg.anomaly.scores import energy, entropy, max_logit, msp
from hazardseg.anomaly.sml import (
    SML,
    boundary_mask,
    dilated_smoothing,
    gaussian_kernel,
    suppress_boundaries,
)
from hazardseg.anomaly.state import AnomalyState
from hazardseg.anomaly.thresholds import ThresholdSettings
from hazardseg.errors import CheckpointError, HazardsegError

torch.set_num_threads(1)


def _images(n: int = 5, size: tuple[int, int] = (20, 24), seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def _loader(images: torch.Tensor, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Batches of images with masks (two classes, for the methods that fit on labels)."""
    masks = (images[:, 0] > 0).long()
    return [
        {"image": images[i : i + batch_size], "mask": masks[i : i + batch_size]}
        for i in range(0, len(images), batch_size)
    ]


# ------------------------------------------------------------------ pure scores
def test_scores_hand_computed() -> None:
    z = torch.tensor([[1.0, 2.0, 3.0]])
    s = math.exp(1) + math.exp(2) + math.exp(3)
    p = [math.exp(v) / s for v in (1, 2, 3)]
    assert max_logit(z).item() == pytest.approx(-3.0)
    assert msp(z).item() == pytest.approx(-math.exp(3) / s, rel=1e-6)
    assert energy(z).item() == pytest.approx(-math.log(s), rel=1e-6)
    s2 = sum(math.exp(v / 2) for v in (1, 2, 3))
    assert energy(z, temperature=2.0).item() == pytest.approx(-2 * math.log(s2), rel=1e-6)
    assert entropy(z).item() == pytest.approx(-sum(q * math.log(q) for q in p), rel=1e-6)
    uniform = torch.zeros(1, 4)
    assert entropy(uniform).item() == pytest.approx(math.log(4), rel=1e-6)
    assert msp(uniform).item() == pytest.approx(-0.25)


@pytest.mark.parametrize("fn", [msp, max_logit, energy, entropy])
def test_scores_dense_equal_flat_and_float32(fn) -> None:
    z = torch.randn(2, 7, 3, 4, generator=torch.Generator().manual_seed(0)) * 3
    dense = fn(z)
    assert dense.shape == (2, 3, 4) and dense.dtype == torch.float32
    flat = fn(z.permute(0, 2, 3, 1).reshape(-1, 7)).reshape(2, 3, 4)
    torch.testing.assert_close(dense, flat)
    half = fn(z.to(torch.bfloat16))
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, fn(z.to(torch.bfloat16).float()))


def test_anomalous_logits_score_higher() -> None:
    confident = torch.tensor([[10.0, 0.0, 0.0]])
    unsure = torch.tensor([[1.0, 1.0, 1.0]])
    for fn in (msp, max_logit, energy, entropy):
        assert fn(unsure).item() > fn(confident).item()


# ------------------------------------------------------------------ registry
def test_registry_errors_and_parsing() -> None:
    assert list_methods() == [
        "msp",
        "max_logit",
        "energy",
        "entropy",
        "rba",
        "sml",
        "heat",
        "knn",
        "mahalanobis",
    ]
    with pytest.raises(HazardsegError, match="unknown anomaly method 'foo'"):
        create_method("foo")
    with pytest.raises(HazardsegError, match="unknown option"):
        create_method("msp", temperature=2)
    with pytest.raises(HazardsegError, match="temperature"):
        create_method("energy", temperature=0)
    # "all" is every method that applies to the model's family (rba: mask classification only)
    assert parse_methods("all") == [m for m in list_methods() if m != "rba"]
    assert parse_methods("all", "lraspp") == parse_methods("all")
    assert parse_methods("all", "mask2former") == list_methods()
    assert parse_methods("msp, energy,msp") == ["msp", "energy"]
    with pytest.raises(HazardsegError, match="unknown anomaly method 'bogus'"):
        parse_methods("msp,bogus")
    with pytest.raises(HazardsegError, match="no anomaly methods"):
        parse_methods(" , ")


@pytest.mark.parametrize("name", list_methods())
def test_every_method_scores_shape_and_batch_independence(name: str) -> None:
    model = TinyNet()
    images = _images(4)
    method = create_method(name)
    if method.needs_fit:
        with pytest.raises(HazardsegError, match="needs fitting"):
            method.score(torch.zeros(1, 5, 4, 4), torch.zeros(1, 6, 2, 2))
        method.fit(model, _loader(images, 2), max_images=4)
    with torch.no_grad():
        out = model(images, return_features=True)
    feats = out["features"] if method.needs_features else None
    s = method.score(out["out"], feats)
    assert s.shape == (4, 20, 24) and s.dtype == torch.float32
    assert torch.isfinite(s).all()
    one = torch.cat(
        [
            method.score(out["out"][i : i + 1], None if feats is None else feats[i : i + 1])
            for i in range(4)
        ]
    )
    torch.testing.assert_close(s, one, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ SML
def test_sml_statistics_match_numpy_and_ignore_batching() -> None:
    model = TinyNet()
    images = _images(5)
    with torch.no_grad():
        logits = model(images)["out"].numpy().astype(np.float64)
    mx, pred = logits.max(axis=1).ravel(), logits.argmax(axis=1).ravel()
    a = SML()
    a.fit(model, _loader(images, 2), max_images=5)
    b = SML()
    b.fit(model, _loader(images.flip(0), 3), max_images=5)  # other order and batch size
    for c in range(5):
        vals = mx[pred == c]
        if vals.size == 0:
            continue
        assert a.mean[c].item() == pytest.approx(vals.mean(), rel=1e-5, abs=1e-5)
        assert a.std[c].item() == pytest.approx(vals.std(ddof=1), rel=1e-4, abs=1e-5)
    torch.testing.assert_close(a.mean, b.mean)
    torch.testing.assert_close(a.std, b.std)
    c = SML()
    c.fit(model, _loader(images, 2), max_images=3)  # max_images cuts a batch in two
    vals = logits[:3].max(axis=1)[logits[:3].argmax(axis=1) == 0]
    if vals.size:
        assert c.mean[0].item() == pytest.approx(vals.mean(), rel=1e-5, abs=1e-5)


def test_sml_score_is_negative_standardized_max_logit() -> None:
    m = SML(boundary_suppression=False, smoothing=False)
    m.load_state_dict({"mean": torch.tensor([1.0, 2.0]), "std": torch.tensor([2.0, 0.5])})
    z = torch.tensor([[[[5.0]], [[1.0]]], [[[0.0]], [[3.0]]]])  # (2, 2, 1, 1)
    torch.testing.assert_close(m.score(z)[:, 0, 0], torch.tensor([-2.0, -2.0]))


def test_boundary_mask_width() -> None:
    pred = torch.zeros(1, 9, 12, dtype=torch.long)
    pred[:, :, 6:] = 1
    b0 = boundary_mask(pred, 0)[0]
    assert b0[:, 5:7].all() and b0.sum() == 18
    b2 = boundary_mask(pred, 2)[0]
    assert b2[:, 3:9].all() and b2.sum() == 9 * 6
    assert not boundary_mask(torch.zeros(1, 5, 5, dtype=torch.long), 3).any()


def test_boundary_suppression_removes_boundary_spike() -> None:
    pred = torch.zeros(1, 16, 24, dtype=torch.long)
    pred[:, :, 12:] = 1
    score = torch.zeros(1, 16, 24)
    score[:, :, 12:] = 10.0
    score[:, :, 11:13] = 100.0  # spurious values along the label change
    out = suppress_boundaries(score, pred, width=4, iterations=4)
    assert out[:, :, 11:13].max() <= 10.0 + 1e-5
    # far from the boundary nothing changes
    torch.testing.assert_close(out[:, :, :7], score[:, :, :7])
    torch.testing.assert_close(out[:, :, 17:], score[:, :, 17:])
    flat = torch.zeros(1, 16, 24, dtype=torch.long)
    torch.testing.assert_close(suppress_boundaries(score, flat), score)
    with pytest.raises(HazardsegError, match="multiple"):
        suppress_boundaries(score, pred, width=4, iterations=3)


def test_dilated_smoothing_impulse_and_constant() -> None:
    k = gaussian_kernel(7, 1.0)
    ref = np.exp(-((np.arange(7) - 3.0) ** 2) / 2)
    ref = np.outer(ref, ref) / np.outer(ref, ref).sum()
    np.testing.assert_allclose(k.numpy(), ref, rtol=1e-6)
    const = torch.full((1, 10, 11), 3.5)
    torch.testing.assert_close(dilated_smoothing(const), const)  # replication padding
    imp = torch.zeros(1, 64, 64)
    imp[0, 32, 32] = 1.0
    out = dilated_smoothing(imp, 7, 1.0, 6)[0]
    assert out[32, 32].item() == pytest.approx(ref[3, 3], rel=1e-5)
    assert out[32, 38].item() == pytest.approx(ref[3, 4], rel=1e-5)
    assert out[26, 38].item() == pytest.approx(ref[2, 4], rel=1e-5)
    assert out[32, 33].item() == 0.0  # dilation skips the direct neighbours
    assert out.sum().item() == pytest.approx(1.0, rel=1e-5)


def test_sml_option_validation() -> None:
    with pytest.raises(HazardsegError, match="kernel_size"):
        SML(kernel_size=4)
    with pytest.raises(HazardsegError, match="multiple"):
        SML(boundary_width=5, boundary_iterations=4)


# ------------------------------------------------------------------ HEAT
def test_heat_gaussian_matches_numpy_mahalanobis() -> None:
    model = TinyNet(dim=4)
    images = _images(4)
    m = HEAT(num_components=4, shrinkage=1e-9)
    m.fit(model, _loader(images, 3))
    with torch.no_grad():
        out = model(images, return_features=True)
    feats = out["features"].double()
    from hazardseg.anomaly.heat import predicted_at

    pred = predicted_at(out["out"], feats.shape[-2:]).reshape(-1).numpy()
    x = feats.permute(0, 2, 3, 1).reshape(-1, 4).numpy()
    classes = [c for c in range(5) if (pred == c).any()]
    means = {c: x[pred == c].mean(0) for c in classes}
    centred = np.concatenate([x[pred == c] - means[c] for c in classes])
    prec = np.linalg.inv(centred.T @ centred / len(x))
    d = np.stack([np.einsum("nd,de,ne->n", x - means[c], prec, x - means[c]) for c in classes])
    ref = np.sqrt(d.min(0)).reshape(feats.shape[0], *feats.shape[-2:])
    np.testing.assert_allclose(m.mahalanobis(out["features"]).numpy(), ref, rtol=1e-3, atol=1e-3)


def test_heat_fit_is_deterministic_and_normalised_on_fit_data() -> None:
    model = TinyNet()
    images = _images(6)
    a, b = HEAT(num_components=3), HEAT(num_components=3)
    a.fit(model, _loader(images, 2))
    b.fit(model, _loader(images, 3))
    for key, va in a.state_dict().items():
        torch.testing.assert_close(va, b.state_dict()[key], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        out = model(images, return_features=True)
    e, mh, k, _ = a.components(out["out"], out["features"])
    for i, comp in enumerate((e, mh, k)):
        mu, sd = a.norm[i].tolist()
        assert comp.double().mean().item() == pytest.approx(mu, rel=1e-4, abs=1e-5)
        assert comp.double().std(unbiased=False).item() == pytest.approx(sd, rel=1e-3, abs=1e-5)
    with pytest.raises(HazardsegError, match="features"):
        a.score(out["out"], None)


def test_spatial_kl_zero_for_uniform_neighbourhood() -> None:
    z = torch.randn(1, 4, 1, 1).expand(1, 4, 6, 7).contiguous()
    assert spatial_kl(z).abs().max().item() < 1e-6
    z2 = z.clone()
    z2[0, :, 3, 3] = torch.tensor([9.0, -9.0, 0.0, 0.0])
    kl = spatial_kl(z2)
    assert kl[0, 3, 3] > 0.1 and kl[0, 0, 0] < 1e-6


def test_heat_options_validation() -> None:
    with pytest.raises(HazardsegError, match="reliability"):
        HEAT(reliability="softmax")
    with pytest.raises(HazardsegError, match="kl_kernel"):
        HEAT(kl_kernel=4)


# ------------------------------------------------------------------ state
SETTINGS = ThresholdSettings(
    resize="native", at_label_resolution=True, precision="fp32", tta="none"
)


def test_state_round_trip_and_matching(tmp_path) -> None:
    model = TinyNet()
    images = _images(3)
    methods = {"msp": create_method("msp"), "sml": SML(), "heat": HEAT(num_components=3)}
    for m in methods.values():
        if m.needs_fit:
            m.fit(model, _loader(images, 2))
    fit = {"split": "train", "max_images": 3, "resize": "native", "tta": "none"}
    path = tmp_path / "anomaly_state.pt"
    state = AnomalyState.open(path, "abc")
    for m in methods.values():
        if m.needs_fit:
            state.record_fit(m, fit)
    state.set_threshold(methods["sml"], fit, SETTINGS, {"threshold": 1.5, "target": 0.05})
    state.save()
    state = AnomalyState.read(path)
    assert {e["method"] for e in state.fits} == {"sml", "heat"}
    fresh = {"sml": SML(), "heat": HEAT(num_components=3), "msp": create_method("msp")}
    assert state.restore(fresh, fit).restored == ["sml", "heat"]
    with torch.no_grad():
        out = model(images, return_features=True)
    for name in ("sml", "heat"):
        torch.testing.assert_close(
            fresh[name].score(out["out"], out["features"]),
            methods[name].score(out["out"], out["features"]),
        )
    assert AnomalyState.open(path, "other-sha").restore({"sml": SML()}, fit).restored == []
    assert state.restore({"sml": SML(smoothing=False)}, fit).restored == []
    other_fit = {**fit, "split": "validation"}
    # another fitting split is used (and said) unless the user set it
    used = state.restore({"sml": SML()}, other_fit)
    assert used.restored == ["sml"] and "the spec asks for" in used.notes[0]
    assert state.restore({"sml": SML()}, other_fit, explicit={"fit_split"}).restored == []
    # another resize or TTA is never reused
    assert state.restore({"sml": SML()}, {**fit, "resize": "64x48"}).restored == []
    assert state.restore({"sml": SML()}, {**fit, "tta": "flip"}).restored == []
    assert state.threshold_for(SML(), fit, SETTINGS)["threshold"] == 1.5
    assert state.threshold_for(SML(sigma=2.0), fit, SETTINGS) is None


def test_state_bad_files(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        AnomalyState.read(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="corrupt or truncated anomaly state file"):
        AnomalyState.read(junk)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": 1, "obj": HazardsegError("x")}, pickled)
    with pytest.raises(CheckpointError, match="would run code when loaded"):
        AnomalyState.read(pickled)
    wrong = tmp_path / "wrong.pt"
    torch.save({"format": 7}, wrong)
    with pytest.raises(CheckpointError, match="not an anomaly state file"):
        AnomalyState.read(wrong)
    with pytest.raises(HazardsegError, match="SML state"):
        SML().load_state_dict({"mean": torch.zeros(3)})
    with pytest.raises(HazardsegError, match="HEAT state"):
        HEAT().load_state_dict({"projection": torch.zeros(3, 2)})


# ------------------------------------------------------------------ filters
def test_filters_match_pooling_and_convolution_references() -> None:
    from hazardseg.anomaly.filters import box_mean_replicate, box_sum3, dilate3, label_boundary

    g = torch.Generator().manual_seed(3)
    pred = torch.randint(0, 3, (2, 9, 11), generator=g)
    p = F.pad(pred[:, None].float(), (1, 1, 1, 1), mode="replicate")
    ref = F.max_pool2d(p, 3, stride=1) != -F.max_pool2d(-p, 3, stride=1)
    assert torch.equal(label_boundary(pred), ref[:, 0])
    mask = torch.rand(2, 9, 11, generator=g) > 0.8
    ref = F.max_pool2d(mask[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
    assert torch.equal(dilate3(mask), ref)
    x = torch.randn(2, 9, 11, generator=g)
    ref = F.conv2d(x[:, None], torch.ones(1, 1, 3, 3), padding=1)[:, 0]
    torch.testing.assert_close(box_sum3(x), ref)
    y = torch.randn(2, 4, 9, 11, generator=g)
    for k in (3, 5):
        ref = F.avg_pool2d(F.pad(y, (k // 2,) * 4, mode="replicate"), k, stride=1)
        torch.testing.assert_close(box_mean_replicate(y, k), ref)


def test_every_method_is_described_and_heat_is_not_lafon() -> None:
    from hazardseg.anomaly.registry import DESCRIPTIONS, METHODS

    assert list(DESCRIPTIONS) == list(METHODS)
    assert "not HEAT of Lafon" in DESCRIPTIONS["heat"]
    assert "Lafon" in (HEAT.__doc__ or "") and "not" in (HEAT.__doc__ or "")
