"""Hostile paths: .odgt entries that climb out of the root, archives that collide with the
tree, colliding output names, ablation variant names; nothing is written outside --out."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_tiny_tree
from hazardseg.config import ExperimentConfig
from hazardseg.data.inputs import collect_images
from hazardseg.data.streethazards import StreetHazards, discover_samples
from hazardseg.errors import ConfigError, DataError
from hazardseg.workflows.ablation import Grid, load_grid, variant_configs
from hostile_helpers import (
    assert_one_line_error,
    make_checkpoint,
    new_paths_outside,
    run_cli,
    snapshot,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rewrite_odgt(root: Path, edits: dict[int, dict[str, str]]) -> Path:
    """Change entries (0-based line -> fields) of ROOT/test.odgt (one object per line)."""
    odgt = root / "test" / "test.odgt"
    lines = odgt.read_text().splitlines()
    for i, fields in edits.items():
        entry = json.loads(lines[i])
        entry.update(fields)
        lines[i] = json.dumps(entry)
    odgt.write_text("\n".join(lines) + "\n")
    return odgt


def test_odgt_dotdot_inside_root_gives_clean_keys(tiny_tree: Path) -> None:
    _rewrite_odgt(
        tiny_tree, {0: {"fpath_img": "test/images/test/../../../test/images/test/t5/1.png"}}
    )
    samples = discover_samples(tiny_tree, "test")
    rels = [s.rel for s in samples]
    assert "t5/1.png" in rels
    for s in samples:
        assert ".." not in Path(s.rel).parts and not Path(s.rel).is_absolute()
        assert ".." not in s.image_path.parts


def test_odgt_listing_an_image_twice(tiny_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    odgt = tiny_tree / "test" / "test.odgt"
    first = json.loads(odgt.read_text().splitlines()[0])
    first["fpath_img"] = first["fpath_img"].replace("test/t5", "test/../test/t5")
    with odgt.open("a") as fh:
        fh.write(json.dumps(first) + "\n")
    rels = [s.rel for s in discover_samples(tiny_tree, "test")]
    assert len(rels) == len(set(rels)) == 3
    code, _, err = run_cli(["data", "check", tiny_tree, "--split", "test", "--no-progress"], capsys)
    assert code == 1 and f"{odgt}:4" in err and "listed again" in err


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fpath_img", "test/images/test/../../../outside/1.png"),
        ("fpath_segm", "../outside/1.png"),
        ("fpath_segm", "/etc/hostname"),
        ("fpath_img", "C:\\\\images\\\\1.png"),
        ("fpath_img", 5),
    ],
)
def test_odgt_paths_outside_root_are_refused(
    tiny_tree: Path, capsys: pytest.CaptureFixture[str], field: str, value: object
) -> None:
    outside = tiny_tree.parent / "outside"
    outside.mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(outside / "1.png")
    odgt = _rewrite_odgt(tiny_tree, {1: {field: value}})
    with pytest.raises(DataError, match=f"{odgt}:2"):
        StreetHazards(tiny_tree, "test")
    code, _, err = run_cli(["data", "check", tiny_tree, "--split", "test", "--no-progress"], capsys)
    assert code == 1
    problems = [line for line in err.splitlines() if f"{odgt}:2" in line]
    assert len(problems) == 1 and field in problems[0], err


def test_data_check_reports_every_violation_with_its_line(
    tiny_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odgt = _rewrite_odgt(
        tiny_tree, {0: {"fpath_segm": "../../x.png"}, 2: {"fpath_img": "/abs/1.png"}}
    )
    code, _, err = run_cli(["data", "check", tiny_tree, "--split", "test", "--no-progress"], capsys)
    assert code == 1
    assert f"{odgt}:1" in err and f"{odgt}:3" in err and "Traceback" not in err


def test_evaluate_and_predict_write_only_below_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"test": 3})
    _rewrite_odgt(root, {0: {"fpath_img": "test/images/test/../../../test/images/test/t5/1.png"}})
    ckpt = make_checkpoint(tmp_path / "ckpt" / "best.pt")
    before = snapshot(tmp_path)
    out = tmp_path / "work" / "eval"
    code, _, err = run_cli(
        [
            "evaluate",
            "--checkpoint",
            ckpt,
            "--data",
            root,
            "--methods",
            "msp,max_logit",
            "--out",
            out,
            "--save-maps",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    after = snapshot(tmp_path)
    assert new_paths_outside(before, after, "work/eval") == []
    assert all(".." not in p for p in after)
    pout = tmp_path / "work" / "pred"
    code, _, err = run_cli(
        ["predict", "--checkpoint", ckpt, "--threshold", "0", "--out", pout, root / "test"],
        capsys,
    )
    assert code == 0, err
    assert new_paths_outside(after, snapshot(tmp_path), "work/pred") == []


def _tar(path: Path, members: dict[str, bytes | None]) -> Path:
    """A tar with files (bytes) and folders (None)."""
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    ("members", "conflict"),
    [
        ({"test/images": b"a file where ROOT has a folder"}, "test/images"),
        ({"test/test.odgt/x": b"a folder where ROOT has a file"}, "test/test.odgt"),
        ({"test/test.odgt": b"other content"}, "test/test.odgt"),
    ],
)
def test_archive_conflicts_leave_the_tree_untouched(
    tiny_tree: Path, capsys: pytest.CaptureFixture[str], members: dict, conflict: str
) -> None:
    archive = _tar(tiny_tree.parent / "a.tar", {"test/new.txt": b"new", **members})
    before = snapshot(tiny_tree)
    code, _, err = run_cli(
        ["data", "download", tiny_tree, "--from-archive", archive, "--no-progress"], capsys
    )
    assert_one_line_error(code, err, tiny_tree / conflict)
    assert snapshot(tiny_tree) == before


def test_archive_identical_files_are_kept_and_new_ones_added(tiny_tree: Path) -> None:
    from hazardseg.data.download import extract_archive

    odgt = (tiny_tree / "test" / "test.odgt").read_bytes()
    archive = _tar(tiny_tree.parent / "a.tar", {"test/test.odgt": odgt, "test/extra/n.txt": b"n"})
    assert extract_archive(archive, tiny_tree) == ["test"]
    assert (tiny_tree / "test" / "extra" / "n.txt").read_bytes() == b"n"
    assert not list(tiny_tree.glob(".hazardseg-extract-*"))


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "/abs", ".hidden", "ablation.json"])
def test_ablation_variant_names_that_are_paths_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps({"variants": {name: {}}}))
    with pytest.raises(ConfigError, match="variant name"):
        load_grid(grid)
    with pytest.raises(ConfigError, match="variant name"):
        variant_configs(ExperimentConfig(), Grid({name: {}}, [0]))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data: {root: nowhere}\n")
    out = tmp_path / "abl"
    code, _, err = run_cli(["ablate", "--config", cfg, "--grid", grid, "--out", out], capsys)
    assert_one_line_error(code, err, grid)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml", "grid.yaml"]


def test_ablation_case_only_different_names_are_refused(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps({"variants": {"Base": {}, "base": {}}}))
    with pytest.raises(ConfigError, match="differ only in case"):
        load_grid(grid)


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


def test_predict_output_names_never_collide(tmp_path: Path) -> None:
    files = [_png(tmp_path / d / n) for d, n in (("x", "a.png"), ("y", "a.png"), ("z", "a_2.png"))]
    keys = [k for _, k in collect_images(files)]
    assert len(set(keys)) == 3 and keys[0] == "a" and keys[2] == "a_2"
    upper = [_png(tmp_path / "u" / "A.png"), _png(tmp_path / "l" / "a.png")]
    keys = [k.lower() for _, k in collect_images(upper)]
    assert len(set(keys)) == 2
    folder_keys = [k for _, k in collect_images([tmp_path / "x", tmp_path / "y", files[2]])]
    assert len({k.lower() for k in folder_keys}) == 3
    for _, key in collect_images([tmp_path]):
        assert ".." not in Path(key).parts and not Path(key).is_absolute()


def test_predict_three_colliding_inputs_give_three_results(tmp_path: Path) -> None:
    from hazardseg.inference.predict import PredictOptions, predict
    from hazardseg.inference.predictor import MapPredictor

    files = [_png(tmp_path / d / n) for d, n in (("x", "a.png"), ("y", "a.png"), ("z", "a_2.png"))]
    ckpt = make_checkpoint(tmp_path / "best.pt")
    summary = predict(MapPredictor(ckpt), files, tmp_path / "out", PredictOptions(threshold=0.0))
    seg = {row["files"]["segmentation"] for row in summary["images"]}
    assert len(summary["images"]) == 3 and len(seg) == 3
    assert len(list((tmp_path / "out").glob("*_seg.png"))) == 3
