"""Outlier exposure on the demo setting: each seed's model from ``configs/synthetic_cpu.yaml``
against the same model fine-tuned with synthetic negatives
(``configs/synthetic_cpu_outliers.yaml``, ``--init``), every method, pooled and per-image
AUPR / FPR95, open-mIoU, closed mIoU, and the fine-tuning cost.

For each seed: train the demo model (``train.seed``), fine-tune it, evaluate both on the test
split with every method (fitted methods on 50 training scenes, as the demo) and the
``pooled``, ``per_image`` and ``open_miou`` protocols; validation mIoU before and after; the
fine-tuning time against the original training time (both from their ``metrics.jsonl``).

    python benchmarks/bench_outlier_exposure.py --out /tmp/bench_oe            # 3 seeds
    python benchmarks/bench_outlier_exposure.py --out /tmp/bench_oe --seeds 0 \\
        --set train.outliers.objective=entropy                              # a variant
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
FIT_IMAGES = "50"


def run(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "hazardseg", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def train_seconds(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return max(float(r.get("time_s") or 0.0) for r in rows)


def best_val(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return max(float(r["miou"]) for r in rows if r.get("kind") == "val")


def evaluate(ckpt: Path, data: Path, out: Path) -> dict:
    if not (out / "results.json").is_file():
        run(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out),
             "--fit-images", FIT_IMAGES, "--components", "none", "--quiet",
             "--protocols", "pooled,per_image,open_miou"])  # fmt: skip
    return json.loads((out / "results.json").read_text())


def finished(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` trained all its epochs (an interrupted one resumes)."""
    if not (run_dir / "metrics.jsonl").is_file():
        return False
    epochs = int(yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return any(r.get("kind") == "train" and int(r["epoch"]) >= epochs for r in rows)


def train(run_dir: Path, args: list[str]) -> None:
    if finished(run_dir):
        return
    resume = ["--resume"] if (run_dir / "last.pt").is_file() else []
    run(["train", *args, "--out", str(run_dir), "--no-progress", *resume])


def seed_run(seed: int, data: Path, out: Path, sets: list[str]) -> dict:
    base, tuned = out / f"seed{seed}" / "base", out / f"seed{seed}" / "oe"
    train(base, ["-c", str(REPO / "configs/synthetic_cpu.yaml"), "--data", str(data),
                 "--set", f"train.seed={seed}"])  # fmt: skip
    extra = [x for s in sets for x in ("--set", s)]
    recipe = str(REPO / "configs/synthetic_cpu_outliers.yaml")
    train(tuned, ["-c", recipe, "--data", str(data), "--init", str(base / "best.pt"),
                  "--set", f"train.seed={seed}", *extra])  # fmt: skip
    return {
        "base": evaluate(base / "best.pt", data, base / "eval"),
        "oe": evaluate(tuned / "best.pt", data, tuned / "eval"),
        "val_base": best_val(base),
        "val_oe": best_val(tuned),
        "train_s": train_seconds(base),
        "tune_s": train_seconds(tuned),
    }


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", type=Path, default=None, help="Existing demo-sized tree.")
    parser.add_argument("--set", action="append", default=[], help="Fine-tuning override.")
    args = parser.parse_args()
    data = args.data or args.out / "data"
    if not (data / "test").is_dir():
        run(["data", "synth", str(data), "--train", "300", "--val", "50", "--test", "100",
             "--size", "320x180", "--seed", "0", "-q"])  # fmt: skip
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [seed_run(s, data, args.out, args.set) for s in seeds]
    (args.out / "summary.json").write_text(json.dumps(runs, indent=1, default=str))
    report(runs, seeds)


def pooled(r: dict, kind: str, method: str) -> float:
    return r[kind]["methods"][method]["pooled"]["aupr"]


def report(runs: list[dict], seeds: list[int]) -> None:
    methods = list(runs[0]["base"]["methods"])
    print(f"\n{len(seeds)} seed(s) {seeds}; % (mean ± std over seeds)")
    print("| method | model | pooled AUPR | pooled FPR95 | per-image AUPR | per-image FPR95 "
          "| open mIoU |")  # fmt: skip
    print("|" + "---|" * 7)
    for m in methods:
        for kind in ("base", "oe"):
            rs = [r[kind]["methods"][m] for r in runs]
            cols = [
                mean_std([x["pooled"]["aupr"] for x in rs]),
                mean_std([x["pooled"]["fpr95"] for x in rs]),
                mean_std([x["per_image"]["aupr"] for x in rs]),
                mean_std([x["per_image"]["fpr95"] for x in rs]),
                mean_std([x["open_set"]["open_miou"] for x in rs]),
            ]
            label = "fine-tuned" if kind == "oe" else "base"
            print(f"| {m} | {label} | " + " | ".join(cols) + " |")
    for m in ("max_logit", "energy"):
        ratios = ", ".join(f"{pooled(r, 'oe', m) / pooled(r, 'base', m):.2f}x" for r in runs)
        print(f"{m}: pooled AUPR fine-tuned / base per seed: {ratios}")
    for kind in ("base", "oe"):
        best = max(methods, key=lambda m, k=kind: statistics.mean(pooled(r, k, m) for r in runs))
        print(f"best {kind}: {best} pooled AUPR {mean_std([pooled(r, kind, best) for r in runs])}")
    seg = {k: mean_std([r[k]["segmentation"]["miou"] for r in runs]) for k in ("base", "oe")}
    print(f"closed test mIoU: base {seg['base']}, fine-tuned {seg['oe']}")
    diff = ", ".join(f"{100 * (r['val_oe'] - r['val_base']):+.2f}" for r in runs)
    val_b, val_o = mean_std([r["val_base"] for r in runs]), mean_std([r["val_oe"] for r in runs])
    print(f"validation mIoU: base {val_b}, fine-tuned {val_o}; difference per seed {diff}")
    cost = ", ".join(
        f"{r['tune_s'] / r['train_s']:.2f} ({r['tune_s']:.0f} s / {r['train_s']:.0f} s)"
        for r in runs
    )
    print(f"fine-tuning time / training time per seed: {cost}")


if __name__ == "__main__":
    main()
