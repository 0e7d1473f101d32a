"""Speed of the synthetic scene generator: images/s at several sizes, one core.

Compares, in the same run: rendering only; the full ``generate_dataset`` (render + both PNGs
at zlib level 1 + atomic, fsynced writes) with 1 and 2 worker processes; and the obvious
alternative of encoding both PNGs at PIL's default level 6 (in memory, no file writes).
"ratio" = full dataset rate (1 worker) / level-6 rate.
Run: python benchmarks/bench_synth.py [--n 100]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from hazardseg.data.classes import ids_to_png
from hazardseg.data.synthetic import generate_dataset, render_scene


def _rate(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def _default_png_write(i: int, size: tuple[int, int]) -> None:
    rgb, ids = render_scene(i, size, "t5", True)
    for arr, mode in ((rgb, "RGB"), (ids_to_png(ids), "L")):
        buf = io.BytesIO()
        Image.fromarray(arr, mode).save(buf, format="PNG")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100, help="images per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    header = f"{'size':>9} {'render/s':>9} {'dataset/s':>10} {'2 workers/s':>12} {'level6/s':>9}"
    print(header + f" {'ratio':>6}")
    for size in ((160, 96), (320, 180), (640, 360)):
        n = args.n if size[0] <= 320 else max(args.n // 4, 5)
        render = _rate(lambda i, size=size: render_scene(i, size, "t5", True), n)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            generate_dataset(Path(tmp) / "d", 0, 0, n, size=size, progress=False)
            full = n / (time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            generate_dataset(Path(tmp) / "d", 0, 0, n, size=size, progress=False, workers=2)
            two = n / (time.perf_counter() - start)
        level6 = _rate(lambda i, size=size: _default_png_write(i, size), n)
        print(
            f"{size[0]:>4}x{size[1]:<4} {render:9.1f} {full:10.1f} {two:12.1f} {level6:9.1f} "
            f"{full / level6:6.2f}"
        )


if __name__ == "__main__":
    main()
