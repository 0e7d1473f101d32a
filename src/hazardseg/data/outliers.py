"""Outlier exposure data: negative objects pasted into training images
(:class:`OutlierPaster`), from synthetic shapes and CutPaste regions of other training images
(``source: synthetic``) or from a folder of RGBA cut-outs (``source: folder``, e.g. the COCO
cut-outs of ``hazardseg data outliers coco``).

Pasted pixels (alpha >= 0.5) get the label :data:`~hazardseg.data.labels.OUTLIER_INDEX`; the
segmentation loss ignores it and the outlier objectives
(:mod:`hazardseg.training.outlier_losses`) use it. Objects are pasted into the full training
image before the augmentation (crop, scale, flip), as RbA and PEBAL paste theirs. Randomness
comes from torch's global generator, which the data loader seeds per worker, so a seeded run
pastes the same objects whatever the number of workers, and a resumed run continues exactly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hazardseg.config import OUTLIER_OBJECTIVES, OUTLIER_SOURCES, OutlierConfig
from hazardseg.data.imageio import load_image, open_image
from hazardseg.data.labels import OUTLIER_INDEX
from hazardseg.data.registry import Sample
from hazardseg.data.synth.negatives import draw_negative, outline
from hazardseg.errors import ConfigError, DataError

Pair = tuple[Image.Image, Image.Image]


def check_outlier_config(cfg: OutlierConfig) -> None:
    """ConfigError naming the key for a value the paster cannot use."""
    if cfg.source not in OUTLIER_SOURCES:
        raise ConfigError(
            f"train.outliers.source={cfg.source!r}: expected one of {', '.join(OUTLIER_SOURCES)}"
        )
    if cfg.objective not in OUTLIER_OBJECTIVES:
        raise ConfigError(
            f"train.outliers.objective={cfg.objective!r}: expected one of "
            f"{', '.join(OUTLIER_OBJECTIVES)}"
        )
    checks = (
        ("prob", 0 <= cfg.prob <= 1, "a probability in [0, 1]"),
        ("count", 1 <= cfg.count[0] <= cfg.count[1], "1 <= min <= max, e.g. [1, 2]"),
        ("cutpaste", 0 <= cfg.cutpaste <= 1, "a share in [0, 1]"),
        ("weight", math.isfinite(cfg.weight) and cfg.weight >= 0, "a finite weight >= 0"),
        ("blend", cfg.blend in ("feather", "none"), "feather or none"),
        ("m_in", math.isfinite(cfg.m_in) and cfg.m_in < cfg.m_out, "m_in < m_out (margins)"),
        ("m_out", math.isfinite(cfg.m_out), "a finite margin"),
    )
    for key, ok, expected in checks:
        if not ok:
            raise ConfigError(f"train.outliers.{key}={getattr(cfg, key)!r}: expected {expected}")
    if cfg.scale is not None and not 0 < cfg.scale[0] <= cfg.scale[1] <= 1:
        raise ConfigError(
            f"train.outliers.scale={list(cfg.scale)}: expected 0 < min <= max <= 1 (fractions of "
            "the image's shorter side) or null (cut-outs at their own size)"
        )
    if cfg.source == "synthetic" and cfg.scale is None:
        raise ConfigError(
            "train.outliers.scale=null: synthetic negatives are drawn at a size, so they need "
            "a range [min, max] (fractions of the image's shorter side, e.g. [0.1, 0.35])"
        )
    if cfg.source == "folder" and not cfg.folder:
        raise ConfigError("train.outliers.source=folder needs train.outliers.folder=DIR")


def cutout_files(folder: str | Path) -> list[Path]:
    """The RGBA PNG cut-outs of ``folder``, every header checked; DataError naming the folder
    (missing, empty) or the first file that is unreadable or has no alpha channel."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: cut-out folder not found")
    files = sorted(p for p in root.glob("*.png") if p.is_file())
    if not files:
        raise DataError(f"{root}: no .png cut-outs; expected RGBA PNG files")
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with Image.open(path) as img:
                    mode = img.mode
            except (OSError, SyntaxError, ValueError) as exc:
                raise DataError(f"{path}: unreadable cut-out ({exc})") from None
        if mode != "RGBA":
            raise DataError(f"{path}: cut-out has mode {mode}; expected RGBA (alpha = object)")
    return files


def _resized(rgba: np.ndarray, longer: int) -> np.ndarray:
    h, w = rgba.shape[:2]
    f = longer / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.asarray(Image.fromarray(rgba, "RGBA").resize(size, Image.Resampling.BILINEAR))


class OutlierPaster:
    """``(image, mask) -> (image, mask)`` with negative objects pasted (module docstring);
    ``samples`` (the training split's) feed the CutPaste regions of ``source: synthetic``."""

    def __init__(self, cfg: OutlierConfig, samples: Sequence[Sample] = ()) -> None:
        check_outlier_config(cfg)
        self.cfg = cfg
        self.samples = list(samples)
        self.files = cutout_files(cfg.folder) if cfg.source == "folder" else []

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(int(torch.randint(0, 2**62, ())))

    def _cutout(self, rng: np.random.Generator, longer: int | None) -> np.ndarray:
        if self.cfg.source == "folder":
            path = self.files[int(rng.integers(len(self.files)))]
            rgba = np.asarray(open_image(path).convert("RGBA"))
            return rgba if longer is None else _resized(rgba, longer)
        assert longer is not None
        if self.samples and rng.random() < self.cfg.cutpaste:
            return self._region(rng, longer)
        return draw_negative(rng, longer)

    def _region(self, rng: np.random.Generator, longer: int) -> np.ndarray:
        """A CutPaste region: a polygon cut from a random training image."""
        sample = self.samples[int(rng.integers(len(self.samples)))]
        src = np.asarray(load_image(sample.image_path))
        h, w = src.shape[:2]
        side = min(longer, h, w)
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        alpha = np.asarray(outline(rng, "polygon", side, side))
        return np.dstack([src[y : y + side, x : x + side], alpha]).astype(np.uint8)

    def __call__(self, image: Image.Image, mask: Image.Image) -> Pair:
        rng = self._rng()
        if rng.random() >= self.cfg.prob:
            return image, mask
        img = np.asarray(image, dtype=np.float32).copy()
        ids = np.asarray(mask).copy()
        h, w = ids.shape
        n = int(rng.integers(self.cfg.count[0], self.cfg.count[1] + 1))
        for _ in range(n):
            longer = None
            if self.cfg.scale is not None:
                longer = max(4, round(rng.uniform(*self.cfg.scale) * min(h, w)))
            cut = self._cutout(rng, longer)
            ch, cw = cut.shape[:2]
            if ch > h or cw > w:
                raise DataError(
                    f"outlier cut-out of {cw}x{ch} pixels is bigger than the {w}x{h} training "
                    "image; set train.outliers.scale to paste it scaled"
                )
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            alpha = cut[..., 3].astype(np.float32) / 255.0
            if self.cfg.blend == "feather":
                alpha = _feather(alpha)
            region = img[y : y + ch, x : x + cw]
            region += alpha[..., None] * (cut[..., :3].astype(np.float32) - region)
            ids[y : y + ch, x : x + cw][alpha >= 0.5] = OUTLIER_INDEX
        out = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")
        return out, Image.fromarray(ids.astype(np.uint8), "L")


def _feather(alpha: np.ndarray) -> np.ndarray:
    """Alpha softened at the outline: each pixel's mean over its 3x3 neighbourhood (the
    border repeated)."""
    padded = np.pad(alpha, 1, mode="edge")
    h, w = alpha.shape
    return sum(padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0


class PasteThen:
    """A training transform that pastes outliers first: ``transform(*paster(image, mask))``."""

    def __init__(self, paster: OutlierPaster, transform: Callable[[Image.Image, Image.Image], Any]):
        self.paster = paster
        self.transform = transform

    def __call__(self, image: Image.Image, mask: Image.Image) -> Any:
        return self.transform(*self.paster(image, mask))
