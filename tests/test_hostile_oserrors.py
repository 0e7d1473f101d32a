"""OS errors in every command: a read-only --out, a full disk, --out that is an existing file.

Each ends in one line ``hazardseg: error: PATH: reason`` with exit 2, no traceback and no
half-written or temporary file. The tests run as any user (also root, who ignores file
permissions), so permission and disk-full errors are injected at the OS calls.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_tiny_tree
from hazardseg.io import atomic_write_text
from hostile_helpers import assert_one_line_error, make_checkpoint, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN_SETS = [
    "model.name=lraspp_mobilenet_v3",
    "data.num_workers=0",
    "augment.crop_size=32",
    "train.epochs=1",
    "train.batch_size=2",
]


def _below(path: object, folder: Path) -> bool:
    try:
        Path(os.fspath(path)).resolve().relative_to(folder.resolve())
    except (ValueError, TypeError):
        return False
    return True


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch):
    """``read_only(folder)`` makes creating files or folders below ``folder`` fail with
    EACCES, as a read-only folder does for a non-root user."""

    def install(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        real_mkdir, real_mkstemp, real_open = os.mkdir, tempfile.mkstemp, os.open

        def mkdir(path, *args, **kwargs):
            if _below(path, folder) and not os.path.isdir(path):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            return real_mkdir(path, *args, **kwargs)

        def mkstemp(*args, **kwargs):
            d = kwargs.get("dir")
            if d is not None and _below(d, folder):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(d))
            return real_mkstemp(*args, **kwargs)

        def os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _below(path, folder):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(os, "open", os_open)
        return folder

    return install


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch):
    """``disk_full(folder)`` makes every atomic write below ``folder`` fail with ENOSPC (a
    failed write names no file, as the OS reports it) after its data was written."""

    def install(folder: Path) -> Path:
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if _below(dst, folder):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)
        return folder

    return install


def _no_partial_files(folder: Path) -> None:
    leftovers = [p for p in folder.rglob("*") if p.is_file()]
    assert not [p for p in leftovers if p.name.endswith(".tmp")], leftovers


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("oserr")
    root = make_tiny_tree(base / "sh", counts={"train": 2, "validation": 2, "test": 2})
    ckpt = make_checkpoint(base / "ckpt" / "best.pt")
    img = base / "img.png"
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(img)
    run = base / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"kind": "val", "epoch": 0, "miou": 0.5}\n')
    cfg = base / "cfg.yaml"
    cfg.write_text("train: {epochs: 1}\n")
    return {"base": base, "root": root, "ckpt": ckpt, "img": img, "run": run, "cfg": cfg}


def _commands(s: dict[str, Path], out: Path) -> dict[str, list[object]]:
    """Each command writing below ``out``."""
    train = ["train", "-c", s["cfg"], "--data", s["root"], "--out", out, "--no-progress"]
    for item in TRAIN_SETS:
        train += ["--set", item]
    ckpt, root = s["ckpt"], s["root"]
    return {
        "evaluate": ["evaluate", "--checkpoint", ckpt, "--data", root, "--methods", "msp",
                     "--out", out, "--quiet"],
        "predict": ["predict", "--checkpoint", ckpt, "--threshold", "0", "--out", out, s["img"]],
        "visualize": ["visualize", "--checkpoint", ckpt, "--data", root, "--out", out,
                      "--samples", "1"],
        "train": train,
        "report": ["report", s["run"], "--out", out / "report.html"],
        "synth": ["data", "synth", out / "ds", "--train", "1", "--val", "1", "--test", "1",
                  "--size", "32x24", "--quiet"],
        "stats": ["data", "stats", root, "--split", "test", "--out", out / "c.png",
                  "--no-progress"],
        "preview": ["data", "preview", root, "--split", "test", "-n", "1", "--out", out / "p.png"],
    }  # fmt: skip


COMMANDS = ["evaluate", "predict", "visualize", "train", "report", "synth", "stats", "preview"]


@pytest.mark.parametrize("command", COMMANDS)
def test_read_only_out(
    setup: dict[str, Path], read_only, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    out = read_only(setup["base"] / f"ro_{command}")
    code, _, err = run_cli(_commands(setup, out)[command], capsys)
    line = assert_one_line_error(code, err, out)
    assert "permission denied" in line.lower()
    assert list(out.rglob("*")) == []


@pytest.mark.parametrize("command", ["evaluate", "predict", "train", "report", "synth"])
def test_disk_full(
    setup: dict[str, Path], disk_full, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    out = disk_full(setup["base"] / f"full_{command}")
    code, _, err = run_cli(_commands(setup, out)[command], capsys)
    line = assert_one_line_error(code, err, out)
    assert "no space left" in line.lower()
    if out.exists():
        _no_partial_files(out)


@pytest.mark.parametrize("command", ["evaluate", "predict", "visualize", "train", "synth"])
def test_out_is_an_existing_file(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str], command: str
) -> None:
    out = setup["base"] / f"file_{command}"
    out.write_text("mine")
    code, _, err = run_cli(_commands(setup, out)[command], capsys)
    assert_one_line_error(code, err, out)
    assert out.read_text() == "mine"


def test_parent_of_out_is_a_file(setup: dict[str, Path], capsys) -> None:
    blocker = setup["base"] / "blocker"
    blocker.write_text("mine")
    code, _, err = run_cli(_commands(setup, blocker / "sub")["report"], capsys)
    assert_one_line_error(code, err, blocker)
    assert blocker.read_text() == "mine"


def test_atomic_write_failure_leaves_no_temp_file_and_names_the_path(
    tmp_path: Path, disk_full
) -> None:
    disk_full(tmp_path)
    target = tmp_path / "x.txt"
    with pytest.raises(OSError) as exc:
        atomic_write_text(target, "data")
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_debug_keeps_the_traceback(setup: dict[str, Path], read_only, capsys) -> None:
    out = read_only(setup["base"] / "ro_debug")
    code, _, err = run_cli(["--debug", *_commands(setup, out)["report"]], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" in err
    assert last.startswith("hazardseg: error:") and str(out) in last


def test_disk_full_while_training_writes_a_checkpoint(
    setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """torch.save reports a full disk as a RuntimeError of its zip writer ("unexpected pos"
    when it closes the archive): one line naming the checkpoint, no temporary left."""
    import shutil

    import hazardseg.io
    import hazardseg.models.checkpoint as checkpoint

    def full_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    out = setup["base"] / "full_ckpt"
    monkeypatch.setattr(checkpoint.torch, "save", full_save)
    usage = shutil.disk_usage(setup["base"])
    monkeypatch.setattr(hazardseg.io.shutil, "disk_usage", lambda _: usage._replace(free=4096))
    code, _, err = run_cli(_commands(setup, out)["train"], capsys)
    line = assert_one_line_error(code, err, "best.pt")
    assert "no space left" in line.lower()
    _no_partial_files(out)
