"""BDD-Anomaly (Hendrycks et al.): the ``bdd-anomaly`` entry of the dataset registry.

What hendrycks/anomaly-seg's ``create_bdd_dataset.py`` and its loader define: the root is the
folder holding ``train.odgt``, ``validation.odgt`` and ``anom.odgt`` (each one JSON list of
``{"fpath_img": "seg/images/<train|val>/<id>.jpg", "fpath_segm":
"seg/train_labels/<train|val>/<id>_train_id.png", ...}``). The label files are BDD100K's
trainIds shifted by two (255 -> 1, k -> k + 2): 1 is "other" (trained as a class), 2..17 the
trainIds 0..15, and 18, 19, 20 (train, motorcycle, bicycle) the anomalies. Every image with
one anomaly pixel is in ``anom.odgt`` (the test split), the others are the training and
validation images. The loader subtracts one, so the model knows 17 classes: "other" and
road .. bus. The test protocols are StreetHazards' (``eval_ood.py`` evaluates every pixel).

:func:`write_indexes` writes the three lists from the label files with that script's rule,
for trees that have the labels but not the lists.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hazardseg.data.labels import IGNORE_INDEX, LabelSpec
from hazardseg.data.odgt import index_path, read_odgt_entries
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
from hazardseg.io import atomic_write_text

CLASS_NAMES: tuple[str, ...] = (
    "other",
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
)
"""The 17 known classes: "other" (file value 1) and BDD100K trainIds 0..15 (values 2..17)."""

ANOMALY_VALUES: tuple[int, ...] = (18, 19, 20)
"""File values of the anomaly classes: train, motorcycle, bicycle (BDD100K trainIds 16..18)."""

PALETTE = np.array(
    [
        [0, 0, 0],
        [128, 64, 128],
        [244, 35, 232],
        [70, 70, 70],
        [102, 102, 156],
        [190, 153, 153],
        [153, 153, 153],
        [250, 170, 30],
        [220, 220, 0],
        [107, 142, 35],
        [152, 251, 152],
        [70, 130, 180],
        [220, 20, 60],
        [255, 0, 0],
        [0, 0, 142],
        [0, 0, 70],
        [0, 60, 100],
    ],
    dtype=np.uint8,
)
"""BDD100K's colours of the known classes (black for "other")."""

INDEX_FILES: dict[str, str] = {
    "train": "train.odgt",
    "validation": "validation.odgt",
    "test": "anom.odgt",
}
"""The list file of each split, in the root."""

_TABLE = lookup_table(
    {0: IGNORE_INDEX, **{v: v - 1 for v in range(1, 18)}, **dict.fromkeys(ANOMALY_VALUES, 17)}
)


@register_dataset
class BDDAnomalyDataset(DatasetDef):
    """BDD-Anomaly: BDD100K street scenes, 17 known classes, train/motorcycle/bicycle unseen."""

    name = "bdd-anomaly"
    title = "BDD-Anomaly"
    source = "hendrycks/anomaly-seg (create_bdd_dataset.py, dataset.py, eval_ood.py)"
    labels = LabelSpec(
        num_classes=len(CLASS_NAMES),
        anomaly_id=17,
        unlabeled_id=0,
        per_image_ignore_is_normal=True,
    )
    class_names = CLASS_NAMES
    palette = PALETTE
    splits = split_table(train=SplitInfo(), validation=SplitInfo(), test=SplitInfo(anomalies=True))
    train_split, val_split, eval_split = "train", "validation", "test"
    protocols = ("pooled", "per_image")
    markers = (("anom.odgt", "seg/train_labels"), ("train.odgt", "seg/train_labels"))

    def samples(self, root: Path, split: str) -> list[Sample]:
        self.split(split)
        index = root / INDEX_FILES[split]
        if not index.is_file():
            raise DataError(
                f"{index}: list of split {split!r} not found; write the lists with "
                f"`hazardseg data index {root} --dataset {self.name}`"
            )
        samples, seen = [], set()
        for where, entry in read_odgt_entries(index):
            image = root / index_path(root, entry["fpath_img"], where, "fpath_img")
            label = root / index_path(root, entry["fpath_segm"], where, "fpath_segm")
            rel = image.relative_to(root / "seg" / "images").as_posix()
            if rel in seen:
                raise DataError(f"{where}: {rel} is listed twice")
            seen.add(rel)
            for what, path in (("image", image), ("label", label)):
                if not path.is_file():
                    raise DataError(f"{where}: {what} {path} not found")
            samples.append(Sample(image, label, rel))
        return samples

    def decode(self, values: np.ndarray, path: Path) -> np.ndarray:
        return self.decode_table(values, path, _TABLE)

    def write_indexes(self, root: Path) -> dict[str, int]:
        """Write ``train.odgt``, ``validation.odgt`` and ``anom.odgt`` from the label files
        with ``create_bdd_dataset.py``'s rule; return the number of images of each split."""
        from hazardseg.data.imageio import open_image

        lists: dict[str, list[dict]] = {s: [] for s in INDEX_FILES}
        for bdd_split, split in (("train", "train"), ("val", "validation")):
            image_dir = root / "seg" / "images" / bdd_split
            if not image_dir.is_dir():
                raise DataError(f"{image_dir}: folder not found; expected BDD100K's seg images")
            for image in sorted_files(image_dir, "*.jpg"):
                label_rel = f"seg/train_labels/{bdd_split}/{image.stem}_train_id.png"
                if not (root / label_rel).is_file():
                    continue  # as the script: images without a label file are left out
                values = np.asarray(open_image(root / label_rel))
                entry = {
                    "dbName": "BDD100k",
                    "width": 1280,
                    "height": 720,
                    "fpath_img": f"seg/images/{bdd_split}/{image.name}",
                    "fpath_segm": label_rel,
                }
                anomalous = bool(np.isin(values, ANOMALY_VALUES).any())
                lists["test" if anomalous else split].append(entry)
        for split, entries in lists.items():
            atomic_write_text(root / INDEX_FILES[split], json.dumps(entries))
        return {s: len(e) for s, e in lists.items()}
