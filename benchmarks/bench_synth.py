"""Speed of the synthetic scene generator: images/s at several sizes on one core.

Measured in the same run, per size:
- render: ``render_scene`` only (test scenes, with anomalies);
- dataset: the full ``generate_dataset`` with one process (render + both PNGs at zlib
  level 1 + atomic writes; the .odgt files are fsynced);
- level 6: the obvious alternative, render + both PNGs written the plain way with PIL's
  default compression (level 6) and ``Image.save`` straight to the file;
- 2 workers: ``generate_dataset(workers=2)`` (wall clock only).
Rates are given per CPU-second of this process (what one core delivers, robust to other
jobs on the machine) and per wall-clock second. "ratio" = dataset / level 6 (CPU rates).
Run: python benchmarks/bench_synth.py [--n 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from hazardseg.data.classes import ids_to_png
from hazardseg.data.synth import generate_dataset, render_scene


def _rates(fn: Callable[[], None], n: int) -> tuple[float, float]:
    """(images per CPU-second, images per wall-second) of ``fn`` that handles ``n`` images."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return n / (time.process_time() - cpu), n / (time.perf_counter() - wall)


def _level6(root: Path, n: int, size: tuple[int, int]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgb, ids = render_scene(i, size, "t5", True)
        Image.fromarray(rgb, "RGB").save(root / f"{i}.png")
        Image.fromarray(ids_to_png(ids), "L").save(root / f"{i}_label.png")


def main() -> None:
    """Print a table of generator speeds."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=60, help="images per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("images/s: cpu = per CPU-second of one process, wall = per wall-clock second")
    print(
        f"{'size':>9} {'render cpu':>10} {'dataset cpu':>11} {'dataset wall':>12} "
        f"{'level6 cpu':>10} {'2 workers wall':>14} {'ratio':>6}"
    )
    for size in ((160, 96), (320, 180), (640, 360)):
        n = args.n if size[0] <= 320 else max(args.n // 4, 5)
        render, _ = _rates(
            lambda n=n, size=size: [render_scene(i, size, "t5", True) for i in range(n)], n
        )
        with tempfile.TemporaryDirectory() as tmp:
            full_cpu, full_wall = _rates(
                lambda n=n, size=size, tmp=tmp: generate_dataset(
                    Path(tmp) / "d", 0, 0, n, size=size, progress=False
                ),
                n,
            )
            lvl6, _ = _rates(lambda n=n, size=size, tmp=tmp: _level6(Path(tmp) / "l6", n, size), n)
            _, two = _rates(
                lambda n=n, size=size, tmp=tmp: generate_dataset(
                    Path(tmp) / "d2", 0, 0, n, size=size, progress=False, workers=2
                ),
                n,
            )
        print(
            f"{size[0]:>4}x{size[1]:<4} {render:10.1f} {full_cpu:11.1f} {full_wall:12.1f} "
            f"{lvl6:10.1f} {two:14.1f} {full_cpu / lvl6:6.2f}"
        )


if __name__ == "__main__":
    main()
