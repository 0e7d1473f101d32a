"""demo: packaged recipe matches configs/, output-folder checks, --quick end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from hazardseg.cli import main
from hazardseg.errors import HazardsegError
from hazardseg.inference.predict import predict
from hazardseg.inference.predictor import MapPredictor
from hazardseg.workflows.demo import (
    QUICK,
    RECIPE,
    demo_config,
    recipe_path,
    run_demo,
    summary_text,
)

REPO = Path(__file__).resolve().parents[1]


def test_packaged_recipe_matches_configs():
    """The recipe is written once: configs/synthetic_cpu.yaml is a link to the packaged
    recipe (package data, which the demo reads from an installed package)."""
    source = REPO / "configs" / "synthetic_cpu.yaml"
    if not source.exists():
        pytest.skip("not a source checkout")
    assert source.is_symlink(), "configs/synthetic_cpu.yaml must link to the packaged recipe"
    assert source.resolve() == (REPO / "src" / "hazardseg" / "recipes" / RECIPE).resolve()
    packaged = yaml.safe_load(recipe_path().read_text())
    assert packaged == yaml.safe_load(source.read_text())


def test_demo_config_applies_quick_plan(tmp_path):
    cfg = demo_config(QUICK, tmp_path / "data", workers=0)
    assert cfg.model.name == "lraspp_mobilenet_v3" and cfg.model.pretrained is None
    assert cfg.data.root == str(tmp_path / "data")
    assert cfg.train.epochs == 10 and cfg.eval.resize == "native"


def test_demo_refuses_non_empty_out(tmp_path):
    (tmp_path / "x").write_text("keep")
    with pytest.raises(HazardsegError, match="not empty"):
        run_demo(tmp_path, quick=True)
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 2
    assert (tmp_path / "x").read_text() == "keep"


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    lines: list[str] = []
    summary = run_demo(tmp_path / "demo", quick=True, say=lines.append)
    assert Path(summary["report"]).is_file()
    assert summary["report"].endswith("report.html")
    assert sum(" 7/7 report" in line for line in lines) == 1
    assert summary["miou"] > 0.2  # an untrained model stays near 0.01-0.05; measured 0.35
    assert summary["methods"]["max_logit"]["auroc"] > 0.6  # measured 0.76
    assert set(summary["methods"]) >= {"msp", "max_logit", "energy", "entropy"}
    for metrics in summary["methods"].values():
        for v in metrics.values():
            assert math.isfinite(v) and 0.0 <= v <= 1.0
    text = summary_text(summary)
    assert "max_logit" in text and "report:" in text
    assert list((tmp_path / "demo" / "run" / "visualize").glob("test_*.png"))
    # predict reuses the demo's calibrated thresholds and fitted SML state
    image = next((tmp_path / "demo" / "data" / "test").rglob("images/**/*.png"))
    for method in ("max_logit", "sml"):
        pred = predict(MapPredictor(summary["checkpoint"], method), [image], tmp_path / method)
        assert pred["threshold_source"].startswith("calibrated")
        assert math.isfinite(pred["threshold"]) and len(pred["images"]) == 1
    # the run's config says how the demo fitted its methods: a plain evaluate reuses those
    # fits and thresholds, and predict still finds heat's threshold afterwards
    ckpt = summary["checkpoint"]
    data = str(tmp_path / "demo" / "data")
    out = tmp_path / "plain"
    assert (
        main(["evaluate", "--checkpoint", ckpt, "--data", data, "--out", str(out), "--quiet"]) == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res["evaluation"]["state_fitted"] == [] and res["methods"]["heat"]["calibrated"]
    assert (
        main(
            [
                "predict",
                str(image),
                "--checkpoint",
                ckpt,
                "--method",
                "heat",
                "--out",
                str(out / "p"),
            ]
        )
        == 0
    )
