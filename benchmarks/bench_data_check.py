"""`data check` speed: hazardseg's check vs decoding every image and label in full.

hazardseg's check reads image PNG headers and verifies their chunk CRCs (no pixel decode),
and decodes only the annotations (label values are needed). The obvious alternative decodes
both PNGs of every pair (what iterating the Dataset does). Also compares 1 vs 2 workers.

Run: python benchmarks/bench_data_check.py [--images 24] [--width 1280 --height 720]
The tree is generated here (noisy blocky scenes, official layout); no dataset is needed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from hazardseg.data.check import check_dataset
from hazardseg.data.streethazards import StreetHazards


def make_tree(root: Path, n: int, size: tuple[int, int]) -> None:
    """Write n validation pairs of the given size in the official layout (no .odgt)."""
    w, h = size
    rng = np.random.default_rng(0)
    for i in range(n):
        label = np.full((h, w), 8, np.uint8)
        for _ in range(30):
            y, x = int(rng.integers(0, h - 40)), int(rng.integers(0, w - 40))
            label[y : y + 40, x : x + 40] = int(rng.integers(1, 14))
        img = (label[..., None] * 17 + rng.integers(0, 30, (h, w, 3))).astype(np.uint8)
        for kind, arr in (("images", img), ("annotations", label)):
            p = root / "train" / kind / "validation" / "t4" / f"{i + 1}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(p)


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_tree(root, args.images, (args.width, args.height))

        def full_decode() -> None:
            ds = StreetHazards(root, "validation")
            for i in range(len(ds)):
                ds[i]

        t_full = best_of(full_decode)
        t_check = best_of(lambda: check_dataset(root, ["validation"], workers=1))
        t_check2 = best_of(lambda: check_dataset(root, ["validation"], workers=2))
    n = args.images
    print(f"{n} pairs of {args.width}x{args.height}")
    print(f"decode every image + label (Dataset): {t_full:.3f} s ({n / t_full:.1f} pairs/s)")
    print(f"hazardseg check, 1 worker:            {t_check:.3f} s ({n / t_check:.1f} pairs/s)")
    print(f"hazardseg check, 2 workers:           {t_check2:.3f} s ({n / t_check2:.1f} pairs/s)")
    print(f"speed-up check vs full decode: {t_full / t_check:.2f}x; "
          f"2 workers vs 1: {t_check / t_check2:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
