"""The dataset registry and every dataset's loader: the same frames, images and label arrays
as the benchmark's own loader reads from a tree in the official layout (each reference
reader below follows that benchmark's code), detection, split rules and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.dataset_trees import (
    bdd_tree,
    cityscapes_tree,
    fishyscapes_tree,
    laf_tree,
    road_anomaly_tree,
    smiyc_tree,
)

from hazardseg.cli import main
from hazardseg.data.registry import (
    DATASETS,
    detect_dataset,
    get_dataset,
    list_datasets,
    model_classes,
)
from hazardseg.data.split import DataSource
from hazardseg.errors import DataError


def loaded(source: DataSource, split: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    ds = source.open(split)
    out = []
    for i, sample in enumerate(ds.samples):
        item = ds[i]
        out.append(
            (
                source.dataset.frame_id(sample),
                item["image"].numpy().transpose(1, 2, 0),
                item["mask"].numpy(),
            )
        )
    return out


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def dataset_ra(root: Path, fmt: str, fids: list[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """road-anomaly-benchmark's DatasetRA: frames sorted by name; label = 255, then usual (0)
    -> 0 and anomaly (1) -> 1."""
    out = []
    for fid in sorted(fids):
        sem = np.asarray(Image.open(root / "labels_masks" / f"{fid}_labels_semantic.png"))
        label = np.full(sem.shape, 255, np.uint8)
        label[sem == 0] = 0
        label[sem == 1] = 1
        out.append((fid, rgb(root / "images" / f"{fid}.{fmt}"), label))
    return out


def same(got: list, want: list) -> None:
    assert [g[0] for g in got] == [w[0] for w in want]
    for (fid, image, mask), (_, image_ref, mask_ref) in zip(got, want, strict=True):
        np.testing.assert_array_equal(image, image_ref, err_msg=fid)
        np.testing.assert_array_equal(mask, mask_ref, err_msg=fid)


def test_registry_lists_and_finds_datasets() -> None:
    names = list_datasets()
    for name in (
        "streethazards", "cityscapes", "bdd-anomaly", "smiyc-anomaly", "smiyc-obstacle",
        "fishyscapes-laf", "lostandfound", "road-anomaly",
    ):  # fmt: skip
        assert name in names
    with pytest.raises(DataError, match="did you mean 'smiyc-anomaly'"):
        get_dataset("smiyc-anomali")


def test_road_anomaly_21_frames_and_labels(tmp_path: Path) -> None:
    smiyc_tree(tmp_path, "anomaly")
    source = DataSource.of(tmp_path)
    assert source.dataset.name == "smiyc-anomaly"
    fids = ["validation0000", "validation0001", "validation0002"]
    same(loaded(source, "validation"), dataset_ra(tmp_path, "jpg", fids))
    assert [s.rel for s in source.dataset.samples(tmp_path, "test")] == [
        "cow0000.jpg",
        "zebra0001.jpg",
    ]
    with pytest.raises(DataError, match=r"not public.*--save-maps --maps-format smiyc"):
        source.dataset.require_labels("test")


def test_road_obstacle_21_scene_splits(tmp_path: Path) -> None:
    smiyc_tree(tmp_path, "obstacle")
    source = DataSource.of(tmp_path)
    assert source.dataset.name == "smiyc-obstacle"
    # validation_19* and validation_21..29 are left out, as the benchmark leaves them out
    fids = ["validation_1", "validation_2", "validation_3"]
    same(loaded(source, "validation"), dataset_ra(tmp_path, "webp", fids))
    names = {
        split: [source.dataset.frame_id(s) for s in source.dataset.samples(tmp_path, split)]
        for split in ("test", "night", "snowstorm", "scene-darkasphaltDog", "all")
    }
    assert names["test"] == ["darkasphalt2_2", "gravel_1"]
    assert names["night"] == ["driveway_4"] and names["snowstorm"] == ["snowstorm2_1"]
    assert names["scene-darkasphaltDog"] == ["darkasphalt2_2"]
    assert len(names["all"]) == 10


def test_lostandfound_road_region_and_split_rules(tmp_path: Path) -> None:
    labels = laf_tree(tmp_path)
    source = DataSource.of(tmp_path)
    assert source.dataset.name == "lostandfound"

    def reference(split: str, drop: tuple[int, ...], prefixes: tuple[str, ...]) -> list:
        # DatasetLostAndFound: sorted frames, indices then prefixes dropped; 1 -> 0 (road),
        # 2..200 -> 1 (obstacle), everything else void
        fids = sorted(f for f in labels if f.startswith(("04_", "10_")) == (split == "test"))
        fids = [f for i, f in enumerate(fids) if i not in drop]
        fids = [f for f in fids if not any(f.startswith(p) for p in prefixes)]
        out = []
        for fid in fids:
            scene = fid.rsplit("_", 2)[0]
            sem = labels[fid]
            label = np.full(sem.shape, 255, np.uint8)
            label[sem == 1] = 0
            label[(sem >= 2) & (sem <= 200)] = 1
            out.append(
                (fid, rgb(tmp_path / f"leftImg8bit/{split}/{scene}/{fid}_leftImg8bit.png"), label)
            )
        return out

    same(loaded(source, "test"), reference("test", (), ()))
    same(loaded(source, "test-valid"), reference("test", (17,), ()))
    noknown = reference("test", (17,), ("10_Schlossberg_9_000004",))
    same(loaded(source, "test-noknown"), noknown)
    assert len(noknown) == 18  # 20 frames less index 17 and the bicycle sequence
    assert source.dataset.submission_name("test-noknown") == "LostAndFound-test"


def test_fishyscapes_laf_as_rba_reads_it(tmp_path: Path) -> None:
    labels = fishyscapes_tree(tmp_path)
    source = DataSource.of(tmp_path)
    assert source.dataset.name == "fishyscapes-laf"
    want = []
    for lbl in sorted((tmp_path / "fishyscapes_lostandfound").iterdir()):
        fid = lbl.name[5:-11]
        image = tmp_path / "laf_images" / (lbl.name[5:-10] + "leftImg8bit.png")
        want.append((fid, rgb(image), labels[fid]))
    same(loaded(source, "validation"), want)


def test_road_anomaly_in_frame_list_order(tmp_path: Path) -> None:
    labels = road_anomaly_tree(tmp_path)
    source = DataSource.of(tmp_path)
    names = json.loads((tmp_path / "frame_list.json").read_text())
    want = [
        (n[:-4], rgb(tmp_path / "frames" / n), (labels[n[:-4]] == 2).astype(np.uint8))
        for n in names
    ]  # RbA: label[label == 2] = 1, 0 in-distribution, every pixel evaluated
    same(loaded(source, "test"), want)


def test_cityscapes_train_ids_from_the_package_table(tmp_path: Path) -> None:
    from cityscapesscripts.helpers.labels import id2label

    labels = cityscapes_tree(tmp_path)
    source = DataSource.of(tmp_path)
    assert source.dataset.name == "cityscapes"
    assert source.dataset.class_names[0] == "road" and len(source.dataset.class_names) == 19
    got = loaded(source, "train")
    for stem, _, mask in got:
        trainid = np.vectorize(lambda v: id2label[int(v)].trainId)(labels[stem])
        want = np.where((trainid < 0) | (trainid == 255), 255, trainid)
        np.testing.assert_array_equal(mask, want)
    assert [g[0] for g in got] == sorted(s for s in labels if s.startswith(("aachen", "bochum")))
    with pytest.raises(DataError, match="not public"):
        source.dataset.require_labels("test")


def test_bdd_anomaly_lists_and_labels(tmp_path: Path) -> None:
    labels = bdd_tree(tmp_path)
    with pytest.raises(DataError, match="hazardseg data index"):
        DataSource.of(tmp_path, "bdd-anomaly").open("test")
    assert main(["data", "index", str(tmp_path), "--dataset", "bdd-anomaly"]) == 0
    files = {"train": "train.odgt", "validation": "validation.odgt", "test": "anom.odgt"}
    lists = {s: json.loads((tmp_path / f).read_text()) for s, f in files.items()}
    # create_bdd_dataset.py: one JSON list each; anomalous BDD train images, then val ones
    assert [e["fpath_img"] for e in lists["test"]] == [
        "seg/images/train/tr001-abc1.jpg",
        "seg/images/val/va001-abc1.jpg",
    ]
    assert len(lists["train"]) == 3 and len(lists["validation"]) == 2
    source = DataSource.of(tmp_path)
    assert source.dataset.name == "bdd-anomaly"
    for stem, _, mask in loaded(source, "test"):
        ident = stem
        ref = labels[ident].astype(int) - 1  # dataset.py: segm - 1; OOD 17, 18, 19
        np.testing.assert_array_equal(mask, np.minimum(ref, 17))
    assert source.dataset.labels.num_classes == 17


def test_detection_names_the_closest_layout(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match=r"closest is smiyc-\w+ .*lacks labels_masks"):
        detect_dataset(tmp_path)
    with pytest.raises(DataError, match="dataset root not found"):
        detect_dataset(tmp_path / "nothing")


def test_label_value_outside_the_encoding_names_file_value_and_allowed_set(
    tmp_path: Path,
) -> None:
    smiyc_tree(tmp_path, "anomaly")
    bad = tmp_path / "labels_masks" / "validation0000_labels_semantic.png"
    values = np.asarray(Image.open(bad)).copy()
    values[0, 0] = 7
    Image.fromarray(values).save(bad)
    source = DataSource.of(tmp_path)
    with pytest.raises(DataError, match=r"validation0000_labels_semantic.png: label value\(s\) 7 "
                       r"outside .* \(allowed: 0-1, 255\)"):  # fmt: skip
        source.open("validation")[0]


def test_checkpoint_classes_against_a_dataset_with_other_classes(tmp_path: Path) -> None:
    from hazardseg.evaluation.passes import scored_classes
    from hazardseg.models import create_model
    from hazardseg.models.checkpoint import LoadedCheckpoint

    cityscapes_tree(tmp_path / "cs")
    smiyc_tree(tmp_path / "ra", "anomaly")
    net = create_model("lraspp_mobilenet_v3", num_classes=13)
    info = {"num_classes": 13, "class_names": list(get_dataset("streethazards").class_names)}
    ckpt = LoadedCheckpoint(tmp_path / "m.pt", net, info)
    with pytest.raises(DataError, match=r"predicts 13 classes .* cityscapes labels 19 classes"):
        scored_classes(ckpt, DataSource.of(tmp_path / "cs"), "val")
    # an anomaly-only set needs no class labels
    assert scored_classes(ckpt, DataSource.of(tmp_path / "ra"), "validation") is None


def test_model_classes_draw_with_the_training_dataset() -> None:
    assert model_classes("cityscapes", None, 19) is DATASETS["cityscapes"]
    assert model_classes(None, None, 13) is DATASETS["streethazards"]
    other = model_classes("cityscapes", ["a", "b"], 2)
    assert other.class_names == ("a", "b")


def test_datasets_command_lists_every_dataset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in list_datasets():
        assert name in out
    assert "test (hidden)" in out
