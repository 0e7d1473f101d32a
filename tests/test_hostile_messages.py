"""Messages that say what happened: malicious pickles, absurd checkpoint values, files that are
not UTF-8, text where numbers belong, DataLoader worker errors."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from conftest import make_tiny_tree
from hazardseg.cli import error_line
from hazardseg.data.streethazards import StreetHazards
from hazardseg.errors import CheckpointError, DataError
from hazardseg.models.checkpoint import load_checkpoint, load_model
from hostile_helpers import assert_one_line_error, make_checkpoint, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NOT_UTF8 = b"model:\n  name: \xff\xfe\x00bad\n"


class _Payload:
    """Pickles as a call to os.system: loading it with plain pickle would run a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _img(path: Path) -> Path:
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(path)
    return path


def test_malicious_pickle_is_refused_as_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    IMG = _img(tmp_path / "a.png")
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "x": _Payload(marker)}, evil)
    for load in (load_checkpoint, lambda p: load_model(p, model_name="lraspp_mobilenet_v3")):
        with pytest.raises(CheckpointError, match="would run code") as exc:
            load(evil)
        assert "weights_only=False" not in str(exc.value)
    code, _, err = run_cli(
        ["predict", "--checkpoint", evil, "--threshold", "0", "--out", tmp_path / "o", IMG],
        capsys,
    )
    line = assert_one_line_error(code, err, evil, "would run code")
    assert "weights_only=False" not in line and "corrupt" not in line
    assert not marker.exists()


def test_shared_weights_only_loader_for_other_files(tmp_path: Path) -> None:
    from hazardseg.models.weights_only import load_weights_only

    marker = tmp_path / "PWNED"
    evil = tmp_path / "anomaly_state.pt"
    torch.save({"format": 1, "x": _Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="would run code") as exc:
        load_weights_only(evil, "anomaly state file")
    assert "anomaly state file" in str(exc.value) and "weights_only=False" not in str(exc.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "text",
    [
        "Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` "
        "will likely succeed.\nUnsupported global: GLOBAL __main__.Opaque was not an allowed "
        "global by default.",
        "Weights only load failed.\nTrying to load unsupported GLOBAL posix.system whose module "
        "posix is blocked.",
    ],
)
def test_refusal_wording_of_any_torch_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    def fake_load(*_: object, **__: object) -> None:
        raise pickle.UnpicklingError(text)

    monkeypatch.setattr(torch, "load", fake_load)
    path = tmp_path / "x.pt"
    path.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="would run code") as exc:
        load_checkpoint(path)
    assert "weights_only=False" not in str(exc.value) and "re-running" not in str(exc.value).lower()


@pytest.mark.parametrize("value", ["13", "abc", 10**9, -1, 2.5, None])
def test_checkpoint_num_classes_checked_before_allocating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: object
) -> None:
    good = make_checkpoint(tmp_path / "good.pt")
    ckpt = torch.load(good, weights_only=True)
    ckpt["num_classes"] = value
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    IMG = _img(tmp_path / "a.png")
    with pytest.raises(CheckpointError, match="num_classes"):
        load_model(bad)
    code, _, err = run_cli(
        ["predict", "--checkpoint", bad, "--threshold", "0", "--out", tmp_path / "o", IMG],
        capsys,
    )
    assert_one_line_error(code, err, bad, "num_classes")


def test_checkpoint_shapes_checked_before_building(tmp_path: Path) -> None:
    ckpt = torch.load(make_checkpoint(tmp_path / "good.pt"), weights_only=True)
    ckpt["num_classes"] = 1000  # allowed value, but the weights hold 13 classes
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="shape"):
        load_model(tmp_path / "bad.pt")


def test_config_and_grid_files_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_bytes(NOT_UTF8)
    code, _, err = run_cli(["train", "--config", cfg, "--out", tmp_path / "run"], capsys)
    assert_one_line_error(code, err, cfg, "UTF-8")
    good = tmp_path / "good.yaml"
    good.write_text("data: {root: nowhere}\n")
    grid = tmp_path / "grid.yaml"
    grid.write_bytes(b"variants:\n  \xff: {}\n")
    code, _, err = run_cli(
        ["ablate", "--config", good, "--grid", grid, "--out", tmp_path / "abl"], capsys
    )
    assert_one_line_error(code, err, grid, "UTF-8")
    assert not (tmp_path / "run").exists() and not (tmp_path / "abl").exists()


def test_yaml_tags_never_run_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "PWNED"
    cfg = tmp_path / "tag.yaml"
    cfg.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    code, _, err = run_cli(["train", "--config", cfg, "--out", tmp_path / "run"], capsys)
    assert_one_line_error(code, err, cfg)
    assert not marker.exists()


def test_report_with_text_miou_and_non_utf8_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes(NOT_UTF8)
    rows = [
        {"kind": "train", "epoch": 0, "iteration": 1, "loss": 1.0},
        {"kind": "train", "epoch": "one", "iteration": 2, "loss": "abc"},
        {"kind": "val", "epoch": 0, "iteration": 2, "miou": "abc", "iou": {"road": "x"}},
        {"kind": "val", "epoch": 1, "iteration": 4, "miou": 0.25, "iou": {"road": 0.5}},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = run_cli(["report", run], capsys)
    assert code == 0 and "Traceback" not in err, err
    page = (run / "report.html").read_text()
    assert "not valid UTF-8" in page and "invalid value" in page and "25.00%" in page


def test_method_option_that_is_not_a_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"test": 2})
    ckpt = make_checkpoint(tmp_path / "best.pt")
    code, _, err = run_cli(
        [
            "evaluate",
            "--checkpoint",
            ckpt,
            "--data",
            root,
            "--methods",
            "energy",
            "--out",
            tmp_path / "ev",
            "--quiet",
            "--option",
            "energy.temperature=abc",
        ],
        capsys,
    )
    assert_one_line_error(code, err, "temperature", "abc")


def _corrupt_first_image(root: Path, split: str = "train") -> Path:
    ds = StreetHazards(root, split)
    path = ds.samples[0].image_path
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return path


def test_worker_error_is_reduced_to_its_root_cause(tiny_tree: Path) -> None:
    bad = _corrupt_first_image(tiny_tree)
    loader = DataLoader(StreetHazards(tiny_tree, "train"), batch_size=1, num_workers=1)
    with pytest.raises(DataError) as exc:
        list(loader)
    line = error_line(exc.value)
    assert "\n" not in line and str(bad) in line
    assert "Traceback" not in line and "worker process" not in line and ".py" not in line
    assert line.startswith(f"hazardseg: error: {bad}")


def test_train_with_workers_and_a_corrupt_png(
    tiny_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _corrupt_first_image(tiny_tree)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {epochs: 1, batch_size: 2}\n")
    args = ["train", "-c", cfg, "--data", tiny_tree, "--out", tmp_path / "run", "--no-progress"]
    for item in ("model.name=lraspp_mobilenet_v3", "data.num_workers=1", "augment.crop_size=32"):
        args += ["--set", item]
    code, _, err = run_cli(args, capsys)
    line = assert_one_line_error(code, err, bad)
    assert "worker process" not in line and "Original Traceback" not in line
