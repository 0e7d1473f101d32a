"""predict / visualize on an untrained checkpoint: outputs, odd sizes, RGBA, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import spec_for, torch_predictor
from hazardseg.cli import main
from hazardseg.config import ExperimentConfig
from hazardseg.data.classes import KNOWN_CLASS_NAMES
from hazardseg.data.inputs import collect_images
from hazardseg.errors import HazardsegError
from hazardseg.inference.predict import PredictOptions, predict
from hazardseg.inference.visualize import PanelSelection, visualize
from hazardseg.models import create_model
from hazardseg.models.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    cfg = ExperimentConfig()
    cfg.eval.resize = "native"
    save_checkpoint(
        path,
        create_model("lraspp_mobilenet_v3"),
        model_name="lraspp_mobilenet_v3",
        class_names=list(KNOWN_CLASS_NAMES),
        config=cfg,
        epoch=1,
        best_metric=0.0,
    )
    return path


def test_predict_rgba_odd_size_and_jpeg(tmp_path, checkpoint):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rng.integers(0, 255, (51, 77, 4), dtype=np.uint8), "RGBA").save(src / "a.png")
    Image.fromarray(rng.integers(0, 255, (40, 33, 3), dtype=np.uint8)).save(src / "b.jpg")
    out = tmp_path / "out"
    summary = predict(torch_predictor(checkpoint), [src], out, PredictOptions(threshold=0.0))
    assert summary["failed"] == [] and len(summary["images"]) == 2
    for key, (h, w) in (("a", (51, 77)), ("b", (40, 33))):
        seg = np.asarray(Image.open(out / f"{key}_seg.png"))
        mask = np.asarray(Image.open(out / f"{key}_mask.png"))
        assert seg.shape == (h, w, 3)
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        assert np.asarray(Image.open(out / f"{key}_heat.png")).shape == (h, w, 3)
        assert np.asarray(Image.open(out / f"{key}_overlay.png")).shape == (h, w, 3)
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["threshold_source"] == "--threshold"


def test_predict_threshold_orders_masks(tmp_path, checkpoint):
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
        img
    )
    pred = torch_predictor(checkpoint)
    low = predict(pred, [img], tmp_path / "lo", PredictOptions(threshold=-1e9))["images"][0]
    high = predict(pred, [img], tmp_path / "hi", PredictOptions(threshold=1e9))["images"][0]
    assert low["anomaly_fraction"] == 1.0 and high["anomaly_fraction"] == 0.0


def test_predict_without_calibration_refuses(tmp_path, checkpoint):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(img)
    with pytest.raises(HazardsegError, match="hazardseg calibrate"):
        predict(torch_predictor(checkpoint), [img], tmp_path / "o")


def test_predict_fitted_method_without_state_refuses(tmp_path, checkpoint):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(img)
    with pytest.raises(HazardsegError, match="needs fitted state"):
        predict(torch_predictor(checkpoint, "sml"), [img], tmp_path / "o")


@pytest.mark.parametrize("method", ["msp,max_logit", "all"])
def test_predict_one_method_at_a_time(tmp_path, checkpoint, capsys, method):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "o"
    args = ["predict", str(img), "--checkpoint", str(checkpoint), "--out", str(out)]
    code = main([*args, "--method", method, "--threshold", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "one anomaly method at a time" in err[0] and "max_logit" in err[0]
    assert not out.exists()


def test_cli_corrupt_image_skipped_with_error(tmp_path, checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((32, 40, 3), dtype=np.uint8)).save(src / "good.png")
    (src / "bad.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(src),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--threshold",
            "0",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "bad.png" in err and "could not be decoded" in err
    assert (out / "good_seg.png").is_file()


def test_collect_images_missing_and_duplicates(tmp_path):
    with pytest.raises(HazardsegError, match="input not found"):
        collect_images([tmp_path / "nope.png"])
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / d / "1.png")
    keys = [k for _, k in collect_images([tmp_path / "a" / "1.png", tmp_path / "b" / "1.png"])]
    assert keys == ["1", "1_2"]


@pytest.mark.parametrize(("split", "n_panels"), [("test", 9), ("validation", 6)])
def test_visualize_writes_panels_and_grid(tmp_path, shared_tiny_tree, checkpoint, split, n_panels):
    out = tmp_path / "vis"
    summary = visualize(
        checkpoint, shared_tiny_tree, split, out, selection=PanelSelection(samples=2)
    )
    assert len(summary["samples"]) == 2
    for row in summary["samples"]:
        assert np.asarray(Image.open(row["panel"])).shape[0] > 300
        assert 0.0 <= row["miou"] <= 1.0
        if split == "test":
            assert row["threshold_source"] in ("per-image best-F1 (oracle)", "no anomaly in image")
    assert (out / f"{split}_grid.png").is_file()


def test_visualize_cli_selection_and_errors(tmp_path, shared_tiny_tree, checkpoint, capsys):
    base = [
        "visualize",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(shared_tiny_tree),
        "--out",
        str(tmp_path / "v"),
    ]
    assert (
        main(
            [
                *base,
                "--split",
                "test",
                "--samples",
                "1",
                "--select",
                "best",
                "--by",
                "ap",
                "--no-grid",
            ]
        )
        == 0
    )
    assert main([*base, "--split", "validation", "--indices", "7"]) == 2
    assert "--indices 7" in capsys.readouterr().err
    assert main([*base, "--split", "validation", "--select", "worst", "--by", "ap"]) == 2


def test_panel_ap_equals_the_per_image_ap_of_results(tmp_path, shared_tiny_tree, checkpoint):
    """Panels and results.json compute per-image metrics with the same code: an image's panel
    AP equals the per-image AP evaluate reports for a split of that image alone (PNG 0
    pixels counted as normal in both)."""
    from hazardseg.evaluation import evaluate
    from hazardseg.evaluation.spec import RunOptions

    spec = spec_for(checkpoint, methods="max_logit", components="none")
    res = evaluate(checkpoint, shared_tiny_tree, "test", spec, RunOptions(max_images=1))
    selection = PanelSelection(indices=[0], method="max_logit", grid=False)
    panels = visualize(checkpoint, shared_tiny_tree, "test", tmp_path / "v", spec, None, selection)
    per_image = res["methods"]["max_logit"]["per_image"]
    assert per_image["num_images"] == 1
    assert panels["samples"][0]["ap"] == per_image["aupr"]
