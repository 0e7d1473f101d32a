"""Multi-process tests: a 2-process gloo run through torchrun, and SIGKILL during a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hazardseg.models.checkpoint import load_checkpoint, load_model
from test_training_fit import BASE, reference_miou, rows

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _train_args(root: Path, run: Path, *extra: str) -> list[str]:
    args = ["train", "--data", str(root), "--out", str(run), "--no-progress"]
    args += ["-c", str(Path(__file__).parent.parent / "configs" / "synthetic_cpu.yaml")]
    fixed = ["eval.resize=native", "train.class_weights=false", "train.val_every_epochs=1"]
    for item in [*BASE, *fixed, *extra]:
        args += ["--set", item]
    return args


def test_torchrun_two_processes_gloo(
    shared_tiny_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "hazardseg", *_train_args(shared_tiny_tree, run)]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # only rank 0 reports
    assert proc.stdout.count("best val mIoU") == 1, proc.stdout
    last = load_checkpoint(run / "last.pt")
    assert last["extra"]["world_size"] == 2
    # 4 training images, batch 2 per process, 2 processes: one step per epoch
    assert last["extra"]["run_state"]["global_iter"] == 2 and last["epoch"] == 2
    r = rows(run)
    assert [(x["kind"], x["iteration"]) for x in r] == [("train", 1), ("val", 1),
                                                          ("train", 2), ("val", 2)]  # fmt: skip
    assert not list(run.glob(".*.tmp"))
    # the all-reduced confusion matrix covers the whole validation split (one image per rank)
    model, _ = load_model(run / "best.pt")
    best = max(x["miou"] for x in r if x["kind"] == "val")
    assert reference_miou(model, shared_tiny_tree) == pytest.approx(best, abs=1e-9)
    # continuing this 2-process run in 1 process would change the schedule: refused
    from hazardseg.cli import main

    capsys.readouterr()
    assert main([*_train_args(shared_tiny_tree, run, "train.epochs=3"), "--resume"]) == 2
    assert "trained with 2 process(es); resume it with the same number" in capsys.readouterr().err


def test_sigkill_leaves_loadable_checkpoint_and_resume_completes(
    shared_tiny_tree: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    args = _train_args(shared_tiny_tree, run, "train.epochs=3")
    cmd = [sys.executable, "-m", "hazardseg", *args]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "run finished before it could be killed"
    ckpt = load_checkpoint(run / "last.pt")  # complete, never torn
    assert ckpt["epoch"] >= 1
    assert isinstance(ckpt["model"]["classifier.low_classifier.weight"], torch.Tensor)

    from hazardseg.cli import main

    assert main([*args, "--resume"]) == 0
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 3 and last["extra"]["run_state"]["finished"]
    r = rows(run)
    val = [x for x in r if x["kind"] == "val"]
    assert [x["epoch"] for x in val] == [1, 2, 3]
    iters = [x["iteration"] for x in r if x["kind"] == "train"]
    assert iters == sorted(iters) and len(iters) == len(set(iters)) == 6
    assert not list(run.glob(".*.tmp"))
    json.dumps(r)


def test_torchrun_two_processes_mask2former_with_outliers(
    shared_tiny_tree: Path, tmp_path: Path
) -> None:
    """The set-prediction loss and RbA's outlier objective under DDP: every parameter gets a
    gradient on every rank (DDP fails otherwise), and only rank 0 writes."""
    run = tmp_path / "run"
    extra = [
        "model.name=mask2former_tiny", "model.num_queries=6", "model.decoder_layers=2",
        "train.lr=0.001", "train.outliers.source=synthetic", "train.outliers.objective=rba",
        "train.outliers.prob=1.0", "train.outliers.m_in=-1", "train.outliers.m_out=-0.1",
        "train.outliers.weight=1",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "hazardseg", *_train_args(shared_tiny_tree, run, *extra)]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best val mIoU") == 1, proc.stdout
    last = load_checkpoint(run / "last.pt")
    assert last["model_name"] == "mask2former_tiny" and last["extra"]["world_size"] == 2
    assert last["extra"]["run_state"]["global_iter"] == 2
    r = rows(run)
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in r if x["kind"] == "train")
