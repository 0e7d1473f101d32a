"""Atomic IO, class definitions and the CLI shell."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hazardseg.cli import main
from hazardseg.data.classes import (
    ANOMALY_ID,
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    PALETTE,
    colorize,
    ids_to_png,
    png_to_ids,
)
from hazardseg.io import atomic_path, atomic_write_json, atomic_write_text


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert (tmp_path / "x.json").read_text().strip() == '{\n  "a": 1\n}'


def test_label_mapping() -> None:
    png = np.array([[0, 1, 2], [13, 14, 14]], dtype=np.uint8)
    ids = png_to_ids(png)
    assert ids.tolist() == [[IGNORE_INDEX, 0, 1], [12, ANOMALY_ID, ANOMALY_ID]]
    assert ids_to_png(ids).tolist() == png.tolist()
    assert len(CLASS_NAMES) == NUM_CLASSES + 1 == len(PALETTE)
    assert CLASS_NAMES[ANOMALY_ID] == "anomaly"
    rgb = colorize(ids)
    assert rgb.shape == (2, 3, 3)
    assert rgb[0, 1].tolist() == PALETTE[0].tolist()
    assert len({tuple(c) for c in PALETTE.tolist()}) == len(PALETTE)


def test_cli_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert "hazardseg" in capsys.readouterr().out
    assert main(["--help"]) == 0


def test_cli_unknown_command_exits_non_zero() -> None:
    assert main(["no-such-command"]) != 0


def test_console_script_module_entry() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hazardseg", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("hazardseg ")


def test_atomic_write_respects_umask(tmp_path: Path) -> None:
    import os

    from hazardseg import io

    atomic_write_text(tmp_path / "m.txt", "x")
    assert (tmp_path / "m.txt").stat().st_mode & 0o777 == 0o666 & ~io._UMASK
    mask = os.umask(0o022)
    os.umask(mask)
    assert mask == io._UMASK  # reading the umask at import left it unchanged
