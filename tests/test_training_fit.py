"""End-to-end tests of ``fit`` and ``hazardseg train`` on the tiny tree (lraspp, 32 px crops)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import confusion_matrix

from hazardseg.cli import main
from hazardseg.config import ExperimentConfig, load_config
from hazardseg.data.classes import KNOWN_CLASS_NAMES
from hazardseg.models.checkpoint import load_checkpoint, load_model
from hazardseg.training import fit
from hazardseg.training.checkpointing import Checkpointer, RunState

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = [
    "model.name=lraspp_mobilenet_v3",
    "data.num_workers=0",
    "augment.crop_size=32",
    "augment.scale_range=[0.75,1.5]",
    "train.epochs=2",
    "train.batch_size=2",
    "train.lr=0.01",
    "train.log_every_iters=1",
    "train.seed=3",
]


def make_cfg(root: Path, *extra: str) -> ExperimentConfig:
    return load_config(None, [*BASE, f"data.root={root}", *extra])


def rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def reference_miou(model: torch.nn.Module, root: Path) -> float:
    """Validation mIoU of ``model`` computed independently (sklearn confusion matrix)."""
    from hazardseg.data.streethazards import StreetHazards
    from hazardseg.data.transforms import build_eval_transform

    ds = StreetHazards(root, "validation", build_eval_transform("native"))
    total = np.zeros((13, 13), dtype=np.int64)
    with torch.no_grad():
        for i in range(len(ds)):
            item = ds[i]
            pred = model(item["image"][None])["out"].argmax(1)[0].numpy().ravel()
            gt = item["mask"].numpy().ravel()
            keep = gt < 13
            total += confusion_matrix(gt[keep], pred[keep], labels=list(range(13)))
    tp = np.diag(total).astype(float)
    union = total.sum(0) + total.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


def test_fit_writes_complete_run_dir(shared_tiny_tree: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = make_cfg(shared_tiny_tree, "train.class_weights=true")
    result = fit(cfg, run, progress=False)
    assert set(result) == {"best_miou", "best_epoch", "epochs_run", "stopped_early",
                           "best_checkpoint", "last_checkpoint"}  # fmt: skip
    assert result["epochs_run"] == 2 and not result["stopped_early"]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["class_weights"] is True
    weights = json.loads((run / "class_weights.json").read_text())
    assert weights["method"] == "median_freq" and len(weights["weights"]) == 13
    assert any((run / "tb").iterdir())

    r = rows(run)
    assert [x["kind"] for x in r] == ["train", "train", "val"] * 2  # 4 images / batch 2
    assert [x["iteration"] for x in r] == [1, 2, 2, 3, 4, 4]
    val = [x for x in r if x["kind"] == "val"]
    assert set(val[0]["iou"]) == set(KNOWN_CLASS_NAMES)
    assert {"loss", "lr", "images_per_s", "time_s", "epoch"} <= set(r[0])
    csv_lines = (run / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == 7 and "iou_traffic_sign" in csv_lines[0]

    best_val = max(val, key=lambda x: x["miou"])
    assert result["best_miou"] == pytest.approx(best_val["miou"])
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 2 and last["model_name"] == "lraspp_mobilenet_v3"
    assert last["optimizer"] is not None and last["scheduler"] is not None
    state = last["extra"]["run_state"]
    assert state["global_iter"] == 4 and state["finished"] and last["extra"]["world_size"] == 1
    assert last["best_metric"] == pytest.approx(result["best_miou"])
    best = load_checkpoint(run / "best.pt")
    assert best["optimizer"] is None and best["epoch"] == result["best_epoch"]
    copies = list(run.glob("best_*.pt"))
    assert len(copies) == 1
    pct = f"{100 * result['best_miou']:.2f}"
    assert re.fullmatch(
        rf"best_lraspp_mobilenet_v3_\d{{8}}_miou{re.escape(pct)}\.pt", copies[0].name
    )
    # the logged mIoU is the dataset-level mIoU of the saved best model
    model, info = load_model(run / "best.pt")
    assert info["class_names"] == list(KNOWN_CLASS_NAMES)
    assert reference_miou(model, shared_tiny_tree) == pytest.approx(result["best_miou"], abs=1e-9)


def test_resume_after_crash_is_bit_exact(
    shared_tiny_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(shared_tiny_tree, "train.scheduler=poly")
    straight = fit(cfg, tmp_path / "a", progress=False)

    original = Checkpointer.save_last

    def crash_after_epoch_1(self: Checkpointer, state: RunState) -> None:
        original(self, state)
        if state.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save_last", crash_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "b", progress=False)
    monkeypatch.setattr(Checkpointer, "save_last", original)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    resumed = fit(cfg, tmp_path / "b", resume=True, progress=False)

    assert resumed == {k: (str(v).replace("/a/", "/b/") if "checkpoint" in k else v)
                       for k, v in straight.items()}  # fmt: skip
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]

    def strip(r: list[dict]) -> list[dict]:
        return [{k: v for k, v in x.items() if k not in ("time_s", "images_per_s")} for x in r]

    assert strip(rows(tmp_path / "a")) == strip(rows(tmp_path / "b"))
    # resuming a finished run does nothing
    again = fit(cfg, tmp_path / "b", resume=True, progress=False)
    assert again == resumed
    assert len(rows(tmp_path / "b")) == len(rows(tmp_path / "a"))


def test_early_stopping_and_mid_epoch_validation(shared_tiny_tree: Path, tmp_path: Path) -> None:
    cfg = make_cfg(
        shared_tiny_tree,
        "train.epochs=6",
        "train.early_stopping_patience=1",
        "train.early_stopping_min_delta=1.0",  # nothing after the first check improves by 1.0
        "train.val_every_iters=1",
        "train.log_every_iters=5",
        "train.scheduler=none",
    )
    result = fit(cfg, tmp_path / "run", progress=False)
    assert result["stopped_early"] and result["epochs_run"] == 1
    r = rows(tmp_path / "run")
    assert [x["kind"] for x in r] == ["val", "train", "val"]
    assert [x["iteration"] for x in r] == [1, 2, 2]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["extra"]["run_state"]["stopped_early"]


def test_cli_refuses_existing_run_and_overwrites(
    shared_tiny_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train: {epochs: 1}\n")
    args = ["train", "-c", str(cfg_file), "--data", str(shared_tiny_tree), "--out", str(run),
            "--no-progress"]  # fmt: skip
    for item in BASE[:-3]:
        args += ["--set", item]
    args += ["--set", "train.epochs=1"]
    assert main(args) == 0
    assert "best val mIoU" in capsys.readouterr().out
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds a training run" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    (run / "best_lraspp_mobilenet_v3_20000101_miou99.99.pt").write_bytes(b"old copy")
    (run / "notes.txt").write_text("mine")
    assert main([*args, "--overwrite"]) == 0
    assert not (run / "best_lraspp_mobilenet_v3_20000101_miou99.99.pt").exists()
    assert (run / "notes.txt").read_text() == "mine"
    assert [x["kind"] for x in rows(run)] == ["train", "val"]
    # --resume without --config uses the run's config.yaml; the run is finished already
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--set", "train.lrr=0.1"], "unknown config key 'train.lrr'; did you mean 'lr'?"),
        (["--set", "model.name=lraspp_mobilenet"], "unknown model 'lraspp_mobilenet'"),
        (["--set", "train.optimizer=rmsprop"], "train.optimizer='rmsprop': expected one of"),
        (["--set", "train.epochs=0"], "train.epochs=0: expected >= 1"),
        (["--data", "/nonexistent/sh"], "data root /nonexistent/sh not found"),
        (["--set", "data.root=null"], "data.root is not set"),
    ],
)
def test_cli_config_errors_are_one_line(
    extra: list[str],
    message: str,
    shared_tiny_tree: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"data": {"root": str(shared_tiny_tree)}}))
    code = main(["train", "-c", str(cfg_file), "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "run").exists()


def test_cli_resume_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    assert "missing --config" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "run"), "--resume"]) == 2
    assert "config.yaml not found" in capsys.readouterr().err


def test_resume_refuses_changed_config(shared_tiny_tree: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit(make_cfg(shared_tiny_tree, "train.epochs=1"), run, progress=False)
    from hazardseg.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape("train.lr was 0.01, now 0.5")):
        fit(make_cfg(shared_tiny_tree, "train.lr=0.5"), run, resume=True, progress=False)
    # more epochs is allowed: training continues from epoch 1
    result = fit(make_cfg(shared_tiny_tree, "train.epochs=2"), run, resume=True, progress=False)
    assert result["epochs_run"] == 2
    assert [x["epoch"] for x in rows(run) if x["kind"] == "val"] == [1, 2]


def test_progress_when_not_on_a_terminal(shared_tiny_tree: Path, tmp_path: Path, capfd) -> None:
    """Training whose output goes to a file prints a line per epoch and per validation on
    stderr, and writes the same lines to RUN_DIR/train.log; without progress only the log."""
    run = tmp_path / "run"
    fit(make_cfg(shared_tiny_tree), run, progress=True)
    err = capfd.readouterr().err
    for epoch in (1, 2):
        line = next(x for x in err.splitlines() if x.startswith(f"epoch {epoch}/2: loss "))
        assert "images/s" in line and "lr" in line
    assert "val mIoU" in err and "\r" not in err  # plain lines, no bar redraws
    log = (run / "train.log").read_text().splitlines()
    assert [x for x in log if x.startswith("epoch ") and ": loss " in x] == [
        x for x in err.splitlines() if x.startswith("epoch ") and ": loss " in x
    ]
    quiet = tmp_path / "quiet"
    fit(make_cfg(shared_tiny_tree), quiet, progress=False)
    assert capfd.readouterr().err == ""
    assert sum(": loss " in x for x in (quiet / "train.log").read_text().splitlines()) == 2


def test_progress_lines_every_interval_on_long_epochs(tmp_path: Path) -> None:
    """Periodic lines while an epoch runs (time-based), and none for a short wait."""
    import io

    from hazardseg.progress import Progress

    stream = io.StringIO()
    bar = Progress(10, "epoch 1/1", unit="it", every_s=0.0, bar=False, stream=stream,
                   log_file=tmp_path / "log.txt")  # fmt: skip
    for _ in range(3):
        bar.update(1, loss="0.5")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and lines[0].startswith("epoch 1/1: 1/10 it (")
    assert "loss 0.5" in lines[-1] and "3/10" in lines[-1]
    assert (tmp_path / "log.txt").read_text().splitlines() == lines
    stream = io.StringIO()
    with Progress(10, "short", bar=False, stream=stream) as quick:
        quick.update(10)
    assert stream.getvalue() == ""  # shorter than the interval: nothing shown
