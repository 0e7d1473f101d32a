"""Synthetic scenes written in the layout and label encoding of every registered dataset other
than StreetHazards (:mod:`~hazardseg.data.synth.dataset` writes that one).

The scenes are the StreetHazards renderer's; their classes are mapped to each dataset's by
name (Cityscapes' label ids come from the ``cityscapesscripts`` table, BDD-Anomaly's values
from its class list), anomalies to each anomaly encoding. The three counts of ``data synth``
mean, per dataset:

============== =========================== =============================== =====================
dataset        ``--train``                 ``--val``                       ``--test``
============== =========================== =============================== =====================
cityscapes     ``train`` (2 cities)        ``val``                         ``test`` (no labels)
bdd-anomaly    BDD train folder            BDD val folder                  scenes with anomalies
smiyc-anomaly  -                           ``validation`` frames           test frames (no labels)
smiyc-obstacle -                           ``validation`` frames           test scenes (no labels)
fishyscapes-laf -                          ``validation`` frames           -
lostandfound   ``train`` scenes            -                               ``test`` scenes
road-anomaly   -                           -                               the frames
============== =========================== =============================== =====================

BDD-Anomaly's lists are then written with the benchmark's own rule
(:meth:`~hazardseg.data.bdd_anomaly.BDDAnomalyDataset.write_indexes`): every scene with an
anomaly pixel is a test scene.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from hazardseg.data.classes import CLASS_NAMES as SYNTH_NAMES
from hazardseg.data.labels import IGNORE_INDEX
from hazardseg.data.registry import get_dataset
from hazardseg.errors import DataError
from hazardseg.io import atomic_path, atomic_write_text

SYNTH_ANOMALY = SYNTH_NAMES.index("anomaly")
ROAD_NAMES = ("road", "road line")

_CITYSCAPES_NAMES = {
    "unlabeled": "unlabeled",
    "building": "building",
    "fence": "fence",
    "other": "static",
    "pedestrian": "person",
    "pole": "pole",
    "road line": "road",
    "road": "road",
    "sidewalk": "sidewalk",
    "vegetation": "vegetation",
    "car": "car",
    "wall": "wall",
    "traffic sign": "traffic sign",
}
"""Synthetic class -> Cityscapes label name."""

_BDD_NAMES = {**_CITYSCAPES_NAMES, "unlabeled": "other", "other": "other"}
"""Synthetic class -> BDD-Anomaly class name ("other" is BDD's unlabeled)."""

LAF_OBSTACLE_IDS = (2, 3, 10, 30)
"""LostAndFound labelIds given to the synthetic obstacles (crates, pylons, ...)."""


@dataclass(frozen=True)
class Frame:
    """One synthetic frame: the count it belongs to (``train``/``validation``/``test``), its
    index there, where it goes and whether it gets anomalies and a label file."""

    role: str
    index: int
    folder: str
    name: str
    anomalies: bool
    labelled: bool = True


def _lut(mapping: dict[int, int], default: int) -> np.ndarray:
    table = np.full(256, default, dtype=np.uint8)
    for src, dst in mapping.items():
        table[src] = dst
    return table


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(array)
    if fmt == "JPEG":
        image.save(buf, format="JPEG", quality=95)
    elif fmt == "WEBP":
        image.save(buf, format="WEBP", quality=95)
    else:
        image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    with atomic_path(path, durable=False) as tmp:
        tmp.write_bytes(data)


class Layout:
    """How one dataset's synthetic tree is planned and written."""

    dataset = ""
    image_format = "PNG"
    anomaly_in_every_frame = False
    """Whether each frame with anomalies must show one (the anomaly-only evaluation sets)."""

    def plan(self, counts: dict[str, int]) -> list[Frame]:
        """The frames of the given counts."""
        raise NotImplementedError

    def label(self, ids: np.ndarray, frame: Frame) -> np.ndarray:
        """The label file's values for synthetic class ids."""
        raise NotImplementedError

    def paths(self, frame: Frame) -> tuple[str, str | None]:
        """(image path, label path or None) relative to the root."""
        raise NotImplementedError

    def write(self, root: Path, frame: Frame, rgb: np.ndarray, ids: np.ndarray) -> None:
        """Write one frame's image and (when labelled) label file."""
        image_rel, label_rel = self.paths(frame)
        _write(root / image_rel, _encode(rgb, self.image_format))
        if label_rel is not None and frame.labelled:
            _write(root / label_rel, _encode(self.label(ids, frame), "PNG"))

    def finish(self, root: Path, frames: list[Frame]) -> None:
        """Write what the layout needs besides the frames (lists, indexes)."""


def _roles(counts: dict[str, int], used: dict[str, str]) -> list[tuple[str, int, str]]:
    unused = [r for r, n in counts.items() if n and r not in used]
    if unused:
        flags = {"train": "--train", "validation": "--val", "test": "--test"}
        takes = ", ".join(flags[r] for r in used)
        raise DataError(f"{flags[unused[0]]} has no meaning for this dataset (it takes {takes})")
    return [(role, counts[role], used[role]) for role in used]


class CityscapesLayout(Layout):
    dataset = "cityscapes"
    CITIES: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": ("aachen", "bochum"),
        "validation": ("frankfurt",),
        "test": ("berlin",),
    }

    def plan(self, counts: dict[str, int]) -> list[Frame]:
        frames = []
        splits = {"train": "train", "validation": "val", "test": "test"}
        for role, n, split in _roles(counts, splits):
            cities = self.CITIES[role]
            for i in range(n):
                city = cities[i % len(cities)]
                name = f"{city}_{i // len(cities):06d}_000019"
                frames.append(Frame(role, i, f"{split}/{city}", name, False, split != "test"))
        return frames

    def paths(self, frame: Frame) -> tuple[str, str | None]:
        return (
            f"leftImg8bit/{frame.folder}/{frame.name}_leftImg8bit.png",
            f"gtFine/{frame.folder}/{frame.name}_gtFine_labelIds.png",
        )

    def label(self, ids: np.ndarray, frame: Frame) -> np.ndarray:
        from hazardseg.data.cityscapes import label_table

        by_name = label_table().name2label
        table = _lut(
            {i: by_name[_CITYSCAPES_NAMES[n]].id for i, n in enumerate(SYNTH_NAMES[:-1])}, 0
        )
        return table[ids]


class BDDLayout(Layout):
    dataset = "bdd-anomaly"
    image_format = "JPEG"

    def plan(self, counts: dict[str, int]) -> list[Frame]:
        frames = []
        roles = _roles(counts, {"train": "train", "validation": "val", "test": "test"})
        for role, n, folder in roles:
            for i in range(n):
                target = folder if folder != "test" else ("train", "val")[i % 2]
                name = f"{role[:2]}{i:05d}-{i * 7919 % 100000:05d}"
                frames.append(Frame(role, i, target, name, role == "test"))
        return frames

    def paths(self, frame: Frame) -> tuple[str, str | None]:
        return (
            f"seg/images/{frame.folder}/{frame.name}.jpg",
            f"seg/train_labels/{frame.folder}/{frame.name}_train_id.png",
        )

    def label(self, ids: np.ndarray, frame: Frame) -> np.ndarray:
        from hazardseg.data.bdd_anomaly import ANOMALY_VALUES, CLASS_NAMES

        values = {i: 1 + CLASS_NAMES.index(_BDD_NAMES[n]) for i, n in enumerate(SYNTH_NAMES[:-1])}
        values[SYNTH_ANOMALY] = ANOMALY_VALUES[frame.index % len(ANOMALY_VALUES)]
        return _lut(values, 1)[ids]

    def finish(self, root: Path, frames: list[Frame]) -> None:
        get_dataset(self.dataset).write_indexes(root)  # type: ignore[attr-defined]


def _anomaly_track_label(ids: np.ndarray, road_only: bool) -> np.ndarray:
    out = np.zeros(ids.shape, np.uint8)
    if road_only:
        road = np.isin(ids, [SYNTH_NAMES.index(n) for n in ROAD_NAMES])
        out[~road] = IGNORE_INDEX
    else:
        out[ids == SYNTH_NAMES.index("other")] = IGNORE_INDEX
    out[ids == SYNTH_ANOMALY] = 1
    return out


class RoadAnomaly21Layout(Layout):
    dataset = "smiyc-anomaly"
    anomaly_in_every_frame = True
    image_format = "JPEG"
    suffix = ".jpg"
    TEST_NAMES = ("cow", "sheep", "tractor", "piano", "tent")

    def plan(self, counts: dict[str, int]) -> list[Frame]:
        frames = []
        for role, n, _ in _roles(counts, {"validation": "validation", "test": "test"}):
            for i in range(n):
                frames.append(Frame(role, i, "", self.frame_name(role, i), True, role != "test"))
        return frames

    def frame_name(self, role: str, i: int) -> str:
        if role == "validation":
            return f"validation{i:04d}"
        return f"{self.TEST_NAMES[i % len(self.TEST_NAMES)]}{i // len(self.TEST_NAMES):04d}"

    def paths(self, frame: Frame) -> tuple[str, str | None]:
        return f"images/{frame.name}{self.suffix}", f"labels_masks/{frame.name}_labels_semantic.png"

    def label(self, ids: np.ndarray, frame: Frame) -> np.ndarray:
        return _anomaly_track_label(ids, road_only=False)


class RoadObstacle21Layout(RoadAnomaly21Layout):
    dataset = "smiyc-obstacle"
    image_format = "WEBP"
    suffix = ".webp"
    TEST_SCENES = ("curvy-street", "gravel", "motorway", "paving", "driveway", "snowstorm1")

    def frame_name(self, role: str, i: int) -> str:
        if role == "validation":
            return f"validation_{i + 1}"
        return f"{self.TEST_SCENES[i % len(self.TEST_SCENES)]}_{i // len(self.TEST_SCENES) + 1}"

    def label(self, ids: np.ndarray, frame: Frame) -> np.ndarray:
        return _anomaly_track_label(ids, road_only=True)


class LostAndFoundLayout(Layout):
    dataset = "lostandfound"
    anomaly_in_every_frame = True
    SCENES: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": ("01_Turmstr_17", "02_Hanns_Klemm_Str_44"),
        "test": ("04_Maurener_Weg_8",),
    }

    def plan(self, counts: dict[str, int]) -> list[Frame]:
        frames = []
        for role, n, split in _roles(counts, {"train": "train", "test": "test"}):
            scenes = self.SCENES[role]
            for i in range(n):
                scene = scenes[i % len(scenes)]
                name = f"{scene}_{i // len(scenes):06d}_{30 + 10 * i:06d}"
                frames.append(Frame(role, i, f"{split}/{scene}", name, True))
        return frames

    def paths(self, frame: Frame) -> tuple[str, str | None]:
        return (
            f"leftImg8bit/{frame.folder}/{frame.name}_leftImg8bit.png",
            f"gtCoarse/{frame.folder}/{frame.name}_gtCoarse_labelIds.png",
        )

    def label(self, ids: np.ndarray, frame: Frame) -> np.ndarray:
        values = dict.fromkeys((SYNTH_NAMES.index(n) for n in ROAD_NAMES), 1)
        values[SYNTH_ANOMALY] = LAF_OBSTACLE_IDS[frame.index % len(LAF_OBSTACLE_IDS)]
        return _lut(values, 0)[ids]


class FishyscapesLayout(Layout):
    dataset = "fishyscapes-laf"
    anomaly_in_every_frame = True

    def plan(self, counts: dict[str, int]) -> list[Frame]:
        frames = []
        for role, n, _ in _roles(counts, {"validation": "validation"}):
            for i in range(n):
                fid = f"04_Maurener_Weg_8_{i // 4:06d}_{30 + 10 * i:06d}"
                frames.append(Frame(role, i, "", fid, True))
        return frames

    def paths(self, frame: Frame) -> tuple[str, str | None]:
        return (
            f"laf_images/{frame.name}_leftImg8bit.png",
            f"fishyscapes_lostandfound/{frame.index:04d}_{frame.name}_labels.png",
        )

    def label(self, ids: np.ndarray, frame: Frame) -> np.ndarray:
        return _anomaly_track_label(ids, road_only=False)


class RoadAnomalyLayout(Layout):
    dataset = "road-anomaly"
    anomaly_in_every_frame = True
    image_format = "JPEG"
    NAMES = ("animals", "cones", "tractor", "sofa")

    def plan(self, counts: dict[str, int]) -> list[Frame]:
        frames = []
        for role, n, _ in _roles(counts, {"test": "test"}):
            for i in range(n):
                name = f"{self.NAMES[i % len(self.NAMES)]}{i // len(self.NAMES):02d}_synthetic"
                frames.append(Frame(role, i, "", name, True))
        return frames

    def paths(self, frame: Frame) -> tuple[str, str | None]:
        return f"frames/{frame.name}.jpg", f"frames/{frame.name}.labels/labels_semantic.png"

    def label(self, ids: np.ndarray, frame: Frame) -> np.ndarray:
        return np.where(ids == SYNTH_ANOMALY, 2, 0).astype(np.uint8)

    def finish(self, root: Path, frames: list[Frame]) -> None:
        names = [f"{f.name}.jpg" for f in frames]
        atomic_write_text(root / "frame_list.json", json.dumps(names))


LAYOUTS: dict[str, Layout] = {
    layout.dataset: layout
    for layout in (
        CityscapesLayout(),
        BDDLayout(),
        RoadAnomaly21Layout(),
        RoadObstacle21Layout(),
        LostAndFoundLayout(),
        FishyscapesLayout(),
        RoadAnomalyLayout(),
    )
}
"""The synthetic layout of each dataset other than StreetHazards."""
