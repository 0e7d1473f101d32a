"""Cityscapes (Cordts et al.): the ``cityscapes`` entry of the dataset registry.

Layout and labels as the dataset's own scripts define them (mcordts/cityscapesScripts):
``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` with
``gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png``; label files hold labelIds
0..33, which become the 19 trainIds through the ``cityscapesscripts`` package's label table
(``helpers/labels.py``; every label whose trainId is 255 or -1 is ignored). The table, class
names and colours are read from that package (the ``datasets`` extra), not copied here. The
test split's label files hold no classes, so its labels count as not public.
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType

import numpy as np

from hazardseg.data.labels import IGNORE_INDEX, LabelSpec
from hazardseg.data.registry import (
    DatasetDef,
    Sample,
    SplitInfo,
    lookup_table,
    register_dataset,
    sorted_files,
    split_table,
)
from hazardseg.errors import DataError
from hazardseg.optional import require

NUM_TRAIN_IDS = 19
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


@functools.cache
def label_table() -> ModuleType:
    """``cityscapesscripts.helpers.labels`` (MissingDependencyError naming the extra)."""
    return require("cityscapesscripts.helpers.labels", "the Cityscapes label table", "datasets")


def train_id_table() -> np.ndarray:
    """labelId -> trainId decode table (ignored labels -> 255; values above 33 -> -1)."""
    labels = label_table().labels
    return lookup_table(
        {
            lab.id: lab.trainId if 0 <= lab.trainId < NUM_TRAIN_IDS else IGNORE_INDEX
            for lab in labels
            if lab.id >= 0
        }
    )


def label_id_of(train_id: int) -> int:
    """The labelId written for a trainId (the first label of the table with that trainId)."""
    return int(label_table().trainId2label[int(train_id)].id)


def paired_samples(
    root: Path, image_dir: Path, label_dir: Path, label_suffix: str, public: bool
) -> list[Sample]:
    """``<city>/<stem>_leftImg8bit.png`` images and their ``<stem><label_suffix>`` labels (the
    Cityscapes-style layout, also LostAndFound's), sorted by path."""
    samples = []
    for image in sorted_files(image_dir, f"*/*{IMAGE_SUFFIX}"):
        stem = image.name[: -len(IMAGE_SUFFIX)]
        label = label_dir / image.parent.name / f"{stem}{label_suffix}"
        if public and not label.is_file():
            raise DataError(f"{image}: no label file (expected {label})")
        rel = f"{image.parent.name}/{image.name}"
        samples.append(Sample(image, label if public else None, rel))
    return samples


@register_dataset
class CityscapesDataset(DatasetDef):
    """Cityscapes fine annotations: 19 trainIds, no anomalies."""

    name = "cityscapes"
    title = "Cityscapes"
    source = "mcordts/cityscapesScripts (helpers/labels.py; the gtFine layout)"
    labels = LabelSpec(num_classes=NUM_TRAIN_IDS, anomaly_id=None)
    splits = split_table(
        train=SplitInfo(),
        val=SplitInfo(),
        test=SplitInfo(
            public_labels=False, submit="the Cityscapes benchmark server (cityscapes-dataset.com)"
        ),
    )
    train_split, val_split, eval_split = "train", "val", "val"
    protocols = ()
    markers = (("leftImg8bit/train", "gtFine/train"), ("leftImg8bit/val", "gtFine/val"))

    @property
    def class_names(self) -> tuple[str, ...]:  # type: ignore[override]
        table = label_table().trainId2label
        return tuple(table[i].name for i in range(NUM_TRAIN_IDS))

    @property
    def palette(self) -> np.ndarray:  # type: ignore[override]
        table = label_table().trainId2label
        return np.array([table[i].color for i in range(NUM_TRAIN_IDS)], dtype=np.uint8)

    def samples(self, root: Path, split: str) -> list[Sample]:
        public = self.split(split).public_labels
        return paired_samples(
            root, root / "leftImg8bit" / split, root / "gtFine" / split, LABEL_SUFFIX, public
        )

    def frame_id(self, sample: Sample) -> str:
        return Path(sample.rel).name[: -len(IMAGE_SUFFIX)]

    def decode(self, values: np.ndarray, path: Path) -> np.ndarray:
        return self.decode_table(values, path, _decode_table())


@functools.cache
def _decode_table() -> np.ndarray:
    return train_id_table()
