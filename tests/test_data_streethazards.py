"""Tests of the StreetHazards Dataset and layout discovery on tiny hand-made trees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from conftest import make_tiny_tree
from hazardseg.data import classes
from hazardseg.data.streethazards import (
    CLASS_NAMES,
    IGNORE_INDEX,
    Sample,
    StreetHazards,
    discover_samples,
    natural_key,
    read_odgt,
)
from hazardseg.errors import DataError


def _raw_label(root: Path, split: str, rel: str) -> np.ndarray:
    top, sub = classes.SPLITS[split]
    return np.asarray(Image.open(root / top / "annotations" / sub / rel))


def test_constants_are_reexported_not_redefined() -> None:
    assert CLASS_NAMES is classes.CLASS_NAMES
    assert IGNORE_INDEX == 255


def test_label_mapping_and_types(shared_tiny_tree: Path) -> None:
    ds = StreetHazards(shared_tiny_tree, "test")
    assert len(ds) == 3
    item = ds[0]
    raw = _raw_label(shared_tiny_tree, "test", item["path"])
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 48, 64)
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (48, 64)
    mask = item["mask"].numpy()
    # hand mapping: PNG 0 -> 255, v -> v - 1
    expected = np.where(raw == 0, 255, raw.astype(np.int64) - 1)
    np.testing.assert_array_equal(mask, expected)
    assert mask[0, 0] == 255 and raw[0, 0] == 0
    assert (raw == 14).any() and (mask[raw == 14] == 13).all()
    assert set(np.unique(mask)) <= set(range(14)) | {255}


def test_image_pixels_match_file(shared_tiny_tree: Path) -> None:
    ds = StreetHazards(shared_tiny_tree, "train")
    s = ds.samples[1]
    ref = np.asarray(Image.open(s.image_path).convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(ds[1]["image"].numpy(), ref)


def test_rel_paths_and_towns(shared_tiny_tree: Path) -> None:
    ds = StreetHazards(shared_tiny_tree, "test")
    assert [s.rel for s in ds.samples] == ["t5/1.png", "t5/3.png", "t6/2.png"]
    s = ds.samples[0]
    assert isinstance(s, Sample)
    assert s.image_path == shared_tiny_tree / "test/images/test/t5/1.png"
    assert s.label_path == shared_tiny_tree / "test/annotations/test/t5/1.png"
    assert StreetHazards(shared_tiny_tree, "validation").samples[0].rel == "t4/1.png"


@pytest.mark.parametrize("odgt", ["lines", "list", None])
def test_odgt_forms_and_scan_agree(tmp_path: Path, odgt: str | None) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"train": 3, "test": 2}, odgt=odgt)
    ds = StreetHazards(root, "train")
    assert [s.rel for s in ds.samples] == ["t1-3/1.png", "t1-3/2.png", "t1-3/3.png"]
    assert (root / "train/train.odgt").exists() == (odgt is not None)


def test_odgt_is_used_when_present(tmp_path: Path) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"train": 3}, odgt="lines")
    odgt = root / "train/train.odgt"
    lines = odgt.read_text().splitlines()
    odgt.write_text(lines[2] + "\n\n" + lines[0] + "\n")  # subset, reordered, blank line
    assert [s.rel for s in StreetHazards(root, "train").samples] == ["t1-3/1.png", "t1-3/3.png"]
    assert len(discover_samples(root, "train", use_odgt=False)) == 3


def test_natural_sort(tmp_path: Path) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"test": 1}, odgt=None)
    img_dir = root / "test/images/test/t5"
    lab_dir = root / "test/annotations/test/t5"
    for n in (2, 10, 11):
        for d in (img_dir, lab_dir):
            (d / f"{n}.png").write_bytes((d / "1.png").read_bytes())
    rels = [s.rel for s in StreetHazards(root, "test").samples]
    assert rels == ["t5/1.png", "t5/2.png", "t5/10.png", "t5/11.png"]
    assert sorted(["a10", "a9", "b1"], key=natural_key) == ["a9", "a10", "b1"]


def test_rgba_input_is_dropped_to_rgb(tmp_path: Path) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"train": 1}, rgba=True)
    assert Image.open(root / "train/images/training/t1-3/1.png").mode == "RGBA"
    item = StreetHazards(root, "train")[0]
    assert item["image"].shape == (3, 48, 64)


def test_max_images(shared_tiny_tree: Path) -> None:
    assert len(StreetHazards(shared_tiny_tree, "train", max_images=2)) == 2
    assert len(StreetHazards(shared_tiny_tree, "train", max_images=100)) == 4
    with pytest.raises(DataError, match="max_images"):
        StreetHazards(shared_tiny_tree, "train", max_images=0)


def test_transform_receives_pil_and_default_collate(shared_tiny_tree: Path) -> None:
    seen = {}

    def transform(image: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        seen["modes"] = (image.mode, mask.mode)
        img = torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy()).float() / 255
        return img, torch.from_numpy(np.asarray(mask).astype(np.int64))

    ds = StreetHazards(shared_tiny_tree, "test", transform=transform)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert seen["modes"] == ("RGB", "L")
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (2, 3, 48, 64)
    assert batch["mask"].shape == (2, 48, 64) and int(batch["mask"].max()) == 255
    assert batch["path"] == ["t5/1.png", "t5/3.png"]


def test_read_odgt_bad_json(tmp_path: Path) -> None:
    p = tmp_path / "x.odgt"
    p.write_text('{"fpath_img": "a"\n')
    with pytest.raises(DataError, match=r"x\.odgt:1"):
        read_odgt(p)
    p.write_text(json.dumps([{"foo": 1}]))
    with pytest.raises(DataError, match="fpath_img"):
        read_odgt(p)


def test_wrong_root_and_split(tmp_path: Path, shared_tiny_tree: Path) -> None:
    with pytest.raises(DataError, match="dataset root not found"):
        StreetHazards(tmp_path / "nope", "train")
    with pytest.raises(DataError, match="unknown split 'val'"):
        StreetHazards(shared_tiny_tree, "val")
    root = make_tiny_tree(tmp_path / "sh", counts={"train": 1}, odgt=None)
    with pytest.raises(DataError, match=r"test/images/test: folder of split 'test' not found"):
        StreetHazards(root, "test")


@pytest.mark.parametrize("odgt", ["lines", None])
def test_image_without_annotation(tmp_path: Path, odgt: str | None) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"train": 2}, odgt=odgt)
    (root / "train/annotations/training/t1-3/2.png").unlink()
    with pytest.raises(DataError, match=r"annotations/training/t1-3/2.png: annotation of .* not"):
        StreetHazards(root, "train")


def test_corrupt_png_and_out_of_range_label(tmp_path: Path) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"train": 2})
    img = root / "train/images/training/t1-3/1.png"
    img.write_bytes(img.read_bytes()[:60])
    lab = root / "train/annotations/training/t1-3/2.png"
    arr = np.asarray(Image.open(lab)).copy()
    arr[3, 3] = 20
    Image.fromarray(arr).save(lab)
    ds = StreetHazards(root, "train")
    with pytest.raises(DataError, match=r"t1-3/1.png: unreadable or corrupt image"):
        ds[0]
    with pytest.raises(DataError, match=r"t1-3/2.png: label values \[20\] outside 0..14"):
        ds[1]


def test_size_mismatch(tmp_path: Path) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"train": 1})
    lab = root / "train/annotations/training/t1-3/1.png"
    Image.fromarray(np.ones((10, 12), np.uint8)).save(lab)
    with pytest.raises(DataError, match="size 12x10 differs from image 64x48"):
        StreetHazards(root, "train")[0]
