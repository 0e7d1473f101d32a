"""LostAndFound (Pinggera et al.) and Fishyscapes Lost & Found (Blum et al.): the
``lostandfound`` and ``fishyscapes-laf`` entries of the dataset registry.

``lostandfound``, as road-anomaly-benchmark's ``DatasetLostAndFound`` reads it: the
Cityscapes-style tree ``leftImg8bit/<split>/<NN_Scene>/<frame>_leftImg8bit.png`` with
``gtCoarse/<split>/<NN_Scene>/<frame>_gtCoarse_labelIds.png``; labelId 1 (free road) is the
usual class, 2..200 (the obstacles) the anomalies and every other pixel (0: background) is
void, so the metrics are computed on the road region, as the benchmark does. Frames are
sorted by name. ``train-valid`` / ``test-valid`` leave out the frames whose labels are empty
(by index in the sorted list, as the benchmark does) and ``test-noknown`` also the scenes
with objects of known classes (children, bicycles): the benchmark's ``LostAndFound-testNoKnown``,
the split its obstacle track reports.

``fishyscapes-laf`` (Fishyscapes' 100 validation frames, re-labelled), in the layout RbA and
pytorch-ood use: ``fishyscapes_lostandfound/<NNNN>_<frame>_labels.png`` (0 in-distribution, 1
anomaly, 255 void) and ``laf_images/<frame>_leftImg8bit.png``; frames in label-file order.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hazardseg.data.cityscapes import IMAGE_SUFFIX, paired_samples
from hazardseg.data.labels import IGNORE_INDEX
from hazardseg.data.registry import (
    ANOMALY_ONLY,
    DatasetDef,
    Sample,
    SplitInfo,
    lookup_table,
    register_dataset,
    sorted_files,
    split_table,
)
from hazardseg.data.smiyc import TABLE as ANOMALY_TRACK_TABLE
from hazardseg.errors import DataError

LABEL_SUFFIX = "_gtCoarse_labelIds.png"
TABLE = lookup_table({0: IGNORE_INDEX, 1: 0, **dict.fromkeys(range(2, 201), 1)})
"""labelId 1 usual (road), 2..200 anomaly (obstacle), 0 void."""

INVALID_TRAIN: tuple[int, ...] = (44, 67, 88, 109, 131, 614)
"""Indices (in the sorted train frames) of the frames with empty labels."""
INVALID_TEST: tuple[int, ...] = (
    17, 37, 55, 72, 91, 110, 129, 153, 174, 197, 218, 353, 490, 618, 686, 792, 793,
)  # fmt: skip
"""Indices (in the sorted test frames) of the frames with empty labels."""
KNOWN_OBJECT_PREFIXES: tuple[str, ...] = (
    "15_Rechbergstr_Deckenpfronn",
    "01_Hanns_Klemm_Str_45_000006",
    "01_Hanns_Klemm_Str_45_000007",
    "10_Schlossberg_9_000004",
)
"""Frames ``test-noknown`` leaves out: objects of known classes (children, bicycles)."""

_SCENE = re.compile(r"^\d{2}_")


@register_dataset
class LostAndFoundDataset(DatasetDef):
    """LostAndFound: small obstacles on the road, evaluated on the road region."""

    name = "lostandfound"
    title = "LostAndFound"
    source = "SegmentMeIfYouCan/road-anomaly-benchmark (datasets/tracks.py: DatasetLostAndFound)"
    labels = ANOMALY_ONLY
    splits = split_table(
        train=SplitInfo(anomalies=True),
        test=SplitInfo(anomalies=True),
        **{
            "train-valid": SplitInfo(anomalies=True),
            "test-valid": SplitInfo(anomalies=True),
            "test-noknown": SplitInfo(anomalies=True),
        },
    )
    eval_split = "test-noknown"
    check_splits = ("train", "test")
    protocols = ("pooled", "smiyc")
    component_track = "obstacle"
    markers = (("leftImg8bit/test", "gtCoarse/test"), ("leftImg8bit/train", "gtCoarse/train"))

    def samples(self, root: Path, split: str) -> list[Sample]:
        self.split(split)
        base = split.split("-")[0]
        samples = paired_samples(
            root, root / "leftImg8bit" / base, root / "gtCoarse" / base, LABEL_SUFFIX, True
        )
        if split.endswith("-valid") or split == "test-noknown":
            invalid = set(INVALID_TRAIN if base == "train" else INVALID_TEST)
            samples = [s for i, s in enumerate(samples) if i not in invalid]
        if split == "test-noknown":
            samples = [
                s
                for s in samples
                if not any(self.frame_id(s).startswith(p) for p in KNOWN_OBJECT_PREFIXES)
            ]
        return samples

    def frame_id(self, sample: Sample) -> str:
        return Path(sample.rel).name[: -len(IMAGE_SUFFIX)]

    def detect(self, root: Path) -> bool:
        if not super().detect(root):
            return False
        scenes = [p for s in ("train", "test") for p in (root / "leftImg8bit" / s).glob("*")]
        return bool(scenes) and all(_SCENE.match(p.name) for p in scenes)

    def decode(self, values: np.ndarray, path: Path) -> np.ndarray:
        return self.decode_table(values, path, TABLE)

    def submission_name(self, split: str) -> str | None:
        return f"LostAndFound-{split.split('-')[0]}"


@register_dataset
class FishyscapesLAF(DatasetDef):
    """Fishyscapes Lost & Found validation: LostAndFound frames re-labelled 0/1/255."""

    name = "fishyscapes-laf"
    title = "Fishyscapes Lost & Found"
    source = (
        "NazirNayal8/RbA (datasets/fishyscapes.py) and pytorch-ood (dataset/img/fishyscapes.py); "
        "frames as road-anomaly-benchmark's FishyLAFAnomaly-val"
    )
    labels = ANOMALY_ONLY
    splits = split_table(validation=SplitInfo(anomalies=True))
    eval_split = "validation"
    protocols = ("pooled", "smiyc")
    component_track = "anomaly"
    markers = (("fishyscapes_lostandfound", "laf_images"),)

    def samples(self, root: Path, split: str) -> list[Sample]:
        self.split(split)
        label_dir = root / "fishyscapes_lostandfound"
        if not label_dir.is_dir():
            raise DataError(f"{label_dir}: folder not found; expected the Fishyscapes LAF layout")
        samples = []
        for label in sorted_files(label_dir, "*_labels.png"):
            fid = label.name[5 : -len("_labels.png")]
            image = root / "laf_images" / f"{fid}{IMAGE_SUFFIX}"
            if not image.is_file():
                raise DataError(f"{label}: image not found (expected {image})")
            samples.append(Sample(image, label, image.name))
        return samples

    def frame_id(self, sample: Sample) -> str:
        return sample.rel[: -len(IMAGE_SUFFIX)]

    def decode(self, values: np.ndarray, path: Path) -> np.ndarray:
        return self.decode_table(values, path, ANOMALY_TRACK_TABLE)

    def submission_name(self, split: str) -> str | None:
        # road-anomaly-benchmark files FishyLAFAnomaly-val's maps under the LostAndFound split
        # the frames come from: every validation frame is a LostAndFound test frame
        return "LostAndFound-test"
