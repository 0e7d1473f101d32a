"""COCO cut-outs for outlier exposure (the Meta-OoD recipe): RGBA PNGs of COCO instances whose
category is not a known class of the training dataset, read with ``pycocotools``
(``hazardseg data outliers coco``; the ``datasets`` extra). Nothing is downloaded: the
annotations file and the images are the user's copy of COCO.

One cut-out per instance (not crowd, at least ``min_area`` pixels): the instance's bounding
box of the image, alpha 255 on the instance's mask. The categories left out by default are
those that are known classes of the dataset the model is trained on (``KNOWN_COCO``; for
Cityscapes the list Meta-OoD leaves out), plus any given.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from hazardseg.data.imageio import load_image
from hazardseg.errors import DataError
from hazardseg.optional import require
from hazardseg.progress import track

KNOWN_COCO: dict[str, tuple[str, ...]] = {
    "streethazards": ("person", "car", "stop sign"),
    "cityscapes": (
        "person",
        "bicycle",
        "car",
        "motorcycle",
        "bus",
        "truck",
        "traffic light",
        "stop sign",
    ),
    "bdd-anomaly": (
        "person",
        "bicycle",
        "car",
        "motorcycle",
        "bus",
        "truck",
        "train",
        "traffic light",
        "stop sign",
    ),
}
"""COCO categories that are known classes of each training dataset (BDD-Anomaly: also its
test anomalies train, motorcycle and bicycle, which must not be seen in training)."""


def write_coco_cutouts(
    annotations: str | os.PathLike[str],
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
    dataset: str = "cityscapes",
    exclude: Sequence[str] = (),
    min_area: int = 1000,
    max_cutouts: int | None = None,
    progress: bool = False,
) -> dict[str, object]:
    """Write the cut-outs into ``out`` (which must not exist or be empty) and return the
    manifest also written as ``out/cutouts.json``; DataError (nothing written) when the file
    is not COCO instances, a category name is unknown, or no instance is usable."""
    coco_mod = require("pycocotools.coco", "COCO cut-outs", "datasets")
    ann_path, image_dir, out_dir = Path(annotations), Path(images), Path(out)
    if not ann_path.is_file():
        raise DataError(f"{ann_path}: COCO annotations file not found")
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: COCO image folder not found")
    if dataset not in KNOWN_COCO:
        raise DataError(
            f"--dataset {dataset!r}: no list of its known classes among COCO's categories "
            f"(lists for: {', '.join(KNOWN_COCO)}); name one of them, and add any other known "
            "class with --exclude-classes"
        )
    if max_cutouts is not None and max_cutouts < 1:
        raise DataError(f"--max {max_cutouts}: expected a positive number of cut-outs")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"{out_dir}: exists and is not an empty folder; choose another --out")
    try:
        coco = coco_mod.COCO(str(ann_path))
    except KeyError as exc:
        raise DataError(f"{ann_path}: not a COCO instances file (an entry lacks {exc})") from None
    except (ValueError, TypeError, AssertionError, OSError) as exc:
        raise DataError(f"{ann_path}: not a COCO instances file ({exc})") from None
    missing = [k for k in ("images", "annotations", "categories") if k not in coco.dataset]
    if missing:
        raise DataError(f"{ann_path}: not a COCO instances file (no {missing[0]!r} list)")
    try:
        cats = {c["name"]: c["id"] for c in coco.dataset["categories"]}
        anns = [a for a in coco.dataset["annotations"] if not a.get("iscrowd", 0)]
        anns = [(a["id"], a["image_id"], a["category_id"], a.get("area", 0), a) for a in anns]
    except (KeyError, TypeError) as exc:
        raise DataError(f"{ann_path}: not a COCO instances file (an entry lacks {exc})") from None
    left_out = [*KNOWN_COCO[dataset], *exclude]
    unknown = [n for n in exclude if n not in cats]
    if unknown:
        raise DataError(
            f"--exclude-classes {unknown[0]!r}: not a category of {ann_path} "
            f"(e.g. {', '.join(list(cats)[:5])})"
        )
    keep = {cid for name, cid in cats.items() if name not in left_out}
    anns = sorted(anns, key=lambda t: (t[1], t[0]))  # by image, then annotation id
    anns = [a for a in anns if a[2] in keep and a[3] >= min_area]
    orphan = next((a for a in anns if "file_name" not in coco.imgs.get(a[1], {})), None)
    if orphan is not None:
        raise DataError(
            f"{ann_path}: annotation {orphan[0]} refers to image id {orphan[1]}, which is not "
            "in its 'images' list with a file_name"
        )
    anns = [a[4] for a in anns]
    if max_cutouts is not None:
        anns = anns[:max_cutouts]
    if not anns:
        raise DataError(
            f"{ann_path}: no usable instance (not crowd, >= {min_area} px, category not in "
            f"{', '.join(left_out) or 'the excluded list'})"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        written = []
        for ann in track(anns, len(anns), "COCO cut-outs", unit="cut-out", enabled=progress):
            info = coco.imgs[ann["image_id"]]
            rgb = np.asarray(load_image(image_dir / info["file_name"]))
            try:
                mask = coco.annToMask(ann).astype(bool)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise DataError(
                    f"{ann_path}: annotation {ann['id']} has no readable segmentation ({exc})"
                ) from None
            if mask.shape != rgb.shape[:2]:
                raise DataError(
                    f"{image_dir / info['file_name']}: size {rgb.shape[1]}x{rgb.shape[0]} "
                    f"differs from its annotation ({mask.shape[1]}x{mask.shape[0]})"
                )
            ys, xs = np.nonzero(mask)
            if ys.size == 0:
                continue
            box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
            rgba = np.dstack([rgb[box], mask[box].astype(np.uint8) * 255])
            name = f"{ann['image_id']}_{ann['id']}.png"
            Image.fromarray(rgba, "RGBA").save(tmp / name)
            written.append(name)
        if not written:
            raise DataError(f"{ann_path}: every selected instance has an empty mask")
        manifest = {
            "kind": "outlier-cutouts",
            "annotations": str(ann_path.resolve()),
            "images": str(image_dir.resolve()),
            "dataset": dataset,
            "excluded_categories": left_out,
            "min_area": min_area,
            "num_cutouts": len(written),
        }
        (tmp / "cutouts.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
