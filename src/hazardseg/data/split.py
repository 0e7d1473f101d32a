"""A dataset on disk (:class:`DataSource`: a root and its registered dataset) and one split of
it as a torch Dataset (:class:`SplitDataset`), for every registered dataset alike."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hazardseg.data.imageio import load_image
from hazardseg.data.labels import IGNORE_INDEX
from hazardseg.data.registry import DatasetDef, Sample, resolve_dataset
from hazardseg.errors import DataError

Transform = Callable[[Image.Image, Image.Image], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class DataSource:
    """A dataset root and the registered dataset it holds."""

    root: Path
    dataset: DatasetDef

    @classmethod
    def of(
        cls,
        data: str | os.PathLike[str] | DataSource,
        dataset: str | DatasetDef | None = None,
    ) -> DataSource:
        """``data`` as a source: a root with ``dataset`` (a name; None: detected from the
        layout); a source is returned as it is."""
        if isinstance(data, DataSource):
            return data
        root = Path(data)
        return cls(root, resolve_dataset(dataset, root))

    def open(
        self, split: str, transform: Transform | None = None, max_images: int | None = None
    ) -> SplitDataset:
        """One split as a torch Dataset."""
        return SplitDataset(self.root, split, transform, max_images, dataset=self.dataset)

    def __str__(self) -> str:
        return f"{self.root} ({self.dataset.name})"


class SplitDataset(Dataset):
    """One split of a registered dataset read from its official layout.

    ``ds[i]`` is ``{"image", "mask", "path"}``: without a transform, image uint8 (3, H, W) and
    mask int64 (H, W) of the dataset's mask ids (:class:`hazardseg.data.labels.LabelSpec`; all
    ignore where the split's labels are not public); with one, whatever
    ``transform(image: PIL RGB, mask: PIL "L" of ids)`` returns. ``path`` is the sample's
    ``rel``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        transform: Transform | None = None,
        max_images: int | None = None,
        dataset: str | DatasetDef | None = None,
    ) -> None:
        if max_images is not None and max_images < 1:
            raise DataError(f"max_images={max_images}; expected a positive integer or None")
        self.root = Path(root)
        self.definition = resolve_dataset(dataset, self.root)
        self.definition.split(split)
        self.split = split
        self.transform = transform
        samples = self.definition.samples(self.root, split)
        if not samples:
            raise DataError(f"{self.root}: split {split!r} of {self.definition.name} has no images")
        self.samples: list[Sample] = samples[:max_images] if max_images else samples

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, dataset={self.definition.name}, "
            f"split={self.split!r}, n={len(self)})"
        )

    @property
    def has_labels(self) -> bool:
        """Whether the split's labels are public (and read)."""
        return self.definition.splits[self.split].public_labels

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """Return sample ``index`` as (PIL RGB image, uint8 id map) after validating sizes."""
        sample = self.samples[index]
        image = load_image(sample.image_path)
        if sample.label_path is None:
            return image, np.full((image.height, image.width), IGNORE_INDEX, np.uint8)
        ids = self.definition.read_label(sample.label_path)
        if image.size != (ids.shape[1], ids.shape[0]):
            raise DataError(
                f"{sample.label_path}: size {ids.shape[1]}x{ids.shape[0]} differs from image "
                f"{image.size[0]}x{image.size[1]}; expected equal sizes"
            )
        return image, ids

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, ids = self.load(index)
        rel = self.samples[index].rel
        if self.transform is not None:
            img_t, mask_t = self.transform(image, Image.fromarray(ids))
            return {"image": img_t, "mask": mask_t, "path": rel}
        arr = np.asarray(image).transpose(2, 0, 1).copy()
        return {
            "image": torch.from_numpy(arr),
            "mask": torch.from_numpy(ids.astype(np.int64)),
            "path": rel,
        }
