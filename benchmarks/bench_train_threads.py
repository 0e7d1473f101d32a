"""Training throughput when other processes share the cores: libgomp's default spin-wait
against hazardseg's default (``GOMP_SPINCOUNT=1000``, set on ``import hazardseg``).

Each measurement is a fresh ``hazardseg train`` process (``configs/synthetic_cpu.yaml``, one
epoch of ``--iters`` iterations, ``data.num_workers`` as given) while 0, 1 or 2 other
processes keep one core each busy (a Python busy loop). images/s is the median of the
"train" rows of metrics.jsonl after the first logging window. The two settings alternate,
``--repeats`` times each.

    python benchmarks/bench_train_threads.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {
    # libgomp spins 300,000 iterations at a barrier when OMP_WAIT_POLICY is unset: the
    # behaviour before hazardseg set its own default
    "libgomp default (spin 300000)": {"GOMP_SPINCOUNT": "300000"},
    "hazardseg default (spin 1000)": {},
}
ROOT = Path(__file__).resolve().parents[1]


def busy() -> subprocess.Popen:
    """A process that keeps one core busy."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def train_rate(data: Path, env_extra: dict[str, str], workers: int, iters: int) -> float:
    """Median training images/s of one short run."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        sets = [
            "train.epochs=1",
            f"train.max_iters_per_epoch={iters}",
            "train.log_every_iters=4",
            f"data.num_workers={workers}",
            "data.max_val_images=2",
        ]
        args = [sys.executable, "-m", "hazardseg", "train", "-c",
                str(ROOT / "configs" / "synthetic_cpu.yaml"), "--data", str(data),
                "--out", str(run), "--no-progress"]  # fmt: skip
        for s in sets:
            args += ["--set", s]
        env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT",)}
        env.update(env_extra)
        subprocess.run(args, check=True, env=env, capture_output=True)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        rates = [r["images_per_s"] for r in rows if r["kind"] == "train"][1:]
        return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="synthetic data (default: made)")
    ap.add_argument("--workers", type=int, default=1, help="data.num_workers")
    ap.add_argument("--iters", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--neighbours", default="0,1,2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "data"
            subprocess.run(
                [sys.executable, "-m", "hazardseg", "data", "synth", str(data), "--train", "96",
                 "--val", "4", "--test", "2", "--size", "320x180", "--seed", "0"],
                check=True, capture_output=True,
            )  # fmt: skip
        results: dict[tuple[str, int], list[float]] = {}
        for n in [int(v) for v in args.neighbours.split(",")]:
            hogs = [busy() for _ in range(n)]
            try:
                for _ in range(args.repeats):
                    for name, env in SETTINGS.items():
                        rate = train_rate(data, env, args.workers, args.iters)
                        results.setdefault((name, n), []).append(rate)
            finally:
                for h in hogs:
                    h.kill()
    print(
        f"cpus {os.cpu_count()}, data.num_workers {args.workers}, {args.iters} iterations, "
        f"median of {args.repeats} runs; images/s (share of the same setting's quiet rate)"
    )
    ns = sorted({n for _, n in results})
    print("| setting | " + " | ".join(f"{n} busy" for n in ns) + " |")
    print("|---|" + "---|" * len(ns))
    for name in SETTINGS:
        quiet = statistics.median(results[(name, 0)]) if (name, 0) in results else None
        cells = []
        for n in ns:
            rate = statistics.median(results[(name, n)])
            share = f" ({100 * rate / quiet:.0f}%)" if quiet and n else ""
            cells.append(f"{rate:.1f}{share}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
