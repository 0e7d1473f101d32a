"""ablate: grid parsing, validation before training, a tiny 2-variant run, resume."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from hazardseg.cli import main
from hazardseg.config import ExperimentConfig
from hazardseg.errors import ConfigError
from hazardseg.workflows.ablation import load_grid, parse_seeds, summarize, variant_configs


def _grid(tmp_path, variants, seeds=None):
    doc = {"variants": variants}
    if seeds is not None:
        doc["seeds"] = seeds
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_variant_configs_apply_dotted_keys(tmp_path):
    grid = load_grid(
        _grid(tmp_path, {"a": {"augment.scale": False}, "b": {"augment.scale_range": [0.75, 1.25]}})
    )
    assert grid.seeds == [0]
    cfgs = variant_configs(ExperimentConfig(), grid, ["train.epochs=1"])
    assert cfgs["a"].augment.scale is False and cfgs["a"].train.epochs == 1
    assert cfgs["b"].augment.scale_range == (0.75, 1.25)


def test_bad_grid_key_fails_before_training(tmp_path, capsys):
    grid = _grid(tmp_path, {"ok": {"augment.hflip": False}, "bad": {"augment.flip": False}})
    cfg = tmp_path / "base.yaml"
    cfg.write_text("train:\n  epochs: 1\n")
    out = tmp_path / "out"
    code = main(
        [
            "ablate",
            "--config",
            str(cfg),
            "--grid",
            str(grid),
            "--out",
            str(out),
            "--data",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "variant 'bad'" in err and "augment.flip" in err
    assert not out.exists()  # nothing trained, not even the valid variant


@pytest.mark.parametrize(
    ("doc", "match"),
    [({"variants": {}}, "non-empty"), ({"variants": {"a": 3}}, "dotted"), ({"x": 1}, "top-level")],
)
def test_grid_shape_errors(tmp_path, doc, match):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=match):
        load_grid(path)


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    for bad in ("a", "1,1", "-1", ""):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_summarize_mean_and_sample_std():
    rows = [
        {
            "variant": "a",
            "val_miou": 0.2,
            "test_miou": 0.1,
            "auroc": 0.5,
            "aupr": 0.1,
            "fpr95": 0.9,
        },
        {
            "variant": "a",
            "val_miou": 0.4,
            "test_miou": 0.3,
            "auroc": 0.7,
            "aupr": None,
            "fpr95": 0.7,
        },
    ]
    (row,) = summarize(rows, ["a"])
    assert row["seeds"] == 2
    assert row["val_miou_mean"] == pytest.approx(0.3)
    assert row["val_miou_std"] == pytest.approx(math.sqrt(0.02))  # ddof=1
    assert row["aupr_mean"] == pytest.approx(0.1) and row["aupr_std"] == 0.0


@pytest.mark.slow
def test_ablate_two_variants_tiny_and_resume(tmp_path, shared_tiny_tree, capsys):
    cfg = tmp_path / "base.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "lraspp_mobilenet_v3"},
                "data": {"num_workers": 0},
                "augment": {"crop_size": 32, "blur": False},
                "train": {
                    "epochs": 1,
                    "batch_size": 2,
                    "max_iters_per_epoch": 2,
                    "log_every_iters": 1,
                },
                "eval": {"resize": "native"},
            }
        )
    )
    grid = _grid(tmp_path, {"plain": {"augment.scale": False}, "flip": {"augment.hflip": True}})
    out = tmp_path / "abl"
    args = [
        "ablate",
        "--config",
        str(cfg),
        "--grid",
        str(grid),
        "--out",
        str(out),
        "--data",
        str(shared_tiny_tree),
        "--seeds",
        "0",
    ]
    assert main(args) == 0
    doc = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in doc["table"]] == ["plain", "flip"]
    for r in doc["runs"]:
        assert 0.0 <= r["auroc"] <= 1.0 and 0.0 <= r["val_miou"] <= 1.0
    md = (out / "ablation.md").read_text()
    assert "1 seed(s)" in md and "| plain | 1 |" in md
    assert (out / "ablation.csv").read_text().startswith("variant,seeds,")
    capsys.readouterr()
    assert main(args) == 0  # resumed: every run is skipped
    assert capsys.readouterr().out.count(": done") == 2
