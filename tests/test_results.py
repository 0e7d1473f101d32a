"""results.json: atomic saving, strict JSON and validation errors."""

from __future__ import annotations

import copy
import json
import math

import pytest

from hazardseg.errors import DataError
from hazardseg.evaluation.results import SCHEMA_VERSION, load_results, save_results, to_jsonable


def _method() -> dict:
    return {
        "options": {},
        "pooled": {
            "auroc": 0.9,
            "aupr": 0.2,
            "fpr95": 0.3,
            "best_f1": 0.25,
            "best_f1_threshold": -3.5,
            "num_pos": 10,
            "num_neg": 90,
        },
        "per_image": {"auroc": 0.8, "aupr": 0.1, "fpr95": 0.4, "num_images": 2, "num_skipped": 1},
        "components": {
            "mean_f1": 0.1,
            "f1_per_tau": {"0.25": 0.2},
            "mean_siou": 0.3,
            "mean_ppv": 0.4,
            "num_gt_components": 2,
            "num_pred_components": 3,
            "threshold": -3.5,
        },
        "calibrated": None,
        "oracle": {"threshold": -3.5, "f1": 0.25, "precision": 0.2, "recall": 0.3},
        "curves": {"roc": {"fpr": [0, 1], "tpr": [0, 1], "thresholds": [1, 0]}},
        "nonfinite": 0,
    }


def _results() -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "evaluation",
        "created": "2026-01-01T00:00:00",
        "hazardseg_version": "0.1.0",
        "model": {"name": "m", "checkpoint": None, "checkpoint_sha256": None},
        "data": {"root": "/d", "split": "test", "num_images": 3},
        "config": {},
        "protocol": {"exclude_unlabeled": False},
        "segmentation": {
            "miou": 0.5,
            "miou_no_unlabeled": None,
            "pixel_accuracy": 0.9,
            "iou": {"road": 0.7, "car": None},
        },
        "methods": {"msp": _method()},
        "timing": {"total_s": 1.0},
    }


def test_round_trip_is_strict_json(tmp_path) -> None:
    path = tmp_path / "out" / "results.json"
    res = _results()
    res["segmentation"]["miou_no_unlabeled"] = float("nan")
    written = save_results(path, res)
    assert written["segmentation"]["miou_no_unlabeled"] is None  # NaN -> null
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert load_results(path) == written
    assert load_results(tmp_path / "out") == written  # a run folder works too
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temp files left


def test_to_jsonable_converts_tensors_and_numpy() -> None:
    import numpy as np
    import torch

    out = to_jsonable({"a": torch.tensor([1.0, float("inf")]), "b": np.float32(0.5), "c": (1,)})
    assert out == {"a": [1.0, None], "b": 0.5, "c": [1]}
    assert math.isclose(out["b"], 0.5)
    with pytest.raises(TypeError):
        to_jsonable({"x": object()})


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.update(schema_version=2), "newer than this hazardseg"),
        (lambda r: r.update(schema_version="1"), "schema_version: expected 1"),
        (lambda r: r.pop("methods"), "missing key"),
        (lambda r: r.update(kind="training"), "kind"),
        (lambda r: r["methods"]["msp"]["pooled"].update(auroc=87.6), r"methods.msp.pooled.auroc"),
        (lambda r: r["methods"]["msp"]["pooled"].update(aupr="high"), "expected a number"),
        (lambda r: r["methods"]["msp"].pop("per_image"), "missing key"),
        (lambda r: r["methods"]["msp"].update(nonfinite=-1), "nonfinite"),
        (lambda r: r["segmentation"]["iou"].update(road=1.5), "segmentation.iou.road"),
        (lambda r: r["methods"]["msp"]["oracle"].update(f1=2.0), "oracle.f1"),
        (lambda r: r.update(model=[]), "model: expected an object"),
    ],
)
def test_validation_errors_name_the_key(tmp_path, mutate, message) -> None:
    bad = copy.deepcopy(_results())
    mutate(bad)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=message):
        load_results(path)
    with pytest.raises(DataError):
        save_results(tmp_path / "other.json", bad)
    assert not (tmp_path / "other.json").exists()


def test_unreadable_files(tmp_path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_results(tmp_path / "nope.json")
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_results(p)
    p.write_text('{"schema_version": 1, "kind": "evaluation", "segmentation": {"miou": NaN}}')
    with pytest.raises(DataError, match="missing key"):
        load_results(p)
    res = _results()
    p.write_text(json.dumps(res).replace('"miou": 0.5', '"miou": NaN'))
    with pytest.raises(DataError, match=r"segmentation.miou: expected a value in \[0, 1\]"):
        load_results(p)
    p.write_text("[1, 2]")
    with pytest.raises(DataError, match="expected an object"):
        load_results(p)
