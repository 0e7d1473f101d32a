"""Tests of the synthetic StreetHazards-format generator and the ``data synth`` command."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hazardseg.cli import main
from hazardseg.data.classes import ANOMALY_ID, CLASS_NAMES, NUM_CLASSES, ODGT_NAMES
from hazardseg.data.synth import generate_dataset, image_seed, parse_size, render_scene
from hazardseg.errors import ConfigError, DataError

SIZE = (96, 64)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def synth_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "sh"
    generate_dataset(root, 6, 3, 12, size=SIZE, seed=3, progress=False)
    return root


@pytest.fixture(scope="module")
def scenes() -> list[tuple[np.ndarray, np.ndarray]]:
    towns = ("t1-3", "t4", "t5", "t6")
    return [render_scene(i, SIZE, towns[i % 4], anomalies=False) for i in range(24)]


def test_layout_counts_and_odgt(synth_tree: Path) -> None:
    assert sorted(p.name for p in (synth_tree / "train/images/training/t1-3").iterdir()) == sorted(
        f"{i}.png" for i in range(1, 7)
    )
    assert len(list((synth_tree / "train/images/validation/t4").iterdir())) == 3
    t5 = list((synth_tree / "test/images/test/t5").iterdir())
    t6 = list((synth_tree / "test/images/test/t6").iterdir())
    assert len(t5) == round(12 * 1024 / 1500) and len(t5) + len(t6) == 12
    for split, n in (("train", 6), ("validation", 3), ("test", 12)):
        lines = (synth_tree / ODGT_NAMES[split]).read_text().splitlines()
        assert len(lines) == n
        for line in lines:
            entry = json.loads(line)
            img = Image.open(synth_tree / entry["fpath_img"])
            seg = Image.open(synth_tree / entry["fpath_segm"])
            assert img.mode == "RGB" and seg.mode == "L"
            assert img.size == seg.size == SIZE == (entry["width"], entry["height"])
            assert entry["fpath_segm"] == entry["fpath_img"].replace("images", "annotations")


def test_label_values_and_anomalies_only_in_test(synth_tree: Path) -> None:
    per_image_anomaly = []
    for split in ("train", "validation", "test"):
        for line in (synth_tree / ODGT_NAMES[split]).read_text().splitlines():
            seg = np.asarray(Image.open(synth_tree / json.loads(line)["fpath_segm"]))
            assert seg.min() >= 1 and seg.max() <= 14
            if split == "test":
                per_image_anomaly.append(bool((seg == 14).any()))
            else:
                assert not (seg == 14).any()
    assert any(per_image_anomaly)
    assert not all(per_image_anomaly), "some test images must have no anomaly"


def test_same_seed_identical_bytes_different_seed_differs(tmp_path: Path, synth_tree: Path) -> None:
    again = tmp_path / "again"
    generate_dataset(again, 6, 3, 12, size=SIZE, seed=3, progress=False)
    assert _digest(again) == _digest(synth_tree)
    other = tmp_path / "other"
    generate_dataset(other, 6, 3, 12, size=SIZE, seed=4, progress=False)
    a, b = _digest(other), _digest(synth_tree)
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a if k.endswith(".png"))


@pytest.mark.slow
def test_workers_give_identical_bytes(tmp_path: Path, synth_tree: Path) -> None:
    par = tmp_path / "par"
    generate_dataset(par, 6, 3, 12, size=SIZE, seed=3, progress=False, workers=2)
    assert _digest(par) == _digest(synth_tree)


def test_per_image_seed_is_order_independent() -> None:
    assert image_seed(0, "train", 5) == image_seed(0, "train", 5)
    seeds = {image_seed(s, sp, i) for s in (0, 1) for sp in ("train", "test") for i in range(50)}
    assert len(seeds) == 200
    a = render_scene(image_seed(0, "test", 7), SIZE, "t5", True)
    b = render_scene(np.random.default_rng(image_seed(0, "test", 7)), SIZE, "t5", True)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_render_scene_shapes_and_ids(scenes: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for rgb, ids in scenes:
        assert rgb.shape == (SIZE[1], SIZE[0], 3) and rgb.dtype == np.uint8
        assert ids.shape == (SIZE[1], SIZE[0]) and ids.dtype == np.uint8
        assert ids.max() < NUM_CLASSES


def test_every_known_class_present_in_most_images(
    scenes: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    present = np.zeros(NUM_CLASSES)
    for _, ids in scenes:
        present += np.bincount(ids.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES] > 0
    share = present / len(scenes)
    missing = {CLASS_NAMES[c]: share[c] for c in range(NUM_CLASSES) if share[c] < 0.5}
    assert not missing, f"classes in fewer than half of the images: {missing}"


def test_class_imbalance_like_streethazards(scenes: list[tuple[np.ndarray, np.ndarray]]) -> None:
    counts = sum(np.bincount(ids.ravel(), minlength=14) for _, ids in scenes)
    frac = counts / counts.sum()
    big = frac[CLASS_NAMES.index("road")] + frac[CLASS_NAMES.index("building")]
    small = sum(frac[CLASS_NAMES.index(n)] for n in ("pole", "traffic sign", "pedestrian"))
    assert big > 0.3
    assert big > 5 * small
    assert small > 0.0


def test_anomaly_colours_differ_from_every_known_class() -> None:
    # Colour histograms (8 levels per channel) of anomaly pixels vs each known class: the
    # anomalies mix several class colours, so no single class matches them; and they avoid
    # the flat saturated colours that a segmentation network scores confidently.
    hist = np.zeros((NUM_CLASSES + 1, 512))
    shares = []
    sat = []
    for seed in range(30):
        rgb, ids = render_scene(seed, SIZE, ("t5", "t6")[seed % 2], anomalies=True)
        q = (rgb // 32).astype(int)
        bins = q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]
        for c in range(NUM_CLASSES + 1):
            hist[c] += np.bincount(bins[ids == c], minlength=512)
        mask = ids == ANOMALY_ID
        shares.append(mask.mean())
        sat.append(rgb.max(axis=2)[mask].astype(int) - rgb.min(axis=2)[mask].astype(int))
    assert hist[ANOMALY_ID].sum() > 500
    p = hist / np.maximum(hist.sum(axis=1, keepdims=True), 1)
    for c in range(NUM_CLASSES):
        assert 0.5 * np.abs(p[ANOMALY_ID] - p[c]).sum() > 0.3, CLASS_NAMES[c]
    assert (np.concatenate(sat) > 150).mean() < 0.05
    assert max(shares) < 0.15 and max(shares) > 0.01


def test_anomalies_leave_known_content_unchanged() -> None:
    for seed in range(8):
        a, la = render_scene(seed, SIZE, "t5", anomalies=True)
        b, lb = render_scene(seed, SIZE, "t5", anomalies=False)
        keep = la != ANOMALY_ID
        assert np.array_equal(a[keep], b[keep]) and np.array_equal(la[keep], lb[keep])


def test_rgba_option(tmp_path: Path) -> None:
    out = generate_dataset(tmp_path / "r", 1, 0, 1, size=SIZE, seed=0, rgba=True, progress=False)
    assert out == tmp_path / "r"
    img = Image.open(tmp_path / "r/train/images/training/t1-3/1.png")
    assert img.mode == "RGBA"
    assert (np.asarray(img)[..., 3] == 255).all()


def test_api_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="n_val"):
        generate_dataset(tmp_path / "a", 1, -1, 0, size=SIZE, progress=False)
    with pytest.raises(ConfigError, match="size"):
        generate_dataset(tmp_path / "a", 1, 0, 0, size=(8, 8), progress=False)
    with pytest.raises(ConfigError, match="town"):
        render_scene(0, SIZE, "t9", False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        generate_dataset(tmp_path / "full", 1, 0, 0, size=SIZE, progress=False)
    generate_dataset(tmp_path / "full", 1, 0, 0, size=SIZE, progress=False, overwrite=True)
    assert (tmp_path / "full" / "keep.txt").exists()
    assert parse_size("320x180") == (320, 180)
    for bad in ("320", "axb", "320x180x3", "10x10"):
        with pytest.raises(ConfigError):
            parse_size(bad)


def test_cli_writes_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = ["data", "synth", str(out), "--train", "2", "--val", "1", "--test", "2"]
    assert main([*args, "--size", "64x48", "--seed", "1", "-q"]) == 0
    assert "wrote 5 images" in capsys.readouterr().out
    assert len((out / ODGT_NAMES["test"]).read_text().splitlines()) == 2
    assert main([*args, "--size", "64x48", "-q"]) == 2
    assert main([*args, "--size", "64x48", "-q", "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--size", "64by48"], "64by48"),
        (["--size", "10x10"], "10x10"),
        (["--train", "-3"], "--train"),
        (["--test", "-1"], "--test"),
    ],
)
def test_cli_bad_arguments_exit_2_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    code = main(["data", "synth", str(tmp_path / "o"), "--train", "1", "-q", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and needle in err
    assert not (tmp_path / "o" / "train").exists()
