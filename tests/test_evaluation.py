"""evaluate, calibrate and the CLI on a tiny tree, checked against direct computations."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score, roc_curve

from conftest import make_tiny_tree, spec_for
from hazardseg.anomaly import create_method
from hazardseg.cli import main
from hazardseg.data.classes import KNOWN_CLASS_NAMES, ids_to_png
from hazardseg.data.streethazards import StreetHazards
from hazardseg.data.transforms import build_eval_transform
from hazardseg.errors import HazardsegError
from hazardseg.evaluation import evaluate
from hazardseg.evaluation.calibrate import calibrate
from hazardseg.evaluation.results import load_results
from hazardseg.evaluation.spec import RunOptions
from hazardseg.models import create_model
from hazardseg.models.checkpoint import save_checkpoint
from test_perimage_official import official_image

torch.set_num_threads(1)

MODEL = "lraspp_mobilenet_v3"


def sk_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUROC, AP and FPR at 95% TPR with scikit-learn."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return {
        "auroc": roc_auc_score(labels, scores),
        "aupr": average_precision_score(labels, scores),
        "fpr95": float(fpr[np.searchsorted(tpr, 0.95, side="left")]),
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("evaluation")
    root = make_tiny_tree(base / "sh", counts={"train": 3, "validation": 2, "test": 4})
    torch.manual_seed(0)
    model = create_model(MODEL).eval()
    ckpt = save_checkpoint(
        base / "run" / "best.pt",
        model,
        model_name=MODEL,
        class_names=list(KNOWN_CLASS_NAMES),
        config={},
        epoch=0,
        best_metric=None,
    )
    return {"root": root, "ckpt": ckpt, "model": model, "base": base}


def direct_outputs(model: torch.nn.Module, root: Path, split: str, **tf) -> list[dict]:
    ds = StreetHazards(root, split, build_eval_transform(**tf))
    out = []
    with torch.no_grad():
        for i in range(len(ds)):
            item = ds[i]
            o = model(item["image"][None], return_features=True)
            logits = o["out"]
            if logits.shape[-2:] != item["mask"].shape:
                logits = F.interpolate(
                    logits, size=item["mask"].shape, mode="bilinear", align_corners=False
                )
            out.append(
                {
                    "logits": logits,
                    "features": o["features"],
                    "mask": item["mask"],
                    "path": item["path"],
                }
            )
    return out


def test_evaluate_matches_direct_computation(setup) -> None:
    out_dir = setup["base"] / "eval1"
    spec = spec_for(setup["ckpt"], methods="all", fit_images=3, components="oracle")
    res = evaluate(setup["ckpt"], setup["root"], "test", spec, out_dir=out_dir)
    assert load_results(out_dir / "results.json") == res
    fitted = ["sml", "heat", "knn", "mahalanobis"]
    assert res["data"]["num_images"] == 4 and res["evaluation"]["state_fitted"] == fitted
    assert (setup["ckpt"].parent / "anomaly_state.pt").is_file()
    items = direct_outputs(setup["model"], setup["root"], "test")
    # segmentation: confusion matrix over the split (sklearn)
    total = np.zeros((13, 13), np.int64)
    for it in items:
        gt = it["mask"].numpy().ravel()
        pred = it["logits"].argmax(1)[0].numpy().ravel()
        total += confusion_matrix(gt[gt < 13], pred[gt < 13], labels=list(range(13)))
    tp = np.diag(total)
    union = total.sum(0) + total.sum(1) - tp
    ref_iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    assert res["segmentation"]["miou"] == pytest.approx(np.nanmean(ref_iou))
    # pooled and per-image metrics of two pure methods (sklearn)
    for name in ("max_logit", "entropy"):
        method = create_method(name)
        s = [method.score(it["logits"])[0].numpy().ravel() for it in items]
        y = [(it["mask"].numpy().ravel() == 13) for it in items]
        v = [(it["mask"].numpy().ravel() <= 13) for it in items]
        ref = sk_metrics(
            np.concatenate([a[k] for a, k in zip(s, v, strict=True)]),
            np.concatenate([a[k] for a, k in zip(y, v, strict=True)]),
        )
        got = res["methods"][name]
        for key in ("auroc", "aupr", "fpr95"):
            assert got["pooled"][key] == pytest.approx(ref[key], abs=1e-6), (name, key)
        # official per-image protocol: every pixel counts, PNG 0 as normal (independent
        # implementation of the official code in test_perimage_official)
        offi = [
            official_image(a, ids_to_png(it["mask"].numpy().ravel()))
            for a, it in zip(s, items, strict=True)
        ]
        per = [dict(zip(("auroc", "aupr", "fpr95"), r, strict=True)) for r in offi if r]
        assert got["per_image"]["num_images"] == len(per) == 3
        assert got["per_image"]["num_skipped"] == 1
        for key in ("auroc", "aupr", "fpr95"):
            assert got["per_image"][key] == pytest.approx(np.mean([p[key] for p in per]))
        assert got["oracle"]["f1"] == got["pooled"]["best_f1"]
        assert got["calibrated"] is None
        comp = got["components"]
        assert comp is not None and 0.0 <= comp["mean_f1"] <= 1.0
        assert comp["num_gt_components"] >= 3
    # second run: fitted state is reused and gives the same numbers
    spec2 = spec_for(setup["ckpt"], methods="sml,heat", fit_images=3, batch_size=3)
    res2 = evaluate(setup["ckpt"], setup["root"], "test", spec2)
    assert res2["evaluation"]["state_restored"] == ["sml", "heat"]
    for name in ("sml", "heat"):
        for key in ("auroc", "aupr", "fpr95"):
            assert res2["methods"][name]["pooled"][key] == pytest.approx(
                res["methods"][name]["pooled"][key],
                abs=1e-4,  # model output ulps differ
            )


def test_save_maps_and_input_resolution(setup) -> None:
    out_dir = setup["base"] / "eval_maps"
    spec = spec_for(
        setup["ckpt"], methods="msp,sml", fit_images=3, resize="32x24", at_label_resolution=False
    )
    res = evaluate(
        setup["ckpt"], setup["root"], "test", spec, RunOptions(save_maps=True), out_dir=out_dir
    )
    assert res["data"]["at_label_resolution"] is False
    items = direct_outputs(
        setup["model"], setup["root"], "test", resize="32x24", at_label_resolution=False
    )
    saved = np.load(out_dir / "maps" / "msp" / "t5" / "1.npy")
    assert saved.dtype == np.float32 and saved.shape == (24, 32)
    ref = create_method("msp").score(items[0]["logits"])[0].numpy()
    np.testing.assert_allclose(saved, ref, atol=1e-6)
    assert sorted(p.name for p in (out_dir / "maps" / "sml" / "t6").iterdir()) == ["2.npy", "4.npy"]


def test_calibrate_then_evaluate_reports_calibrated(setup) -> None:
    state = setup["base"] / "calib" / "anomaly_state.pt"
    entries = calibrate(
        setup["ckpt"],
        setup["root"],
        "validation",
        spec_for(setup["ckpt"], methods="max_logit,sml", fit_images=3),
        RunOptions(state_path=state),
        target_fpr=0.1,
    )
    items = direct_outputs(setup["model"], setup["root"], "validation")
    known = np.concatenate([it["mask"].numpy().ravel() < 13 for it in items])
    s = np.concatenate(
        [create_method("max_logit").score(it["logits"])[0].numpy().ravel() for it in items]
    )[known]
    t = entries["max_logit"]["threshold"]
    flagged = float((s >= t).mean())
    assert flagged == pytest.approx(entries["max_logit"]["fpr"])
    assert flagged <= 0.1
    below = s[s < t].max()  # the next lower score would flag too many: t is the lowest
    assert float((s >= below).mean()) > 0.1
    assert entries["max_logit"]["num_pixels"] == known.sum()
    res = evaluate(
        setup["ckpt"],
        setup["root"],
        "test",
        spec_for(setup["ckpt"], methods="max_logit,sml,msp", fit_images=3),
        RunOptions(state_path=state),
    )
    assert res["evaluation"]["state_restored"] == ["sml"]
    cal = res["methods"]["max_logit"]["calibrated"]
    assert cal["threshold"] == t and cal["split"] == "validation" and cal["target"] == 0.1
    test_items = direct_outputs(setup["model"], setup["root"], "test")
    st = np.concatenate(
        [create_method("max_logit").score(it["logits"])[0].numpy().ravel() for it in test_items]
    )
    y = np.concatenate([it["mask"].numpy().ravel() == 13 for it in test_items])
    tp = int(((st >= t) & y).sum())
    assert cal["recall"] == pytest.approx(tp / y.sum())
    assert res["methods"]["msp"]["calibrated"] is None
    assert res["methods"]["sml"]["calibrated"] is not None
    # refitting SML on other data changes its score scale: its old threshold must not be used
    spec3 = spec_for(setup["ckpt"], methods="sml", fit_images=2)
    res3 = evaluate(
        setup["ckpt"],
        setup["root"],
        "test",
        spec3,
        RunOptions(state_path=state, explicit=frozenset({"fit_images"})),
    )
    assert res3["evaluation"]["state_restored"] == []
    assert res3["methods"]["sml"]["calibrated"] is None


def test_cli_evaluate_and_errors(setup, capsys) -> None:
    out_dir = setup["base"] / "cli"
    args = [
        "evaluate",
        "--checkpoint",
        str(setup["ckpt"]),
        "--data",
        str(setup["root"]),
        "--methods",
        "msp,energy",
        "--out",
        str(out_dir),
        "--quiet",
        "--option",
        "energy.temperature=2",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "msp" in text and "energy" in text and "results.json" in text
    res = json.loads((out_dir / "results.json").read_text())
    assert res["methods"]["energy"]["options"] == {"temperature": 2.0}
    bad = setup["base"] / "cli_bad"
    for extra, msg in (
        (["--methods", "msp,bogus"], "unknown anomaly method 'bogus'"),
        (["--option", "msp.temperature=2"], "unknown option"),
        (["--option", "nodot=2"], "METHOD.KEY=VALUE"),
        (["--nonfinite", "drop"], "nonfinite"),
        (["--batch-size", "0"], "batch size"),
    ):
        code = main(
            [
                "evaluate",
                "--checkpoint",
                str(setup["ckpt"]),
                "--data",
                str(setup["root"]),
                "--out",
                str(bad),
                "--quiet",
                *extra,
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert not (bad / "results.json").exists()
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(setup["base"] / "missing.pt"),
            "--data",
            str(setup["root"]),
            "--out",
            str(bad),
            "--quiet",
            "--methods",
            "msp",
        ]
    )
    assert code == 2 and "missing.pt" in capsys.readouterr().err


def test_nonfinite_scores_from_a_method(setup, monkeypatch) -> None:
    from hazardseg.anomaly import registry, scores
    from hazardseg.anomaly.logit import LogitScore

    def nan_msp(logits: torch.Tensor) -> torch.Tensor:
        s = scores.msp(logits)
        s[:, 0, :5] = float("nan")
        return s

    monkeypatch.setitem(registry.METHODS, "msp", lambda: LogitScore("msp", nan_msp))
    out_dir = setup["base"] / "nan"
    # 5 NaN per image: pixel (0, 0) is PNG 0, outside the pooled protocol but a normal pixel
    # of the official per-image protocol, so it counts
    with pytest.raises(HazardsegError, match="20 NaN/infinite scores in 4 image"):
        evaluate(setup["ckpt"], setup["root"], "test", spec_for(setup["ckpt"], methods="msp"),
                 out_dir=out_dir)  # fmt: skip
    assert not (out_dir / "results.json").exists()
    spec = spec_for(setup["ckpt"], methods="msp", nonfinite="exclude")
    res = evaluate(setup["ckpt"], setup["root"], "test", spec, out_dir=out_dir)
    assert res["methods"]["msp"]["nonfinite"] == 4 * 5
    assert (
        res["methods"]["msp"]["pooled"]["num_neg"] + res["methods"]["msp"]["pooled"]["num_pos"]
        == 4 * (64 * 48 - 1) - 16
    )


def test_split_without_anomalies_gives_undefined_pooled_metrics(setup) -> None:
    res = evaluate(
        setup["ckpt"], setup["root"], "validation", spec_for(setup["ckpt"], methods="msp")
    )
    m = res["methods"]["msp"]
    assert m["pooled"]["auroc"] is None and m["oracle"] is None and m["components"] is None
    assert any("no anomaly" in n for n in res["notes"])


def test_cli_calibrate(setup, capsys) -> None:
    state = setup["base"] / "cli_cal" / "state.pt"
    code = main(
        [
            "calibrate",
            "--checkpoint",
            str(setup["ckpt"]),
            "--data",
            str(setup["root"]),
            "--methods",
            "msp",
            "--target-fpr",
            "0.2",
            "--state",
            str(state),
            "--quiet",
        ]
    )
    assert code == 0 and "msp" in capsys.readouterr().out
    from hazardseg.anomaly.state import AnomalyState

    (entry,) = [t for t in AnomalyState.read(state).thresholds if t["method"] == "msp"]
    assert entry["target"] == 0.2 and entry["split"] == "validation" and entry["fpr"] <= 0.2
    code = main(
        [
            "calibrate",
            "--checkpoint",
            str(setup["ckpt"]),
            "--data",
            str(setup["root"]),
            "--methods",
            "msp",
            "--target-fpr",
            "1.5",
            "--state",
            str(state),
            "--quiet",
        ]
    )
    assert code == 2 and "--target-fpr" in capsys.readouterr().err


def _linear_probe(model: torch.nn.Module, root: Path) -> None:
    """Train the LR-ASPP final linear classifiers on the (frozen, random) features."""
    ds = StreetHazards(root, "train", build_eval_transform())
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    y = torch.stack([ds[i]["mask"] for i in range(len(ds))]).reshape(-1)
    with torch.no_grad():
        f = model(x, return_features=True)["features"]
        f = F.interpolate(f, size=x.shape[-2:], mode="bilinear", align_corners=False)
    feat = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])[y < 13]
    y = y[y < 13]
    mu, sd = feat.mean(0), feat.std(0) + 1e-6
    lin = torch.nn.Linear(feat.shape[1], 13)
    opt = torch.optim.Adam(lin.parameters(), 0.05)
    for _ in range(150):
        loss = F.cross_entropy(lin((feat - mu) / sd), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = lin.weight.detach() / sd
    b = lin.bias.detach() - (w * mu).sum(1)
    head = model.classifier
    with torch.no_grad():
        head.low_classifier.weight.copy_(w[:, :40, None, None])
        head.low_classifier.bias.copy_(b)
        head.high_classifier.weight.copy_(w[:, 40:, None, None])
        head.high_classifier.bias.zero_()


@pytest.mark.slow
def test_trained_model_detects_anomalies_above_chance(tmp_path) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"train": 6, "validation": 1, "test": 4})
    torch.manual_seed(0)
    model = create_model(MODEL).eval()
    _linear_probe(model, root)
    ckpt = save_checkpoint(
        tmp_path / "run" / "best.pt",
        model,
        model_name=MODEL,
        class_names=list(KNOWN_CLASS_NAMES),
        config={},
        epoch=1,
        best_metric=None,
    )
    res = evaluate(
        ckpt, root, "test", spec_for(ckpt, methods="max_logit,msp,energy", components="none")
    )
    assert res["segmentation"]["pixel_accuracy"] > 0.7
    assert res["methods"]["max_logit"]["pooled"]["auroc"] > 0.6
    assert res["methods"]["max_logit"]["per_image"]["auroc"] > 0.6


def _ddp_worker(rank: int, world: int, port: int, args: dict, out: str) -> None:
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    spec = spec_for(Path(args["ckpt"]), methods="msp,sml", fit_images=3, device="cpu")
    run = RunOptions(save_state=False, state_path=args["state"])
    res = evaluate(args["ckpt"], args["root"], "test", spec, run, out_dir=out)
    if rank == 1:  # every rank holds the merged results; only rank 0 wrote them
        Path(out).with_name("rank1.json").write_text(json.dumps(res["methods"]["msp"]["pooled"]))
    oracle = dataclasses.replace(spec, components="oracle")
    # oracle components: a second (sharded) pass over the data
    evaluate(args["ckpt"], args["root"], "test", oracle, run, out_dir=out + "_oracle")


@pytest.mark.slow
def test_distributed_sharding_matches_single_process(setup, tmp_path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = {
        "ckpt": str(setup["ckpt"]),
        "root": str(setup["root"]),
        "state": str(tmp_path / "state.pt"),
    }
    # thresholds from calibrate drive the (default) single-pass component metrics
    spec = spec_for(setup["ckpt"], methods="msp,sml", fit_images=3)
    calibrate(
        setup["ckpt"],
        setup["root"],
        "validation",
        spec,
        RunOptions(state_path=tmp_path / "state.pt"),
    )
    run = RunOptions(save_state=False, state_path=tmp_path / "state.pt")
    single = evaluate(setup["ckpt"], setup["root"], "test", spec, run)
    oracle = dataclasses.replace(spec, components="oracle")
    single_oracle = evaluate(setup["ckpt"], setup["root"], "test", oracle, run)
    mp.start_processes(
        _ddp_worker,
        args=(2, port, args, str(tmp_path / "ddp")),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    multi = load_results(tmp_path / "ddp")
    multi_oracle = load_results(tmp_path / "ddp_oracle")
    assert multi["timing"]["world_size"] == 2 and multi["data"]["num_images"] == 4
    assert multi["segmentation"] == single["segmentation"]
    for one, two, source in (
        (single, multi, "calibrated"),
        (single_oracle, multi_oracle, "oracle"),
    ):
        for name in ("msp", "sml"):
            a, b = two["methods"][name], one["methods"][name]
            assert b["components"]["threshold_source"] == source
            for section in ("pooled", "per_image", "components"):
                for key, value in b[section].items():
                    if isinstance(value, float):
                        assert a[section][key] == pytest.approx(value, abs=1e-6), (name, key)
                    else:
                        assert a[section][key] == value, (name, section, key)
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank1["auroc"] == multi["methods"]["msp"]["pooled"]["auroc"]


def test_missing_fit_split_names_the_methods(tmp_path) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"test": 2})
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "run" / "m.pt",
        create_model(MODEL),
        model_name=MODEL,
        class_names=list(KNOWN_CLASS_NAMES),
        config={},
        epoch=0,
        best_metric=None,
    )
    with pytest.raises(HazardsegError, match="sml need fitting data"):
        evaluate(ckpt, root, "test", spec_for(ckpt, methods="msp,sml"))
    spec = spec_for(ckpt, methods="msp", components="none")
    res = evaluate(ckpt, root, "test", spec)  # no fitting needed
    assert res["evaluation"]["state_fitted"] == []


def test_background_worker_order_and_errors() -> None:
    from hazardseg.evaluation.accumulate import BackgroundWorker

    seen: list[int] = []
    with BackgroundWorker(max_pending=1) as w:
        for i in range(5):
            w.submit(seen.append, i)
    assert seen == [0, 1, 2, 3, 4]

    def boom(_: int) -> None:
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"), BackgroundWorker() as w:
        w.submit(boom, 1)
        w.submit(seen.append, 9)  # raises here if the failure is already known, else at exit
    assert 9 not in seen  # calls after a failure are not run
    inline: list[int] = []
    with BackgroundWorker(enabled=False) as w:
        w.submit(inline.append, 1)
        assert inline == [1]


def test_overlap_does_not_change_results(setup) -> None:
    spec = spec_for(setup["ckpt"], methods="msp,entropy")
    a = evaluate(setup["ckpt"], setup["root"], "test", spec, RunOptions(overlap=True))
    b = evaluate(setup["ckpt"], setup["root"], "test", spec, RunOptions(overlap=False))
    for name in ("msp", "entropy"):
        for section in ("pooled", "per_image", "components", "oracle"):
            assert a["methods"][name][section] == b["methods"][name][section]
