"""The whole flow offline on synthetic scenes in every layout: ``data synth --dataset`` writes
trees the loaders and ``data check`` accept, a model trained on synthetic Cityscapes records
its dataset, and is evaluated on the anomaly sets with each one's own protocols; a split
without public labels yields only the benchmark's submission files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hazardseg.cli import main
from hazardseg.data.registry import list_datasets
from hazardseg.data.synth.generate import DEFAULT_COUNTS
from hazardseg.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = ["--size", "64x40", "-q"]
COUNTS = {
    "cityscapes": (8, 2, 1),
    "bdd-anomaly": (3, 2, 4),
    "smiyc-anomaly": (0, 4, 2),
    "smiyc-obstacle": (0, 4, 3),
    "fishyscapes-laf": (0, 3, 0),
    "lostandfound": (2, 0, 3),
    "road-anomaly": (0, 0, 3),
}


def synth(root: Path, dataset: str) -> Path:
    train, val, test = COUNTS[dataset]
    args = ["data", "synth", str(root), "--dataset", dataset, "--seed", "2", *SIZE]
    assert main([*args, "--train", str(train), "--val", str(val), "--test", str(test)]) == 0
    return root


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    return {d: synth(base / d, d) for d in COUNTS}


def test_every_dataset_has_a_synthetic_layout() -> None:
    assert set(DEFAULT_COUNTS) == set(list_datasets())


@pytest.mark.parametrize("dataset", sorted(COUNTS))
def test_synthetic_trees_are_detected_and_pass_the_check(
    trees: dict[str, Path], dataset: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = trees[dataset]
    assert main(["data", "check", str(root), "--no-progress"]) == 0
    assert f"OK: {root}" in capsys.readouterr().out
    assert main(["data", "preview", str(root), "-o", str(root.parent / f"{dataset}.png")]) == 0
    assert (root.parent / f"{dataset}.png").is_file()


def test_synth_refuses_counts_a_dataset_has_no_use_for(tmp_path: Path) -> None:
    args = ["data", "synth", str(tmp_path / "x"), "--dataset", "road-anomaly", "--train", "2"]
    assert main([*args, *SIZE]) == 2


def test_synth_is_the_same_whatever_the_workers(tmp_path: Path) -> None:
    for workers in ("1", "2"):
        args = ["data", "synth", str(tmp_path / workers), "--dataset", "lostandfound"]
        assert main([*args, "--train", "0", "--test", "4", "--workers", workers, *SIZE]) == 0
    one = sorted(p.relative_to(tmp_path / "1") for p in (tmp_path / "1").rglob("*.png"))
    two = sorted(p.relative_to(tmp_path / "2") for p in (tmp_path / "2").rglob("*.png"))
    assert one == two
    for rel in one:
        assert (tmp_path / "1" / rel).read_bytes() == (tmp_path / "2" / rel).read_bytes()


@pytest.mark.slow
def test_train_on_cityscapes_then_evaluate_on_the_anomaly_sets(
    trees: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hazardseg.models.checkpoint import open_checkpoint

    run = tmp_path / "run"
    args = ["train", "-c", "configs/synthetic_cpu.yaml", "--data", str(trees["cityscapes"])]
    sets = ["train.epochs=1", "augment.crop_size=32", "data.num_workers=0", "train.batch_size=4"]
    args += ["--dataset", "cityscapes", "--out", str(run), "--no-progress"]
    assert main([*args, *(x for s in sets for x in ("--set", s))]) == 0
    ckpt = open_checkpoint(run / "best.pt")
    assert ckpt.dataset == "cityscapes" and ckpt.num_classes == 19
    assert ckpt.class_names[:2] == ["road", "sidewalk"]
    capsys.readouterr()

    def evaluate(dataset: str, *extra: str) -> dict:
        out = tmp_path / f"ev_{dataset}"
        base = ["evaluate", "--checkpoint", str(run / "best.pt"), "--data", str(trees[dataset])]
        flags = ["--methods", "msp,max_logit,sml", "--fit-images", "2", "--quiet"]
        assert main([*base, "--out", str(out), *flags, *extra]) == 0
        return json.loads((out / "results.json").read_text())

    ra = evaluate("smiyc-anomaly", "--components", "oracle")
    assert ra["data"]["dataset"] == "smiyc-anomaly" and ra["data"]["split"] == "validation"
    assert ra["segmentation"] is None  # no class labels needed
    sml = ra["methods"]["sml"]
    assert sml["per_image"] is None and sml["smiyc"]["components"]["min_pred_size"] == 500
    assert sml["smiyc"]["track"] == "SegEval-AnomalyTrack"
    assert ra["evaluation"]["state_fits"]  # sml fitted on the model's training data
    obstacle = evaluate("lostandfound")
    assert obstacle["data"]["split"] == "test-noknown"
    assert obstacle["methods"]["msp"]["smiyc"]["track"] == "SegEval-ObstacleTrack"
    road = evaluate("road-anomaly")
    assert "smiyc" not in road["protocol"]["measured"]
    fishy = evaluate("fishyscapes-laf", "--protocols", "pooled,per_image,smiyc")
    assert fishy["methods"]["msp"]["per_image"] is not None
    cs = evaluate("cityscapes")
    assert cs["methods"] == {} and cs["segmentation"]["miou"] is not None

    # a split without public labels: refused, or only the submission maps
    base = ["evaluate", "--checkpoint", str(run / "best.pt"), "--data", str(trees["smiyc-anomaly"])]
    hidden = [*base, "--split", "test", "--methods", "msp", "--quiet", "--out", str(tmp_path / "h")]
    assert main(hidden) == 2
    assert "not public" in capsys.readouterr().err
    assert main([*hidden, "--save-maps", "--maps-format", "smiyc"]) == 0
    manifest = json.loads((tmp_path / "h" / "maps.json").read_text())
    folder = Path(manifest["methods"]["msp"])
    assert folder.parts[-3:] == ("anomaly_p", "msp", "AnomalyTrack-all")
    import h5py

    files = sorted(folder.glob("*.hdf5"))
    assert [f.stem for f in files] == ["cow0000", "sheep0000"]
    with h5py.File(files[0], "r") as fh:
        assert fh["value"].dtype == np.float16 and fh["value"].shape == (40, 64)
    assert not (tmp_path / "h" / "results.json").exists()


def test_training_refuses_an_anomaly_only_set_and_other_class_counts(trees) -> None:
    from hazardseg.config import load_config
    from hazardseg.training.rules import complete_config

    cfg = load_config(None, [f"data.root={trees['smiyc-anomaly']}", "data.dataset=smiyc-anomaly"])
    with pytest.raises(ConfigError, match="no classes to train on"):
        complete_config(cfg)
    cfg = load_config(None, [f"data.root={trees['cityscapes']}", "data.dataset=cityscapes"])
    done = complete_config(cfg)
    assert done.model.num_classes == 19 and done.data.val_split == "val"
    bad = load_config(None, ["data.dataset=cityscapes", "model.num_classes=13"])
    with pytest.raises(ConfigError, match=r"model\.num_classes=13, but Cityscapes"):
        complete_config(bad)
