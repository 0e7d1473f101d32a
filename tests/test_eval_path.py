"""One evaluation path: predict, evaluate and calibrate share the forward pass, the spec and
the split pass; component metrics need no score maps on disk; accumulators follow the device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import make_tiny_tree, spec_for, torch_predictor
from hazardseg.cli import main
from hazardseg.config import EvalConfig
from hazardseg.data.classes import KNOWN_CLASS_NAMES
from hazardseg.errors import HazardsegError
from hazardseg.evaluation import evaluate
from hazardseg.evaluation.calibrate import calibrate
from hazardseg.evaluation.spec import RunOptions, SpecRequest, resolve_spec
from hazardseg.inference.predict import PredictOptions, predict
from hazardseg.metrics._sparse import SparseCounts
from hazardseg.metrics.components import ComponentMetrics
from hazardseg.metrics.ood import PooledOOD
from hazardseg.metrics.ood_protocol import evaluation_masks
from hazardseg.models import create_model
from hazardseg.models.checkpoint import save_checkpoint
from hazardseg.models.forward import forward_logits

MODEL = "lraspp_mobilenet_v3"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("evalpath")
    root = make_tiny_tree(
        base / "sh", counts={"train": 2, "validation": 2, "test": 3}, size=(72, 40)
    )
    torch.manual_seed(0)
    model = create_model(MODEL).eval()
    ckpt = save_checkpoint(
        base / "run" / "best.pt",
        model,
        model_name=MODEL,
        class_names=list(KNOWN_CLASS_NAMES),
        config={"eval": {"resize": "native", "batch_size": 2}},
        epoch=0,
        best_metric=None,
    )
    return {"root": root, "ckpt": ckpt, "base": base, "model": model}


@pytest.mark.parametrize("resize", ["native", "48x32", "short:24", "100x56"])
def test_predict_maps_equal_evaluate_saved_maps(tree, tmp_path, resize, one_torch_thread):
    """predict's score map of an image is evaluate --save-maps' map, for every resize policy
    (bit for bit at one image per forward; batching changes convolutions at the ulp level)."""
    out = tmp_path / "eval"
    spec = spec_for(
        tree["ckpt"], methods="max_logit,energy", resize=resize, components="none", batch_size=1
    )
    run = RunOptions(save_maps=True, save_state=False)
    evaluate(tree["ckpt"], tree["root"], "test", spec, run, out_dir=out)
    images = sorted((tree["root"] / "test" / "images" / "test").rglob("*.png"))
    for method in ("max_logit", "energy"):
        summary = predict(
            torch_predictor(tree["ckpt"], method, resize=resize, batch_size=2),
            [str(p) for p in images], tmp_path / f"pred_{method}", PredictOptions(threshold=0.0),
        )  # fmt: skip
        assert summary["resize"] == resize and len(summary["images"]) == len(images)
        from hazardseg.data.transforms import load_image

        pred = torch_predictor(tree["ckpt"], method, resize=resize)
        for img in images:
            rel = img.relative_to(tree["root"] / "test" / "images" / "test")
            saved = np.load(out / "maps" / method / rel.with_suffix(".npy"))
            got = pred(load_image(img)).score
            assert got.shape == saved.shape
            np.testing.assert_array_equal(got, saved)


def test_predict_batches_equal_single_images(tree, tmp_path, one_torch_thread):
    images = [str(p) for p in sorted((tree["root"] / "test").rglob("images/**/*.png"))]
    zero = PredictOptions(threshold=0.0)
    one = predict(torch_predictor(tree["ckpt"], batch_size=1), images, tmp_path / "b1", zero)
    two = predict(torch_predictor(tree["ckpt"], batch_size=3), images, tmp_path / "b3", zero)
    assert two["batch_size"] == 3 and one["device"] == "cpu"
    for a, b in zip(one["images"], two["images"], strict=True):
        assert a["anomaly_fraction"] == b["anomaly_fraction"]
        assert a["heat_range"] == pytest.approx(b["heat_range"], rel=1e-6)


def test_components_in_single_pass_at_calibrated_threshold(tree, tmp_path, one_torch_thread):
    state = tmp_path / "state.pt"
    spec = spec_for(tree["ckpt"], methods="max_logit,msp")
    entries = calibrate(
        tree["ckpt"], tree["root"], "validation", spec, RunOptions(state_path=state)
    )
    out = tmp_path / "eval"
    run = RunOptions(state_path=state, save_maps=True)
    res = evaluate(tree["ckpt"], tree["root"], "test", spec, run, out_dir=out)
    assert res["evaluation"]["components"] == "calibrated"
    assert res["timing"]["second_pass_s"] == 0.0
    from hazardseg.data.streethazards import StreetHazards

    ds = StreetHazards(tree["root"], "test")
    for name in ("max_logit", "msp"):
        comp = res["methods"][name]["components"]
        assert comp["threshold_source"] == "calibrated"
        assert comp["threshold"] == pytest.approx(entries[name]["threshold"])
        ref = ComponentMetrics(entries[name]["threshold"])
        for i, sample in enumerate(ds.samples):
            scores = torch.from_numpy(
                np.load(out / "maps" / name / Path(sample.rel).with_suffix(".npy"))
            )
            is_anom, valid = evaluation_masks(ds[i]["mask"])
            ref.update(scores, is_anom, valid)
        want = ref.compute()
        assert comp["num_gt_components"] == want["num_gt_components"]
        assert comp["num_pred_components"] == want["num_pred_components"]
        assert comp["f1_per_tau"] == {str(t): float(v) for t, v in dict(want["f1_per_tau"]).items()}


def test_no_calibration_skips_components_with_a_note(tree, tmp_path, one_torch_thread):
    spec = spec_for(tree["ckpt"], methods="max_logit")
    res = evaluate(
        tree["ckpt"], tree["root"], "test", spec, RunOptions(state_path=tmp_path / "n.pt")
    )
    assert res["methods"]["max_logit"]["components"] is None
    assert any("no calibrated threshold" in n for n in res["notes"])


def test_evaluate_writes_no_score_maps_or_scratch(tree, tmp_path, one_torch_thread):
    out = tmp_path / "eval"
    for mode in ("calibrated", "oracle"):
        spec = spec_for(tree["ckpt"], methods="max_logit,entropy", components=mode)
        run = RunOptions(save_state=False, state_path=tmp_path / "s.pt")
        evaluate(tree["ckpt"], tree["root"], "test", spec, run, out_dir=out)
        assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_oracle_components_use_pooled_best_f1(tree, tmp_path, one_torch_thread):
    spec = spec_for(tree["ckpt"], methods="max_logit", components="oracle")
    res = evaluate(
        tree["ckpt"], tree["root"], "test", spec, RunOptions(state_path=tmp_path / "s.pt")
    )
    m = res["methods"]["max_logit"]
    assert m["components"]["threshold_source"] == "oracle"
    assert m["components"]["threshold"] == pytest.approx(m["pooled"]["best_f1_threshold"])
    assert res["timing"]["second_pass_s"] > 0


def test_spec_precedence(tmp_path):
    """defaults < checkpoint eval section < --config eval section < flags."""
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"eval": {"resize": "64x32", "batch_size": 4}}))
    ckpt_cfg = {"eval": {"resize": "short:20", "batch_size": 2, "workers": 1}}
    assert resolve_spec().resize == "native"
    s = resolve_spec(ckpt_cfg)
    assert (s.resize, s.batch_size, s.workers) == ("short:20", 2, 1)
    s = resolve_spec(ckpt_cfg, None, cfg_file)
    assert (s.resize, s.batch_size, s.workers) == ("64x32", 4, 1)
    s = resolve_spec(ckpt_cfg, {"batch_size": 3, "resize": None}, cfg_file)
    assert (s.resize, s.batch_size) == ("64x32", 3)
    request = SpecRequest({"components": "none", "resize": None}, cfg_file)
    spec = request.resolve(ckpt_cfg)
    assert spec.components == "none" and spec.resize == "64x32" and spec.workers == 1
    assert request.explicit == {"components", "resize", "batch_size"}  # flags and the file
    spec = resolve_spec(None, {"batch_size": 5}, base=EvalConfig(resize="8x8"))
    assert (spec.resize, spec.batch_size) == ("8x8", 5)  # a given spec is the base
    spec = resolve_spec(ckpt_cfg, {"batch_size": 5}, base=EvalConfig(resize="8x8"))
    assert (spec.resize, spec.batch_size) == ("short:20", 5)  # the checkpoint's over the base


@pytest.mark.parametrize(
    "flags, text",
    [
        ({"components": "sometimes"}, "--components 'sometimes'"),
        ({"precision": "fp8"}, "--precision 'fp8'"),
        ({"batch_size": 0}, "batch size must be >= 1"),
        ({"nonfinite": "ignore"}, "--nonfinite 'ignore'"),
        ({"bogus": 1}, "unknown evaluation setting(s): bogus"),
    ],
)
def test_spec_errors(flags, text):
    with pytest.raises(HazardsegError, match=None) as exc:
        resolve_spec(None, flags)
    assert text in str(exc.value)


def test_config_file_with_unknown_eval_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("eval:\n  resise: native\n")
    with pytest.raises(HazardsegError, match="unknown eval setting"):
        resolve_spec(None, None, f)


def test_cli_config_file_and_predict_device(tree, tmp_path, capsys, one_torch_thread):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("eval:\n  resize: 48x32\n  components: none\n")
    out = tmp_path / "cli"
    code = main([
        "evaluate", "--checkpoint", str(tree["ckpt"]), "--data", str(tree["root"]),
        "--methods", "msp", "--out", str(out), "--config", str(cfg), "--quiet",
        "--state", str(tmp_path / "s.pt"),
    ])  # fmt: skip
    assert code == 0
    res = yaml.safe_load((out / "results.json").read_text())
    assert res["data"]["resize"] == "48x32" and res["evaluation"]["components"] == "none"
    assert res["evaluation"]["spec"]["batch_size"] == 2  # from the checkpoint's eval section
    img = next((tree["root"] / "test").rglob("images/**/*.png"))
    code = main([
        "predict", str(img), "--checkpoint", str(tree["ckpt"]), "--out", str(tmp_path / "p"),
        "--threshold", "0", "--device", "cpu", "--batch-size", "2", "--precision", "fp32",
    ])  # fmt: skip
    assert code == 0
    code = main([
        "predict", str(img), "--checkpoint", str(tree["ckpt"]), "--out", str(tmp_path / "p"),
        "--threshold", "0", "--device", "tpu",
    ])  # fmt: skip
    assert code == 2 and "device 'tpu'" in capsys.readouterr().err


def test_forward_logits_resizes_and_matches_plain_forward(tree, one_torch_thread):
    model = tree["model"]
    x = torch.randn(2, 3, 40, 72)
    with torch.inference_mode():
        plain = model(x)["out"]
        logits, feats = forward_logits(model, x, "cpu")
        assert feats is None and torch.equal(logits, plain)
        big, _ = forward_logits(model, x, "cpu", (80, 144))
        ref = torch.nn.functional.interpolate(
            plain, size=(80, 144), mode="bilinear", align_corners=False
        )
        assert torch.equal(big, ref)


def test_sparse_counts_device_path_equals_cpu_path():
    """The accelerator path (sort + run lengths in torch) counts exactly what numpy does."""
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(-50, 50, (5000,), generator=g).float() / 7
    scores[::97] = float("nan")
    pos = torch.rand(5000, generator=g) < 0.2
    valid = torch.rand(5000, generator=g) < 0.9
    a, b = SparseCounts(), SparseCounts()
    a.update(scores, pos, valid)
    b._update_on_device(scores, pos, valid)
    a.flush(), b.flush()
    assert np.array_equal(a.keys, b.keys)
    assert np.array_equal(a.neg, b.neg) and np.array_equal(a.pos, b.pos)
    # and a PooledOOD fed through either gives identical metrics
    p, q = PooledOOD(), PooledOOD()
    p.update(scores, pos, valid)
    q.sparse._update_on_device(scores, pos, valid)
    assert p.compute()["auroc"] == q.compute()["auroc"]


def test_calibrated_threshold_is_tied_to_the_spec(tree, tmp_path, one_torch_thread):
    """A threshold calibrated at one resize / TTA setting is not applied at another."""
    state = tmp_path / "state.pt"
    run = RunOptions(state_path=state)
    calibrate(
        tree["ckpt"], tree["root"], "validation", spec_for(tree["ckpt"], methods="max_logit"), run
    )
    same = evaluate(
        tree["ckpt"], tree["root"], "test", spec_for(tree["ckpt"], methods="max_logit"), run
    )
    assert same["methods"]["max_logit"]["calibrated"] is not None
    other_spec = spec_for(tree["ckpt"], methods="max_logit", resize="48x32")
    other = evaluate(tree["ckpt"], tree["root"], "test", other_spec, run)
    assert other["methods"]["max_logit"]["calibrated"] is None
    assert other["methods"]["max_logit"]["components"] is None
    assert any("resize native (not 48x32)" in n for n in other["notes"])  # names what differs
    tta_spec = spec_for(tree["ckpt"], methods="max_logit", tta="1,flip")
    tta = evaluate(tree["ckpt"], tree["root"], "test", tta_spec, run)
    assert tta["methods"]["max_logit"]["calibrated"] is None


def test_fitted_state_is_never_silently_replaced(tree, tmp_path, capsys, one_torch_thread):
    """calibrate with non-default fit settings, then a plain evaluate, then predict: the
    fit and its threshold are used (and said); an explicit other setting adds a fit beside;
    --refit replaces it and removes its thresholds, and predict then names what is missing."""
    import json

    from hazardseg.anomaly.state import AnomalyState

    state = tmp_path / "state.pt"
    base = ["--checkpoint", str(tree["ckpt"]), "--data", str(tree["root"]), "--quiet",
            "--state", str(state), "--methods", "heat"]  # fmt: skip
    assert main(["calibrate", *base, "--fit-images", "1"]) == 0
    out = tmp_path / "plain"
    assert main(["evaluate", *base, "--out", str(out), "--components", "none"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["evaluation"]["state_fitted"] == [] and res["evaluation"]["state_restored"] == [
        "heat"
    ]
    assert any("heat: using the state fitted on train, 1 images" in n for n in res["notes"])
    assert res["methods"]["heat"]["calibrated"] is not None
    img = str(next((tree["root"] / "test").rglob("images/**/*.png")))
    predict = ["predict", img, "--checkpoint", str(tree["ckpt"]), "--state", str(state),
               "--method", "heat", "--quiet"]  # fmt: skip
    assert main([*predict, "--out", str(tmp_path / "p1")]) == 0
    assert (
        "calibrated"
        in json.loads((tmp_path / "p1" / "predictions.json").read_text())["threshold_source"]
    )
    # an explicit other fitting setting fits beside, keeping the calibrated fit and threshold
    assert main(["evaluate", *base, "--out", str(out), "--fit-images", "2"]) == 0
    stored = AnomalyState.read(state)
    assert sorted(e["fit"]["max_images"] for e in stored.fits) == [1, 2]
    assert len(stored.thresholds) == 1
    assert main([*predict, "--out", str(tmp_path / "p2")]) == 0  # still the calibrated fit
    # --refit replaces the fit the spec asks for (100 images here: a new one) ...
    assert main(["calibrate", *base, "--fit-images", "1", "--refit"]) == 0
    stored = AnomalyState.read(state)
    assert sorted(e["fit"]["max_images"] for e in stored.fits) == [1, 2]
    assert len(stored.thresholds) == 1  # recalibrated: the new fit's threshold
    capsys.readouterr()
    # ... and a threshold of other settings is refused by name
    assert main([*predict, "--resize", "48x32", "--out", str(tmp_path / "p3")]) == 2
    err = capsys.readouterr().err
    assert "needs fitted state under resize 48x32" in err and len(err.strip().splitlines()) == 1


def test_predict_save_scores_in_the_layout_eval_maps_reads(tree, tmp_path, one_torch_thread):
    """predict --save-scores writes each image's score map where eval-maps finds it; the
    metrics equal evaluate's for the same maps (float32), and float16 halves the files."""
    import json

    images = str(tree["root"] / "test" / "images" / "test")
    out = tmp_path / "pred"
    args = ["predict", images, "--checkpoint", str(tree["ckpt"]), "--method", "max_logit",
            "--threshold", "0", "--quiet", "--out"]  # fmt: skip
    assert main([*args, str(out), "--save-scores", "float32"]) == 0
    saved = sorted((out / "scores" / "max_logit").rglob("*.npy"))
    assert [p.relative_to(out / "scores" / "max_logit").as_posix() for p in saved] == [
        "t5/1.npy",
        "t5/3.npy",
        "t6/2.npy",
    ]
    assert np.load(saved[0]).dtype == np.float32
    row = json.loads((out / "predictions.json").read_text())["images"][0]
    assert Path(row["files"]["scores"]).is_file()
    maps_out = tmp_path / "maps_eval"
    assert main(["eval-maps", "--maps", str(out / "scores" / "max_logit"), "--data",
                 str(tree["root"]), "--out", str(maps_out), "--quiet"]) == 0  # fmt: skip
    from_maps = json.loads((maps_out / "results.json").read_text())["methods"]["external"]
    spec = spec_for(tree["ckpt"], methods="max_logit", components="none")
    direct = evaluate(tree["ckpt"], tree["root"], "test", spec, RunOptions(save_state=False))
    for key in ("auroc", "aupr", "fpr95"):
        assert from_maps["pooled"][key] == direct["methods"]["max_logit"]["pooled"][key]
        assert from_maps["per_image"][key] == direct["methods"]["max_logit"]["per_image"][key]
    half = tmp_path / "half"
    assert main([*args, str(half), "--save-scores", "float16"]) == 0
    small = np.load(half / "scores" / "max_logit" / "t5" / "1.npy")
    assert small.dtype == np.float16 and small.nbytes * 2 == np.load(saved[0]).nbytes
    assert main([*args, str(tmp_path / "x"), "--save-scores", "int8"]) == 2


def test_help_has_no_type_placeholders_or_cut_sentences(capsys):
    """Every command's --help shows metavars, not <bool>/<int>/<list[Path]>, and every
    option's help text appears whole."""
    import re

    from hazardseg.cli import cli_command

    root = cli_command()
    commands = []
    for name, cmd in root.commands.items():
        subs = getattr(cmd, "commands", None)
        commands += [([name, s], c) for s, c in subs.items()] if subs else [([name], cmd)]
    assert len(commands) >= 15
    for path, cmd in commands:
        assert main([*path, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        text = re.sub(r"[│╭╮╰╯─]", " ", text)
        text = " ".join(text.split())
        placeholder = re.search(r"<(bool|int|str|path|float|list\[\w+\])>", text)
        assert placeholder is None, (path, placeholder.group(0))
        for param in cmd.params:
            words = (param.help or "").split()
            if words:
                assert words[-1] in text, (path, param.name, words[-1])
