"""Helpers shared by the tests/test_hostile_*.py files (hostile and broken inputs)."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import torch

from hazardseg.cli import main
from hazardseg.config import ExperimentConfig
from hazardseg.data.classes import KNOWN_CLASS_NAMES
from hazardseg.models import create_model
from hazardseg.models.checkpoint import save_checkpoint


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``hazardseg ARGS`` in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *names: object) -> str:
    """Exit code 2 and stderr of exactly one line ``hazardseg: error: ...`` naming each of
    ``names`` (no traceback, nothing else)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("hazardseg: error:")]
    assert len(errors) == 1 and len(lines) == 1, err
    for name in names:
        assert str(name) in errors[0], (name, errors[0])
    return errors[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> content hash (or "dir"/"other") of everything below ``folder``."""
    out: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = "link"
        elif p.is_dir():
            out[rel] = "dir"
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "other"
    return out


def new_paths_outside(before: dict[str, str], after: dict[str, str], inside: str) -> list[str]:
    """Paths of ``after`` not in ``before``, not below the folder ``inside`` and not one of
    its parent folders."""
    return [
        p
        for p in after
        if p not in before
        and p != inside
        and not p.startswith(inside + "/")
        and not inside.startswith(p + "/")
    ]


def make_checkpoint(path: Path) -> Path:
    """An untrained LR-ASPP MobileNetV3 hazardseg checkpoint (native resize)."""
    torch.manual_seed(0)
    cfg = ExperimentConfig()
    cfg.eval.resize = "native"
    save_checkpoint(
        path,
        create_model("lraspp_mobilenet_v3"),
        model_name="lraspp_mobilenet_v3",
        class_names=list(KNOWN_CLASS_NAMES),
        config=cfg,
        epoch=1,
        best_metric=0.0,
        rng=False,
    )
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width`` x ``height`` RGB pixels (a few rows of data):
    decoding it would allocate the full image."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress((b"\x00" + b"\x00" * 3 * min(width, 256)) * 4)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")
    )
    return path
