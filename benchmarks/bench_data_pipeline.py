"""Training-sample throughput per core: hazardseg's train preset vs a typical PIL pipeline.

Both pipelines decode a 1280x720 PNG image and its label PNG and produce a 512x512
multi-scale-augmented sample (scale 0.5-2.0, flip, colour jitter 0.3, Gaussian blur,
ImageNet normalisation). The baseline is what a typical training script does with PIL and
torchvision v1 transforms: resize the WHOLE image by r, RandomCrop, flip, ColorJitter and
GaussianBlur on PIL, ToTensor, Normalize. hazardseg crops the source region first and resizes
only that, on uint8 tensors.

Run: python benchmarks/bench_data_pipeline.py [--n 40] [--images 6]
The test images are generated here (structured random scenes); no dataset is needed.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from hazardseg.config import AugmentConfig
from hazardseg.data.classes import PALETTE
from hazardseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_train_transform, load_image

W, H, CROP = 1280, 720, 512


def make_images(folder: Path, n: int, seed: int = 0) -> list[tuple[Path, Path]]:
    """Write ``n`` structured 1280x720 scenes (blocks of class colours + noise) and labels."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        ids = rng.integers(0, 13, size=(H // 40, W // 40)).astype(np.uint8)
        ids = np.kron(ids, np.ones((40, 40), dtype=np.uint8))
        img = PALETTE[ids].astype(np.int16) + rng.integers(-25, 25, (H, W, 3))
        ip, lp = folder / f"{i}.png", folder / f"{i}_label.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(ip)
        Image.fromarray(ids + 1, "L").save(lp)
        pairs.append((ip, lp))
    return pairs


def baseline_augment(img: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """The typical PIL + torchvision v1 pipeline (resize the whole image, then crop)."""
    r = random.uniform(0.5, 2.0)
    size = (round(H / r), round(W / r))  # zoom by 1/r so a crop of 512 shows 512*r source px
    img = TF.resize(img, list(size), interpolation=T.InterpolationMode.BILINEAR)
    mask = TF.resize(mask, list(size), interpolation=T.InterpolationMode.NEAREST)
    pad_h, pad_w = max(CROP - size[0], 0), max(CROP - size[1], 0)
    if pad_h or pad_w:
        img = TF.pad(img, [0, 0, pad_w, pad_h], fill=0)
        mask = TF.pad(mask, [0, 0, pad_w, pad_h], fill=255)
    i, j, h, w = T.RandomCrop.get_params(img, (CROP, CROP))
    img, mask = TF.crop(img, i, j, h, w), TF.crop(mask, i, j, h, w)
    if random.random() < 0.5:
        img, mask = TF.hflip(img), TF.hflip(mask)
    img = T.ColorJitter(0.3, 0.3, 0.3)(img)
    if random.random() < 0.5:
        img = T.GaussianBlur(13, sigma=(0.1, 2.0))(img)
    x = TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)
    return x, torch.from_numpy(np.array(mask, dtype=np.int64))


def baseline_sample(ip: Path, lp: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode with PIL, then the baseline augmentation."""
    return baseline_augment(Image.open(ip).convert("RGB"), Image.open(lp))


HAZARDSEG_AUGMENT = build_train_transform(AugmentConfig())
"""hazardseg's train preset with the default AugmentConfig (crop 512, clamp)."""


def hazardseg_sample(ip: Path, lp: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode with hazardseg's loader, then the train preset."""
    with Image.open(lp) as m:
        return HAZARDSEG_AUGMENT(load_image(ip), m.convert("L"))


def throughput(fn: Callable, items: list, n: int) -> float:
    """Samples per second of ``fn`` over ``n`` samples (after one warm-up sample)."""
    fn(*items[0])
    t0 = time.perf_counter()
    for k in range(n):
        fn(*items[k % len(items)])
    return n / (time.perf_counter() - t0)


def main() -> None:
    """Run both pipelines on the same images and print samples/s and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="samples per pipeline and round")
    ap.add_argument("--images", type=int, default=6, help="distinct 1280x720 images")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; best is kept")
    args = ap.parse_args()
    torch.set_num_threads(1)
    random.seed(0)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        pairs = make_images(Path(tmp), args.images)
        decoded = [(load_image(ip), Image.open(lp).convert("L")) for ip, lp in pairs]
        best = {"base": 0.0, "ours": 0.0, "base_aug": 0.0, "ours_aug": 0.0}
        for _ in range(args.rounds):  # alternate so machine-load drift hits both alike
            runs = {
                "base": (baseline_sample, pairs),
                "ours": (hazardseg_sample, pairs),
                "base_aug": (baseline_augment, decoded),
                "ours_aug": (HAZARDSEG_AUGMENT, decoded),
            }
            for key, (fn, items) in runs.items():
                best[key] = max(best[key], throughput(fn, items, args.n))
    print(f"1280x720 -> 512x512 training samples, 1 thread, best of {args.rounds} rounds")
    print("                                   decode+augment   augment only  (samples/s)")
    print(f"  PIL + torchvision v1 baseline:   {best['base']:10.1f}   {best['base_aug']:12.1f}")
    print(f"  hazardseg train preset:          {best['ours']:10.1f}   {best['ours_aug']:12.1f}")
    print(
        f"  speed-up:                        {best['ours'] / best['base']:9.2f}x"
        f"   {best['ours_aug'] / best['base_aug']:11.2f}x"
    )


if __name__ == "__main__":
    main()
