"""eval-maps: hand-made score maps on a tiny tree against scikit-learn, and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from conftest import make_tiny_tree
from hazardseg.cli import main
from hazardseg.config import EvalConfig
from hazardseg.data.streethazards import StreetHazards
from hazardseg.errors import DataError, HazardsegError
from hazardseg.evaluation import evaluate_maps
from hazardseg.evaluation.results import load_results
from test_perimage_official import official_fpr95


def write_maps(
    root: Path, maps: Path, split: str = "test", seed: int = 0, dtype: type = np.float32
) -> dict[str, np.ndarray]:
    """Noisy maps that score anomaly pixels higher on average; returns them by rel path."""
    rng = np.random.default_rng(seed)
    ds = StreetHazards(root, split)
    out = {}
    for s in ds.samples:
        mask = ds[ds.samples.index(s)]["mask"].numpy()
        score = rng.normal(size=mask.shape) + 1.5 * (mask == 13)
        score = np.round(score, 2).astype(dtype)  # ties, as real methods produce
        path = maps / Path(s.rel).with_suffix(".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, score)
        out[s.rel] = score
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_tree(
        tmp_path_factory.mktemp("maps") / "sh", counts={"validation": 2, "test": 4}
    )


def _ref(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return {
        "auroc": roc_auc_score(labels, scores),
        "aupr": average_precision_score(labels, scores),
        "fpr95": float(fpr[np.searchsorted(tpr, 0.95)]),
    }


@pytest.mark.parametrize("exclude_unlabeled", [False, True])
def test_eval_maps_matches_sklearn(tree, tmp_path, exclude_unlabeled) -> None:
    maps = write_maps(tree, tmp_path / "maps")
    spec = EvalConfig(components="oracle", exclude_unlabeled=exclude_unlabeled)
    res = evaluate_maps(
        tmp_path / "maps", tree, "test", spec, out_dir=tmp_path / "out", name="noise"
    )
    assert load_results(tmp_path / "out") == res
    assert res["model"]["name"] == "noise" and res["segmentation"] is None
    assert res["protocol"]["exclude_unlabeled"] is exclude_unlabeled
    ds = StreetHazards(tree, "test")
    all_s, all_y, per = [], [], []
    for i, s in enumerate(ds.samples):
        mask = ds[i]["mask"].numpy().ravel()
        keep = mask <= 13
        if exclude_unlabeled:
            keep &= mask != 0
        sc, y = maps[s.rel].ravel()[keep], mask[keep] == 13
        all_s.append(sc)
        all_y.append(y)
        # per-image: the official definitions; every pixel (PNG 0 as normal) unless
        # unlabeled pixels are excluded (then the pooled pixel set)
        ps, py = (sc, y) if exclude_unlabeled else (maps[s.rel].ravel(), mask == 13)
        if py.any() and (~py).any():
            ps = ps.astype(np.float32)
            per.append(
                {
                    "auroc": roc_auc_score(py, ps),
                    "aupr": average_precision_score(py, ps),
                    "fpr95": official_fpr95(ps, py),
                }
            )
    ref = _ref(np.concatenate(all_s), np.concatenate(all_y))
    m = res["methods"]["noise"]
    for key in ("auroc", "aupr", "fpr95"):
        assert m["pooled"][key] == pytest.approx(ref[key], abs=1e-9)
        assert m["per_image"][key] == pytest.approx(np.mean([p[key] for p in per]), abs=1e-9)
    assert m["pooled"]["num_pos"] == int(np.concatenate(all_y).sum())
    assert m["per_image"]["num_skipped"] == 1
    comp = m["components"]
    assert comp["threshold"] == pytest.approx(m["pooled"]["best_f1_threshold"])
    assert comp["num_gt_components"] == 3
    assert set(comp["f1_per_tau"]) and 0 <= comp["mean_f1"] <= 1
    assert m["nonfinite"] == 0


def test_eval_maps_float64_and_float16_maps(tree, tmp_path) -> None:
    write_maps(tree, tmp_path / "m16", dtype=np.float16)
    write_maps(tree, tmp_path / "m64", dtype=np.float64)
    a = evaluate_maps(tmp_path / "m16", tree, "test", EvalConfig(components="none"))
    b = evaluate_maps(tmp_path / "m64", tree, "test", EvalConfig(components="none"))
    assert a["methods"]["external"]["pooled"]["auroc"] == pytest.approx(
        b["methods"]["external"]["pooled"]["auroc"], abs=1e-3
    )


def test_eval_maps_bad_inputs(tree, tmp_path) -> None:
    maps = tmp_path / "maps"
    write_maps(tree, maps)
    out = tmp_path / "out"
    (maps / "t5" / "1.npy").unlink()
    (maps / "t6" / "2.npy").unlink()
    with pytest.raises(DataError, match=r"2 of 4 score maps missing \(first: t5/1.npy, t6/2.npy"):
        evaluate_maps(maps, tree, "test", out_dir=out)
    np.save(maps / "t5" / "1.npy", np.zeros((10, 10), np.float32))
    np.save(maps / "t6" / "2.npy", np.zeros((48, 64), np.float32))
    with pytest.raises(DataError, match=r"1.npy: shape \(10, 10\); expected \(48, 64\)"):
        evaluate_maps(maps, tree, "test", out_dir=out)
    np.save(maps / "t5" / "1.npy", np.zeros((48, 64), np.int64))
    with pytest.raises(DataError, match="dtype int64; expected a float array"):
        evaluate_maps(maps, tree, "test", out_dir=out)
    (maps / "t5" / "1.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"not a readable \.npy"):
        evaluate_maps(maps, tree, "test", out_dir=out)
    bad = np.zeros((48, 64), np.float32)
    bad[10, 10:13] = np.nan
    bad[20, 20] = np.inf
    np.save(maps / "t5" / "1.npy", bad)
    with pytest.raises(HazardsegError, match="4 NaN/infinite scores in 1 image"):
        evaluate_maps(maps, tree, "test", out_dir=out)
    assert not out.exists()
    spec = EvalConfig(components="oracle", nonfinite="exclude")
    res = evaluate_maps(maps, tree, "test", spec, out_dir=out)
    assert res["methods"]["external"]["nonfinite"] == 4
    assert any("4 non-finite" in n for n in res["notes"])
    with pytest.raises(DataError, match="no anomaly"):
        write_maps(tree, tmp_path / "val", split="validation")
        evaluate_maps(tmp_path / "val", tree, "validation", out_dir=tmp_path / "out_val")
    assert not (tmp_path / "out_val").exists()
    with pytest.raises(DataError, match="score-map folder not found"):
        evaluate_maps(tmp_path / "nowhere", tree, "test", out_dir=out)


def test_cli_eval_maps(tree, tmp_path, capsys) -> None:
    write_maps(tree, tmp_path / "maps")
    code = main(
        [
            "eval-maps",
            "--maps",
            str(tmp_path / "maps"),
            "--data",
            str(tree),
            "--out",
            str(tmp_path / "out"),
            "--name",
            "mine",
            "--quiet",
        ]
    )
    assert code == 0
    assert "mine" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "results.json").read_text())["model"]["name"] == "mine"
    code = main(
        [
            "eval-maps",
            "--maps",
            str(tmp_path / "none"),
            "--data",
            str(tree),
            "--out",
            str(tmp_path / "o2"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "score-map folder not found" in err and len(err.splitlines()) == 1
