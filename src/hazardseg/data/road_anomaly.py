"""Road Anomaly (Lis et al., ICCV 2019): the ``road-anomaly`` entry of the dataset registry.

The dataset's own layout (its readme; read the same way by cvlab-epfl/detecting-the-unexpected
and RbA): ``frame_list.json`` (the frames' file names, in order), ``frames/<name>.jpg`` and
``frames/<name>.labels/labels_semantic.png`` with 0 background and 2 anomaly. Every pixel is
evaluated (no void).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np

from hazardseg.data.registry import (
    ANOMALY_ONLY,
    DatasetDef,
    Sample,
    SplitInfo,
    lookup_table,
    register_dataset,
    split_table,
)
from hazardseg.errors import DataError

TABLE = lookup_table({0: 0, 2: 1})
"""0 background (normal), 2 anomaly."""
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".webp", ".png")


@register_dataset
class RoadAnomalyDataset(DatasetDef):
    """Road Anomaly: 60 web images of unusual objects on or near roads."""

    name = "road-anomaly"
    title = "Road Anomaly"
    source = (
        "the dataset's readme; cvlab-epfl/detecting-the-unexpected (src/datasets/road_anomaly.py)"
        " and NazirNayal8/RbA (datasets/road_anomaly.py)"
    )
    labels = ANOMALY_ONLY
    splits = split_table(test=SplitInfo(anomalies=True))
    eval_split = "test"
    protocols = ("pooled",)
    markers = (("frame_list.json", "frames"),)

    def samples(self, root: Path, split: str) -> list[Sample]:
        self.split(split)
        listing = root / "frame_list.json"
        try:
            names = json.loads(listing.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{listing}: not found; expected the Road Anomaly layout") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{listing}: not a readable JSON list ({exc})") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{listing}: expected a JSON list of frame file names")
        samples = []
        for name in names:
            image = self._image(root / "frames", name)
            stem = PurePosixPath(image.name).stem
            label = root / "frames" / f"{stem}.labels" / "labels_semantic.png"
            if not label.is_file():
                raise DataError(f"{image}: no label (expected {label})")
            samples.append(Sample(image, label, image.name))
        return samples

    @staticmethod
    def _image(frames: Path, name: str) -> Path:
        if PurePosixPath(name).name != name or name in ("", ".", ".."):
            raise DataError(f"{frames.parent / 'frame_list.json'}: {name!r} is not a file name")
        if (frames / name).is_file():
            return frames / name
        for suffix in IMAGE_SUFFIXES:
            if (frames / f"{name}{suffix}").is_file():
                return frames / f"{name}{suffix}"
        raise DataError(f"{frames / name}: listed in frame_list.json but not found")

    def decode(self, values: np.ndarray, path: Path) -> np.ndarray:
        return self.decode_table(values, path, TABLE)
