"""SegmentMeIfYouCan (Chan et al.): the ``smiyc-anomaly`` (RoadAnomaly21) and
``smiyc-obstacle`` (RoadObstacle21) entries of the dataset registry.

As road-anomaly-benchmark's ``datasets/tracks.py`` defines them: the root is
``dataset_AnomalyTrack`` (``images/<frame>.jpg``) or ``dataset_ObstacleTrack``
(``images/<frame>.webp``), labels ``labels_masks/<frame>_labels_semantic.png`` with 0 usual
(the road, on the obstacle track), 1 anomaly and 255 void; frames sorted by name. Only the
validation frames' labels are public: ``validation`` is the labelled split, ``test`` (and
``all``, the frames the benchmark's submission holds) are scored by the benchmark's server.
The obstacle track's ``validation`` leaves out the frames the benchmark leaves out
(``validation_19`` and ``validation_21`` .. ``validation_29``) and its scene splits select
frames by the scene before the first ``_`` of the name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

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
from hazardseg.errors import DataError

SUBMIT = "the SegmentMeIfYouCan benchmark (segmentmeifyoucan.com), as its README describes"
LABEL_SUFFIX = "_labels_semantic.png"
TABLE = lookup_table({0: 0, 1: 1, 255: IGNORE_INDEX})
"""0 usual, 1 anomaly, 255 void: the benchmark's only values."""

OBSTACLE_SCENES_ALL: frozenset[str] = frozenset(
    {
        "curvy-street",
        "one-way-street",
        "gravel",
        "greyasphalt",
        "motorway",
        "paving",
        "darkasphalt",
        "darkasphalt2",
        "snowstorm1",
        "snowstorm2",
        "driveway",
        "validation",
    }
)
OBSTACLE_SCENE_SPLITS: Mapping[str, tuple[str, ...]] = {
    "curvy": ("curvy-street",),
    "darkasphalt": ("darkasphalt",),
    "darkasphaltDog": ("darkasphalt2",),
    "darkasphaltAll": ("darkasphalt", "darkasphalt2"),
    "gravel": ("gravel",),
    "greyasphalt": ("greyasphalt",),
    "motorway": ("motorway",),
    "shiny": ("one-way-street",),
    "paving": ("paving",),
    "night": ("driveway",),
    "snowstorm": ("snowstorm1", "snowstorm2"),
    "validation": ("validation",),
}
"""The benchmark's per-scene splits (``ObstacleScene-<key>``) and their scenes."""

OBSTACLE_VALIDATION_EXCLUDED: tuple[str, ...] = (
    "validation_19",
    *(f"validation_{i}" for i in range(21, 30)),
)
"""Name prefixes of the frames ``ObstacleTrack-validation`` leaves out."""


class _TrackDataset(DatasetDef):
    """A SegmentMeIfYouCan track: images, labels_masks, 0/1/255 labels."""

    image_suffix = ""
    labels = ANOMALY_ONLY
    protocols = ("pooled", "smiyc")
    eval_split = "validation"
    check_splits = ("validation", "all")
    persistence = ""

    def frames(self, split: str, fids: list[str]) -> list[str]:
        """The frames of ``split`` among every frame of the root (sorted)."""
        raise NotImplementedError

    def samples(self, root: Path, split: str) -> list[Sample]:
        public = self.split(split).public_labels
        image_dir = root / "images"
        if not image_dir.is_dir():
            raise DataError(f"{image_dir}: folder not found; expected the {self.title} layout")
        fids = [
            p.name[: -len(self.image_suffix)]
            for p in sorted_files(image_dir, f"*{self.image_suffix}")
        ]
        samples = []
        for fid in self.frames(split, sorted(fids)):
            label = root / "labels_masks" / f"{fid}{LABEL_SUFFIX}"
            if public and not label.is_file():
                raise DataError(
                    f"{image_dir / (fid + self.image_suffix)}: no label (expected {label})"
                )
            samples.append(
                Sample(
                    image_dir / f"{fid}{self.image_suffix}",
                    label if public else None,
                    f"{fid}{self.image_suffix}",
                )
            )
        return samples

    def detect(self, root: Path) -> bool:
        return super().detect(root) and any((root / "images").glob(f"*{self.image_suffix}"))

    def decode(self, values: np.ndarray, path: Path) -> np.ndarray:
        return self.decode_table(values, path, TABLE)

    def submission_name(self, split: str) -> str | None:
        return self.persistence


@register_dataset
class RoadAnomaly21(_TrackDataset):
    """SegmentMeIfYouCan's anomaly track (RoadAnomaly21): anomalies anywhere in the image."""

    name = "smiyc-anomaly"
    title = "SegmentMeIfYouCan RoadAnomaly21"
    source = "SegmentMeIfYouCan/road-anomaly-benchmark (datasets/tracks.py, tracks_extra.py)"
    image_suffix = ".jpg"
    persistence = "AnomalyTrack-all"
    component_track = "anomaly"
    splits = split_table(
        validation=SplitInfo(anomalies=True),
        test=SplitInfo(public_labels=False, anomalies=True, submit=SUBMIT),
        all=SplitInfo(public_labels=False, anomalies=True, submit=SUBMIT),
    )
    markers = (("images", "labels_masks"),)

    def frames(self, split: str, fids: list[str]) -> list[str]:
        if split == "validation":
            return [f for f in fids if f.startswith("validation")]
        if split == "test":
            return [f for f in fids if not f.startswith("validation")]
        return fids


def _obstacle_splits() -> dict[str, SplitInfo]:
    hidden = SplitInfo(public_labels=False, anomalies=True, submit=SUBMIT)
    splits = {"validation": SplitInfo(anomalies=True), "test": hidden, "all": hidden}
    splits.update(nonight=hidden, night=hidden, snowstorm=hidden)
    for key in OBSTACLE_SCENE_SPLITS:
        public = key == "validation"
        splits[f"scene-{key}"] = SplitInfo(anomalies=True) if public else hidden
    return splits


@register_dataset
class RoadObstacle21(_TrackDataset):
    """SegmentMeIfYouCan's obstacle track (RoadObstacle21): obstacles on the road, which is
    the only region evaluated."""

    name = "smiyc-obstacle"
    title = "SegmentMeIfYouCan RoadObstacle21"
    source = "SegmentMeIfYouCan/road-anomaly-benchmark (datasets/tracks.py)"
    image_suffix = ".webp"
    persistence = "ObstacleTrack-all"
    component_track = "obstacle"
    splits = split_table(**_obstacle_splits())
    markers = (("images", "labels_masks"),)

    def frames(self, split: str, fids: list[str]) -> list[str]:
        excluded: tuple[str, ...] = ()
        if split == "validation":
            scenes, excluded = {"validation"}, OBSTACLE_VALIDATION_EXCLUDED
        elif split == "test":
            scenes = OBSTACLE_SCENES_ALL - {"snowstorm1", "snowstorm2", "driveway", "validation"}
        elif split == "nonight":
            scenes = OBSTACLE_SCENES_ALL - {"driveway"}
        elif split == "night":
            scenes = {"driveway"}
        elif split == "snowstorm":
            scenes = {"snowstorm1", "snowstorm2"}
        elif split.startswith("scene-"):
            scenes = set(OBSTACLE_SCENE_SPLITS[split[len("scene-") :]])
        else:
            scenes = set(OBSTACLE_SCENES_ALL)
        return [
            f
            for f in fids
            if f.split("_")[0] in scenes and not any(f.startswith(p) for p in excluded)
        ]
