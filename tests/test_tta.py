"""Test-time augmentation inside the one forward pass (``eval.tta``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_tree, torch_predictor
from hazardseg.cli import main
from hazardseg.config import EvalConfig
from hazardseg.data.classes import KNOWN_CLASS_NAMES
from hazardseg.errors import CheckpointError, HazardsegError
from hazardseg.evaluation.spec import resolve_spec
from hazardseg.models import create_model
from hazardseg.models.checkpoint import save_checkpoint
from hazardseg.models.forward import TTA, forward_logits, forward_scores, parse_tta

MODEL = "lraspp_mobilenet_v3"


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(MODEL).eval()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, model) -> dict:
    base = tmp_path_factory.mktemp("tta")
    root = make_tiny_tree(
        base / "sh", counts={"train": 2, "validation": 2, "test": 2}, size=(72, 40)
    )
    ckpt = save_checkpoint(
        base / "run" / "best.pt",
        model,
        model_name=MODEL,
        class_names=list(KNOWN_CLASS_NAMES),
        config={"eval": {"resize": "native", "batch_size": 1}},
        epoch=0,
        best_metric=None,
    )
    return {"root": root, "ckpt": ckpt}


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("none", None),
        ("", None),
        ("1", TTA((1.0,), False)),
        ("flip", TTA((1.0,), True)),
        ("0.75, 1,1.25,flip", TTA((0.75, 1.0, 1.25), True)),
        ("1,1,flip", TTA((1.0,), True)),
    ],
)
def test_parse_tta(text, expect) -> None:
    assert parse_tta(text) == expect
    if expect is not None:
        assert parse_tta(str(expect)) == expect


@pytest.mark.parametrize("text", ["0", "-1", "big", "0.5,rotate", "9"])
def test_parse_tta_errors(text) -> None:
    with pytest.raises(HazardsegError, match="not a scale in"):
        parse_tta(text)
    with pytest.raises(HazardsegError, match="not a scale in"):
        resolve_spec(None, {"tta": text})


def test_spec_field_default_off() -> None:
    assert EvalConfig().tta == "none"
    assert resolve_spec({"eval": {"tta": "0.5,flip"}}, None).tta == "0.5,flip"


def test_identity_tta_equals_plain_forward(model, one_torch_thread) -> None:
    x = torch.randn(2, 3, 40, 72, generator=torch.Generator().manual_seed(0))
    for out_size in (None, (20, 36), (40, 72)):
        plain, pf = forward_logits(model, x, "cpu", out_size, features=True)
        same, sf = forward_logits(model, x, "cpu", out_size, features=True, tta="1")
        assert torch.equal(plain, same) and pf is not None and sf is not None
        assert torch.equal(pf, sf)


def test_flip_tta_is_flip_equivariant(model, one_torch_thread) -> None:
    x = torch.randn(1, 3, 40, 72, generator=torch.Generator().manual_seed(1))
    sym = torch.cat([x[..., :36], x[..., :36].flip(-1)], dim=-1)
    assert torch.equal(sym, sym.flip(-1))
    logits, feats = forward_logits(model, sym, "cpu", (40, 72), features=True, tta="flip")
    assert torch.equal(logits, logits.flip(-1))
    assert feats is not None and torch.equal(feats, feats.flip(-1))
    plain, _ = forward_logits(model, sym, "cpu", (40, 72))
    assert not torch.equal(plain, plain.flip(-1))  # the network itself is not symmetric
    a, _ = forward_logits(model, x, "cpu", (40, 72), tta="0.75,1,flip")
    b, _ = forward_logits(model, x.flip(-1), "cpu", (40, 72), tta="0.75,1,flip")
    torch.testing.assert_close(a, b.flip(-1), rtol=1e-4, atol=1e-4)


def test_multiscale_shapes_and_average(model, one_torch_thread) -> None:
    x = torch.randn(2, 3, 40, 72, generator=torch.Generator().manual_seed(2))
    logits, feats = forward_logits(model, x, "cpu", (30, 50), features=True, tta="0.5,1.5,flip")
    _, f15 = forward_logits(model, x, "cpu", features=True, tta="1.5")
    _, f05 = forward_logits(model, x, "cpu", features=True, tta="0.5")
    assert logits.shape == (2, 13, 30, 50) and torch.isfinite(logits).all()
    assert feats is not None and f15 is not None and f05 is not None
    # common feature grid: the scale closest to 1 (0.5 and 1.5 tie: the larger)
    assert feats.shape[-2:] == f15.shape[-2:] and f05.shape[-2:] != f15.shape[-2:]
    views = [forward_logits(model, x, "cpu", (30, 50), tta=t)[0] for t in ("0.5", "1.5")]
    flipped = [
        forward_logits(model, x.flip(-1), "cpu", (30, 50), tta=t)[0].flip(-1)
        for t in ("0.5", "1.5")
    ]
    torch.testing.assert_close(logits, sum(views + flipped) / 4, rtol=1e-5, atol=1e-5)
    scored = forward_scores(model, x, {}, "cpu", (30, 50), tta="0.5,1.5,flip")
    assert torch.equal(scored.logits, logits)


def test_predict_equals_evaluate_save_maps_with_tta(tree, tmp_path, one_torch_thread) -> None:
    out = tmp_path / "eval"
    code = main([
        "evaluate", "--checkpoint", str(tree["ckpt"]), "--data", str(tree["root"]),
        "--methods", "max_logit,mahalanobis", "--out", str(out), "--quiet", "--save-maps",
        "--tta", "0.75,1,flip", "--components", "none",
    ])  # fmt: skip
    assert code == 0
    import json

    res = json.loads((out / "results.json").read_text())
    assert res["evaluation"]["spec"]["tta"] == "0.75,1,flip"
    from hazardseg.anomaly.state import AnomalyState

    state = AnomalyState.read(tree["ckpt"].parent / "anomaly_state.pt")
    (fit,) = [e["fit"] for e in state.fits if e["method"] == "mahalanobis"]
    assert fit["tta"] == "0.75,1,flip"
    from hazardseg.data.transforms import load_image
    from hazardseg.inference.predict import PredictOptions, predict

    images = sorted((tree["root"] / "test" / "images" / "test").rglob("*.png"))
    for method in ("max_logit", "mahalanobis"):
        pred = torch_predictor(tree["ckpt"], method, tta="0.75,1,flip")
        for img in images:
            rel = img.relative_to(tree["root"] / "test" / "images" / "test")
            saved = np.load(out / "maps" / method / rel.with_suffix(".npy"))
            np.testing.assert_array_equal(pred(load_image(img)).score, saved)
    summary = predict(
        torch_predictor(tree["ckpt"], "max_logit", tta="0.75,1,flip"), [str(images[0])],
        tmp_path / "p", PredictOptions(threshold=0.0),
    )  # fmt: skip
    assert len(summary["images"]) == 1
    # a state fitted with TTA is not used without it
    with pytest.raises(CheckpointError, match=r"tta none; .* tta 0\.75,1,flip"):
        torch_predictor(tree["ckpt"], "mahalanobis")
    code = main([
        "predict", str(images[0]), "--checkpoint", str(tree["ckpt"]), "--out",
        str(tmp_path / "p2"), "--threshold", "0", "--tta", "flip",
    ])  # fmt: skip
    assert code == 0
    code = main([
        "visualize", "--checkpoint", str(tree["ckpt"]), "--data", str(tree["root"]),
        "--out", str(tmp_path / "v"), "--samples", "1", "--no-grid", "--tta", "flip",
    ])  # fmt: skip
    assert code == 0
    code = main([
        "calibrate", "--checkpoint", str(tree["ckpt"]), "--data", str(tree["root"]),
        "--methods", "max_logit", "--tta", "0.75,1,flip", "--quiet",
    ])  # fmt: skip
    assert code == 0
