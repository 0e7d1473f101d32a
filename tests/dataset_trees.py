"""Tiny hand-made trees in the official layout of every registered dataset (no generator):
each builder writes random blocky images and labels in the dataset's own file encoding and
returns what it wrote, so tests can compare the loaders with the benchmarks' own reading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 40, 24


def _image(rng: np.random.Generator, path: Path, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    if fmt == "PNG":
        Image.fromarray(arr).save(path, format="PNG")
    elif fmt == "WEBP":
        Image.fromarray(arr).save(path, format="WEBP", lossless=True)
    else:
        Image.fromarray(arr).save(path, format="JPEG", quality=95)


def _label(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), "L").save(path)


def _blocks(rng: np.random.Generator, choices: list[int], anomaly: int | None) -> np.ndarray:
    lab = rng.choice(np.asarray(choices), size=(H // 4, W // 4)).repeat(4, 0).repeat(4, 1)
    if anomaly is not None:
        lab[8:14, 10:18] = anomaly
    return lab.astype(np.uint8)


def smiyc_tree(root: Path, track: str, seed: int = 0) -> dict[str, np.ndarray]:
    """RoadAnomaly21 (``anomaly``) or RoadObstacle21 (``obstacle``): validation frames with
    0/1/255 labels, test frames without. Returns fid -> label values."""
    rng = np.random.default_rng(seed)
    if track == "anomaly":
        fids = ["validation0001", "validation0000", "cow0000", "zebra0001", "validation0002"]
        fmt, suffix = "JPEG", ".jpg"
    else:
        fids = [
            "validation_1",
            "validation_2",
            "validation_19",
            "validation_195",
            "validation_23",
            "validation_3",
            "gravel_1",
            "driveway_4",
            "snowstorm2_1",
            "darkasphalt2_2",
        ]
        fmt, suffix = "WEBP", ".webp"
    labels = {}
    for fid in fids:
        _image(rng, root / "images" / f"{fid}{suffix}", fmt)
        if fid.startswith("validation"):
            lab = _blocks(rng, [0, 0, 255], 1)
            labels[fid] = lab
            _label(root / "labels_masks" / f"{fid}_labels_semantic.png", lab)
    return labels


LAF_SCENES = {"train": ["01_Turmstr_17"], "test": ["04_Maurener_Weg_8", "10_Schlossberg_9"]}


def laf_tree(root: Path, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """LostAndFound: train 3 frames, test ``n_test`` frames over two scenes (one of them
    ``10_Schlossberg_9_000004``, left out of test-noknown). Returns fid -> labelIds."""
    rng = np.random.default_rng(seed)
    labels = {}
    for split, n in (("train", 3), ("test", n_test)):
        for i in range(n):
            scene = LAF_SCENES[split][i % len(LAF_SCENES[split])]
            fid = f"{scene}_{i // 2:06d}_{30 + 10 * i:06d}"
            _image(rng, root / "leftImg8bit" / split / scene / f"{fid}_leftImg8bit.png")
            lab = _blocks(rng, [0, 1, 1], int(rng.choice([2, 7, 43, 200])))
            labels[fid] = lab
            _label(root / "gtCoarse" / split / scene / f"{fid}_gtCoarse_labelIds.png", lab)
    return labels


def fishyscapes_tree(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Fishyscapes LAF in RbA's layout; returns fid -> 0/1/255 labels."""
    rng = np.random.default_rng(seed)
    labels = {}
    fids = ["04_Maurener_Weg_8_000002_000140", "01_Hanns_Klemm_Str_45_000001_000240"]
    for k, fid in enumerate(sorted(fids)):
        _image(rng, root / "laf_images" / f"{fid}_leftImg8bit.png")
        lab = _blocks(rng, [0, 0, 255], 1)
        labels[fid] = lab
        _label(root / "fishyscapes_lostandfound" / f"{k:04d}_{fid}_labels.png", lab)
    return labels


def road_anomaly_tree(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Road Anomaly: frame_list.json (in its own order), frames/*.jpg, 0/2 labels."""
    rng = np.random.default_rng(seed)
    names = ["zebra01_road.jpg", "animals06_sheep_roads_lambs.jpg", "cones02.jpg"]
    labels = {}
    for name in names:
        stem = name[:-4]
        _image(rng, root / "frames" / name, "JPEG")
        lab = _blocks(rng, [0], 2)
        labels[stem] = lab
        _label(root / "frames" / f"{stem}.labels" / "labels_semantic.png", lab)
    (root / "frame_list.json").write_text(json.dumps(names))
    return labels


def cityscapes_tree(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Cityscapes gtFine: train 3 frames over two cities, val 2, test 1 (its label holds no
    classes). Returns stem -> labelIds."""
    rng = np.random.default_rng(seed)
    labels = {}
    cities = {"train": ["aachen", "bochum"], "val": ["frankfurt"], "test": ["berlin"]}
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        for i in range(n):
            city = cities[split][i % len(cities[split])]
            stem = f"{city}_{i:06d}_000019"
            _image(rng, root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            lab = _blocks(rng, [0, 1, 4, 7, 8, 11, 21, 23, 24, 26, 33], None)
            if split == "test":
                lab[:] = 0
            labels[stem] = lab
            _label(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", lab)
    return labels


def bdd_tree(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """BDD-Anomaly (anomaly-seg's data/ folder): 4 BDD train and 3 val images with
    ``train_labels`` values 1..20; one train and one val image hold anomaly values. No lists
    (write them with ``write_indexes``). Returns image id -> label values."""
    rng = np.random.default_rng(seed)
    labels = {}
    for bdd_split, n in (("train", 4), ("val", 3)):
        for i in range(n):
            ident = f"{bdd_split[:2]}{i:03d}-abc{i}"
            _image(rng, root / "seg" / "images" / bdd_split / f"{ident}.jpg", "JPEG")
            anomaly = [18, 20][i % 2] if i == 1 else None
            lab = _blocks(rng, [1, 2, 3, 9, 15, 17], anomaly)
            labels[ident] = lab
            _label(root / "seg" / "train_labels" / bdd_split / f"{ident}_train_id.png", lab)
    return labels
