"""Tests of ``data check``, ``data stats`` and ``data preview`` on tiny trees."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_tiny_tree
from hazardseg.cli import main
from hazardseg.data.check import check_dataset
from hazardseg.data.classes import SPLITS
from hazardseg.data.preview import preview_layout
from hazardseg.data.stats import class_pixel_counts

TRAIN_IMG = "train/images/training/t1-3"
TRAIN_LAB = "train/annotations/training/t1-3"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tiny_tree(tmp_path / "sh", counts={"train": 2, "validation": 1, "test": 2})


def _run_check(root: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["data", "check", str(root), "--no-progress", *extra])
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def test_clean_tree_passes(shared_tiny_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run_check(shared_tiny_tree, capsys)
    assert code == 0 and "OK:" in out
    report = check_dataset(shared_tiny_tree)
    assert report.ok
    s = report.splits["test"]
    assert (s.num_images, s.towns, s.image_sizes) == (3, ["t5", "t6"], {(64, 48): 3})
    assert 14 in s.label_values and 14 not in report.splits["train"].label_values
    assert 0 in s.label_values and s.odgt


def test_check_with_workers_matches(shared_tiny_tree: Path) -> None:
    a = check_dataset(shared_tiny_tree, workers=1)
    b = check_dataset(shared_tiny_tree, workers=2)
    assert a.splits == b.splits and a.problems == b.problems == []


def test_missing_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"train": 1, "validation": 1})
    code, out = _run_check(root, capsys)
    assert code == 1
    assert "test/images/test: missing split 'test'" in out
    code, out = _run_check(root, capsys, "--split", "train", "--split", "validation")
    assert code == 0


def test_image_without_annotation(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tree / TRAIN_LAB / "2.png").unlink()
    code, out = _run_check(tree, capsys, "-s", "train")
    assert code == 1
    assert f"{TRAIN_IMG}/2.png: image without annotation (expected " in out


def test_annotation_without_image(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tree / TRAIN_IMG / "1.png").unlink()
    code, out = _run_check(tree, capsys, "-s", "train")
    assert code == 1
    assert f"{TRAIN_LAB}/1.png: annotation without image" in out


def test_corrupt_image_png(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tree / TRAIN_IMG / "1.png"
    p.write_bytes(p.read_bytes()[:-30])  # truncated: header still readable
    code, out = _run_check(tree, capsys, "-s", "train")
    assert code == 1 and f"{TRAIN_IMG}/1.png: unreadable or corrupt PNG" in out


def test_corrupt_label_png(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tree / TRAIN_LAB / "1.png").write_bytes(b"not a png at all")
    code, out = _run_check(tree, capsys, "-s", "train")
    assert code == 1 and f"{TRAIN_LAB}/1.png: unreadable or corrupt PNG" in out


def test_label_value_out_of_range(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tree / TRAIN_LAB / "2.png"
    arr = np.asarray(Image.open(p)).copy()
    arr[5, 5], arr[6, 6] = 15, 200
    Image.fromarray(arr).save(p)
    code, out = _run_check(tree, capsys, "-s", "train")
    assert code == 1 and f"{TRAIN_LAB}/2.png: label values [15, 200] outside 0..14" in out


def test_size_mismatch(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image.fromarray(np.full((20, 30), 8, np.uint8)).save(tree / TRAIN_LAB / "1.png")
    code, out = _run_check(tree, capsys, "-s", "train")
    assert code == 1 and f"{TRAIN_LAB}/1.png: size 30x20 differs from image 64x48" in out


def test_anomaly_outside_test(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tree / "train/annotations/validation/t4/1.png"
    arr = np.asarray(Image.open(p)).copy()
    arr[:2, :3] = 14
    Image.fromarray(arr).save(p)
    code, out = _run_check(tree, capsys)
    assert code == 1
    assert "validation/t4/1.png: 6 anomaly pixels (PNG value 14)" in out
    assert out.count("problem:") == 1  # test anomalies are fine


def test_odgt_mismatch(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    odgt = tree / "train/train.odgt"
    odgt.write_text(odgt.read_text().splitlines()[0] + "\n")
    code, out = _run_check(tree, capsys, "-s", "train")
    assert code == 1 and "1 images not listed (first: t1-3/2.png)" in out


def test_check_bad_root_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run_check(tmp_path / "missing", capsys)
    assert code == 2 and "Traceback" not in out
    assert out.strip().startswith("hazardseg: error:") and len(out.strip().splitlines()) == 1


def test_stats_counts_match_hand_count(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    top, sub = SPLITS["test"]
    hand = np.zeros(15, np.int64)
    for p in sorted((tree / top / "annotations" / sub).rglob("*.png")):
        raw = np.asarray(Image.open(p))
        hand[-1] += int((raw == 0).sum())
        for v in range(1, 15):
            hand[v - 1] += int((raw == v).sum())
    counts = class_pixel_counts(tree, "test")
    np.testing.assert_array_equal(counts, hand)
    assert counts.sum() == 2 * 64 * 48 and counts[13] > 0
    assert class_pixel_counts(tree, "test", max_images=1).sum() == 64 * 48
    out_png = tree.parent / "stats.png"
    code = main(["data", "stats", str(tree), "-s", "test", "-o", str(out_png), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and Image.open(out_png).format == "PNG"
    assert re.search(rf"^anomaly +{counts[13]:,d} ", out, re.M)
    assert re.search(rf"^ignore +{counts[14]:,d} ", out, re.M)


@pytest.mark.parametrize("rgba", [False, True])
def test_preview_size(tmp_path: Path, rgba: bool) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"test": 3}, rgba=rgba)
    out = tmp_path / "p.png"
    code = main(["data", "preview", str(root), "-s", "test", "--n", "8", "-o", str(out),
                 "--tile-width", "64", "--seed", "1"])  # fmt: skip
    assert code == 0
    img = Image.open(out)
    w, h, tile_h, _ = preview_layout(3, (64, 48), 64, 2)
    assert tile_h == 48 and w == 4 + 2 * (128 + 8)
    assert img.size == (w, h) and h > 2 * (48 + 14)


def test_preview_bad_split_and_n(shared_tiny_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.png"
    assert main(["data", "preview", str(shared_tiny_tree), "-s", "val", "-o", str(out)]) == 2
    assert main(["data", "preview", str(shared_tiny_tree), "--n", "0", "-o", str(out)]) == 2
    assert not out.exists()
