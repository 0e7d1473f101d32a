"""Comparison tables, `hazardseg compare` and `hazardseg sensitivity` from hand-made results."""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score, precision_recall_curve, roc_curve

from hazardseg.cli import main
from hazardseg.errors import DataError
from hazardseg.reports.compare import write_comparison, write_sensitivity
from hazardseg.reports.sensitivity import sensitivity_rows, threshold_sweep
from hazardseg.reports.sources import load_entries
from hazardseg.reports.tables import build_tables, table_to_csv, table_to_json, table_to_markdown


def curves_for(seed: int, n: int = 400) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """ROC/PR curves (results.json layout) of random scores, plus the labels and scores."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.2
    s = np.round(y * 1.0 + rng.normal(0, 0.8, n), 3)
    fpr, tpr, th = roc_curve(y, s)
    prec, rec, pth = precision_recall_curve(y, s)
    curves = {
        "roc": {"fpr": fpr[1:].tolist(), "tpr": tpr[1:].tolist(), "thresholds": th[1:].tolist()},
        "pr": {
            "recall": rec[:-1].tolist(),
            "precision": prec[:-1].tolist(),
            "thresholds": pth.tolist(),
        },
    }
    return curves, y, s


def method(
    auroc: float, aupr: float, fpr95: float, f1: float, seed: int = 0, comp: float | None = 0.3
) -> dict[str, Any]:
    curves, y, s = curves_for(seed)
    oracle_t = 0.5
    cal_t = 0.2
    return {
        "options": {},
        "pooled": {
            "auroc": auroc,
            "aupr": aupr,
            "fpr95": fpr95,
            "best_f1": f1,
            "best_f1_threshold": oracle_t,
            "num_pos": int(y.sum()),
            "num_neg": int((~y).sum()),
        },
        "per_image": {
            "auroc": auroc - 0.01,
            "aupr": aupr + 0.01,
            "fpr95": fpr95 + 0.02,
            "num_images": 3,
            "num_skipped": 1,
        },
        "components": None
        if comp is None
        else {
            "mean_f1": comp,
            "f1_per_tau": {"0.25": comp},
            "mean_siou": comp + 0.1,
            "mean_ppv": comp + 0.2,
            "num_gt_components": 4,
            "num_pred_components": 5,
            "threshold": oracle_t,
        },
        "calibrated": {
            "threshold": cal_t,
            "target": "tpr95",
            "f1": float(f1_score(y, s >= cal_t)),
            "precision": 0.3,
            "recall": 0.9,
            "fpr": 0.2,
        },
        "oracle": {
            "threshold": oracle_t,
            "f1": float(f1_score(y, s >= oracle_t)),
            "precision": 0.5,
            "recall": 0.6,
        },
        "curves": curves,
        "nonfinite": 0,
    }


def make_results(
    model: str = "deeplabv3_resnet50",
    methods: dict[str, dict[str, Any]] | None = None,
    split: str = "test",
    miou: float = 0.5026,
    exclude_unlabeled: bool = False,
    resize: str = "native",
) -> dict[str, Any]:
    """A hand-made results.json object (schema_version 1)."""
    return {
        "schema_version": 1,
        "kind": "evaluation",
        "created": "2026-11-22T00:00:00+00:00",
        "hazardseg_version": "0.1.0",
        "model": {"name": model, "checkpoint": "best.pt", "num_classes": 13},
        "data": {
            "root": "/data",
            "split": split,
            "num_images": 3,
            "resize": resize,
            "at_label_resolution": True,
        },
        "config": {},
        "protocol": {
            "positive": "anomaly",
            "ignore": [255],
            "exclude_unlabeled": exclude_unlabeled,
        },
        "segmentation": {
            "miou": miou,
            "miou_no_unlabeled": miou,
            "pixel_accuracy": 0.9,
            "iou": {"road": 0.9, "car": 0.4, "pole": None},
        },
        "methods": methods
        if methods is not None
        else {
            "msp": method(0.8671, 0.0621, 0.3357, 0.10, seed=1),
            "max_logit": method(0.9050, 0.0843, 0.3312, 0.15, seed=2, comp=0.35),
        },
        "timing": {"total_s": 1.0},
    }


def write(path: Path, obj: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture
def two_models(tmp_path: Path) -> list[Path]:
    a = write(tmp_path / "runs" / "a" / "eval" / "test" / "results.json", make_results())
    b = make_results(
        "lraspp_mobilenet_v3",
        {
            "msp": method(0.91, 0.05, 0.30, 0.12, seed=3, comp=None),
            "max_logit": method(0.88, 0.09, 0.40, 0.20, seed=4),
        },
        miou=0.40,
    )
    return [a, write(tmp_path / "runs" / "b" / "eval" / "test" / "results.json", b)]


def test_tables_values_and_best_marks(two_models: list[Path]) -> None:
    tables = build_tables(load_entries(two_models))
    pooled = tables["pooled"]
    keyed = {(r["model"], r["method"]): r for r in pooled.rows}
    assert len(pooled.rows) == 4
    assert keyed["deeplabv3_resnet50", "max_logit"]["auroc"] == 0.9050
    assert keyed["lraspp_mobilenet_v3", "msp"]["fpr95"] == 0.30
    idx = {k: i for i, k in enumerate((r["model"], r["method"]) for r in pooled.rows)}
    assert pooled.best["auroc"] == [idx["lraspp_mobilenet_v3", "msp"]]
    assert pooled.best["fpr95"] == [idx["lraspp_mobilenet_v3", "msp"]]  # lower is better
    assert pooled.best["aupr"] == [idx["lraspp_mobilenet_v3", "max_logit"]]
    # mIoU is per model: both rows of the better model are marked
    assert sorted(pooled.best["miou"]) == sorted(
        [idx["deeplabv3_resnet50", "msp"], idx["deeplabv3_resnet50", "max_logit"]]
    )
    assert "threshold" not in pooled.best
    per = {(r["model"], r["method"]): r for r in tables["per_image"].rows}
    assert per["deeplabv3_resnet50", "msp"]["fpr95"] == pytest.approx(0.3557)
    comp = tables["components"]
    assert len(comp.rows) == 3  # lraspp/msp has no component metrics
    assert comp.rows[comp.best["f1"][0]]["f1"] == 0.35


def test_three_formats(two_models: list[Path]) -> None:
    table = build_tables(load_entries(two_models))["pooled"]
    md = table_to_markdown(table)
    assert "| model | method | mIoU |" in md
    assert "**91.00**" in md  # best AUROC as percent with 2 decimals, bold
    assert "**30.00**" in md  # best FPR95
    assert "86.71" in md and "**86.71**" not in md
    rows = list(csv.DictReader(io.StringIO(table_to_csv(table))))
    best_row = next(r for r in rows if r["model"] == "lraspp_mobilenet_v3" and r["method"] == "msp")
    assert float(best_row["auroc"]) == 0.91  # raw fraction
    assert set(best_row["best"].split(";")) >= {"auroc", "fpr95"}
    j = table_to_json(table)
    assert j["best"]["auroc"]["value"] == 0.91
    assert j["rows"][j["best"]["auroc"]["rows"][0]]["method"] == "msp"
    assert [c["key"] for c in j["columns"]][:4] == ["miou", "auroc", "aupr", "fpr95"]


def test_compare_writes_files_and_refuses_overwrite(two_models: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    comp = write_comparison([tmp_path / "runs"], out, name="c1")  # directory search
    names = {p.name for p in comp.files}
    assert {"c1.md", "c1.json", "c1_pooled.csv", "c1_per_image.csv", "c1_components.csv"} <= names
    for p in comp.files:
        assert p.is_file() and p.stat().st_size > 0
    with Image.open(out / "c1_bars_pooled.png") as im:
        assert im.size == (1260, 420)
    with Image.open(out / "c1_curves_deeplabv3_resnet50.png") as im:
        assert im.size == (1000, 440)
    data = json.loads((out / "c1.json").read_text())
    assert set(data["tables"]) == {"pooled", "per_image", "components"}
    before = (out / "c1.md").read_text()
    with pytest.raises(DataError, match="already exists"):
        write_comparison(two_models, out, name="c1")
    assert (out / "c1.md").read_text() == before
    write_comparison(two_models, out, name="c2")  # another name is fine
    write_comparison(two_models, out, name="c1", overwrite=True)


def test_compare_cli(two_models: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, two_models), "--out", str(out), "--name", "x"]) == 0
    assert "**91.00**" in capsys.readouterr().out
    assert main(["compare", *map(str, two_models), "--out", str(out), "--name", "x"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["compare", str(two_models[0]), "--out", str(out), "--name", "a/b"]) == 2


def test_mixed_protocols_refused_or_labelled(tmp_path: Path) -> None:
    a = write(tmp_path / "a" / "results.json", make_results())
    b = write(tmp_path / "b" / "results.json", make_results("other", split="validation"))
    c = write(tmp_path / "c" / "results.json", make_results("third", exclude_unlabeled=True))
    with pytest.raises(DataError, match=r"data\.split"):
        build_tables(load_entries([a, b]))
    with pytest.raises(DataError, match=r"protocol\.exclude_unlabeled"):
        write_comparison([a, c], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    table = build_tables(load_entries([a, b, c]), allow_mixed=True)["pooled"]
    assert table.id_columns == ["model", "method", "data.split", "protocol.exclude_unlabeled"]
    assert "| data.split |" in table_to_markdown(table)
    assert {r["data.split"] for r in table.rows} == {"test", "validation"}
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "o")]) == 2
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "o"), "--allow-mixed"]) == 0
    assert "Mixed comparison" in (tmp_path / "o" / "comparison.md").read_text()


def test_same_model_twice_gets_distinct_labels(tmp_path: Path) -> None:
    a = write(tmp_path / "run1" / "eval" / "test" / "results.json", make_results())
    b = write(tmp_path / "run2" / "eval" / "test" / "results.json", make_results())
    labels = [e.label for e in load_entries([a, b])]
    assert labels == ["deeplabv3_resnet50 [run1]", "deeplabv3_resnet50 [run2]"]


def test_bad_schema_and_missing_field(tmp_path: Path) -> None:
    bad = make_results()
    bad["schema_version"] = 2
    p = write(tmp_path / "v2" / "results.json", bad)
    with pytest.raises(DataError, match="schema_version"):
        load_entries([p])
    missing = make_results()
    del missing["methods"]["msp"]["pooled"]["auroc"]
    q = write(tmp_path / "m" / "results.json", missing)
    with pytest.raises(DataError, match="auroc") as exc:
        load_entries([q])
    assert str(q) in str(exc.value)
    assert main(["compare", str(p), "--out", str(tmp_path / "o")]) == 2


def test_sensitivity_matches_sklearn(tmp_path: Path) -> None:
    res = make_results()
    m = res["methods"]["msp"]
    sweep = threshold_sweep(m)
    _, y, s = curves_for(1)
    assert np.all(np.diff(sweep["thresholds"]) >= 0)
    for i in (0, len(sweep["thresholds"]) // 3, len(sweep["thresholds"]) - 1):
        t = sweep["thresholds"][i]
        assert sweep["f1"][i] == pytest.approx(f1_score(y, s >= t), abs=1e-9)
    rows = sensitivity_rows(m, sweep)
    notes = [r["note"] for r in rows]
    assert "calibrated" in notes and "oracle best F1" in notes
    cal = next(r for r in rows if r["note"] == "calibrated")
    assert cal["threshold"] == 0.2 and cal["f1"] == pytest.approx(f1_score(y, s >= 0.2))
    assert [r["threshold"] for r in rows] == sorted(r["threshold"] for r in rows)


def test_sensitivity_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = write(tmp_path / "ev" / "results.json", make_results())
    assert main(["sensitivity", str(p.parent), "--method", "max_logit"]) == 0
    out = capsys.readouterr().out
    assert "calibrated" in out and "threshold" in out
    with Image.open(tmp_path / "ev" / "sensitivity_max_logit.png") as im:
        assert im.size == (700, 420)
    target = tmp_path / "s.png"
    sens = write_sensitivity(p, "msp", target)
    assert sens.figure == target and target.stat().st_size > 0
    assert main(["sensitivity", str(p), "--method", "sml"]) == 2
    err = capsys.readouterr().err
    assert "'sml' not found" in err and "max_logit, msp" in err
    empty = copy.deepcopy(make_results())
    empty["methods"]["msp"]["curves"] = {"pr": {"recall": [], "precision": [], "thresholds": []}}
    q = write(tmp_path / "e" / "results.json", empty)
    with pytest.raises(DataError, match=r"curves\.pr"):
        write_sensitivity(q, "msp")


def test_only_settings_that_change_the_metric_must_agree(tmp_path: Path) -> None:
    """A model evaluated at 640x360 (scored at label resolution) sits next to score maps
    scored at label resolution: the input resize changes the prediction, not which pixels are
    measured, so it is a labelled column, not a refusal. A model scored at its input
    resolution measures another pixel grid and is refused."""
    model = write(tmp_path / "m" / "results.json", make_results(resize="640x360"))
    maps = make_results("external")
    maps["model"]["checkpoint"] = None
    maps["segmentation"] = None
    maps = write(tmp_path / "maps" / "results.json", maps)
    table = build_tables(load_entries([model, maps]))["pooled"]
    assert table.id_columns == ["model", "method", "data.resize"]
    assert {r["data.resize"] for r in table.rows} == {"640x360", "native"}
    coarse = make_results("coarse", resize="320x180")
    coarse["data"]["at_label_resolution"] = False
    coarse = write(tmp_path / "c" / "results.json", coarse)
    with pytest.raises(
        DataError, match=r"evaluation\.grid is 'label resolution'.*input resolution"
    ):
        build_tables(load_entries([maps, coarse]))


def test_component_rows_say_which_threshold_and_rank_within_it(tmp_path: Path) -> None:
    """Calibrated and oracle component F1 are different quantities: each row names its
    threshold and the best is marked within rows of the same kind."""
    cal = make_results("calibrated_model")
    for m in cal["methods"].values():
        m["components"]["threshold_source"] = "calibrated"
        m["components"]["mean_f1"] = 0.2
    ora = make_results("oracle_model")
    for m in ora["methods"].values():
        m["components"]["threshold_source"] = "oracle"
    paths = [write(tmp_path / n / "results.json", r) for n, r in (("c", cal), ("o", ora))]
    table = build_tables(load_entries(paths))["components"]
    assert [c.header for c in table.columns][:2] == ["mIoU", "threshold from"]
    sources = [r["threshold_source"] for r in table.rows]
    assert sorted(set(sources)) == ["calibrated", "oracle"]
    best = {table.rows[i]["threshold_source"] for i in table.best["f1"]}
    assert best == {"calibrated", "oracle"}  # one best per kind of threshold
    md = table_to_markdown(table)
    assert "| threshold from |" in md and "calibrated" in md
    from hazardseg.reports.tables import PROTOCOL_TITLES

    assert "best-F1 threshold of the evaluated split" in PROTOCOL_TITLES["components"]
    assert "calibrated" in PROTOCOL_TITLES["components"]
