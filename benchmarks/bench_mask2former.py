"""Mask2Former (``mask2former_tiny``) and RbA on the demo setting, against LR-ASPP.

For each seed: train ``configs/mask2former_tiny_cpu.yaml`` (``train.seed``), evaluate every
method (``rba`` included) on the test split (pooled, per-image and open-mIoU protocols);
fine-tune it with synthetic negatives and RbA's outlier objective
(``train.outliers.objective=rba``, the authors' config defaults ``m_in=-1``, ``m_out=-0.1``,
weight 1) and evaluate again. The LR-ASPP numbers to compare with
come from ``benchmarks/bench_outlier_exposure.py``'s output folder (``--lraspp DIR``: its
``seedN/base`` and ``seedN/oe`` evaluations of the same seeds). Also: the time of a training
epoch of both models (from their ``metrics.jsonl``) and the forward time at 1280x720 of
``mask2former_tiny``, ``lraspp_mobilenet_v3`` and ``deeplabv3_resnet50`` (random weights,
fp32, best of ``--repeats``). Epoch time: one training epoch of each recipe, run back to back
in this process's session (``--repeats`` rounds, alternating, best of each), so both models see
the same machine load.

    python benchmarks/bench_mask2former.py --out /tmp/bench_m2f --lraspp /tmp/bench_oe
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_outlier_exposure import mean_std

REPO = Path(__file__).resolve().parents[1]
TUNE = [
    "train.outliers.source=synthetic",
    "train.outliers.objective=rba",
    "train.outliers.m_in=-1",
    "train.outliers.m_out=-0.1",
    "train.outliers.weight=1",
    "train.epochs=5",
    "train.lr=0.0003",
]


def run(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "hazardseg", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def images_per_second(run_dir: Path) -> float:
    """Median training throughput (images/s) over the logged intervals."""
    return statistics.median(
        float(r["images_per_s"]) for r in rows(run_dir) if r["kind"] == "train"
    )


def evaluate(ckpt: Path, data: Path, out: Path) -> dict:
    if not (out / "results.json").is_file():
        run(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out),
             "--fit-images", "50", "--components", "none", "--quiet",
             "--protocols", "pooled,per_image,open_miou"])  # fmt: skip
    return json.loads((out / "results.json").read_text())


def seed_run(seed: int, data: Path, out: Path) -> dict:
    base, tuned = out / f"seed{seed}" / "m2f", out / f"seed{seed}" / "m2f_rba"
    recipe = ["train", "-c", str(REPO / "configs/mask2former_tiny_cpu.yaml"), "--data", str(data)]
    if not (base / "best.pt").is_file():
        run([*recipe, "--out", str(base), "--set", f"train.seed={seed}", "--no-progress"])
    if not (tuned / "best.pt").is_file():
        sets = [x for s in [*TUNE, f"train.seed={seed}"] for x in ("--set", s)]
        init = ["--init", str(base / "best.pt")]
        run([*recipe, *init, "--out", str(tuned), "--no-progress", *sets])
    return {
        "base": evaluate(base / "best.pt", data, base / "eval"),
        "rba": evaluate(tuned / "best.pt", data, tuned / "eval"),
        "val": max(float(r["miou"]) for r in rows(base) if r.get("kind") == "val"),
        "images_per_s": images_per_second(base),
    }


def epoch_seconds(data: Path, out: Path, repeats: int) -> dict[str, float]:
    """Best training time of one epoch of each recipe, the recipes alternating."""
    best: dict[str, float] = {}
    for i in range(repeats):
        for name in ("synthetic_cpu", "mask2former_tiny_cpu"):
            run_dir = out / "epoch_time" / f"{name}_{i}"
            if not (run_dir / "metrics.jsonl").is_file():
                recipe = str(REPO / f"configs/{name}.yaml")
                run(["train", "-c", recipe, "--data", str(data), "--out", str(run_dir),
                     "--set", "train.epochs=1", "--no-progress"])  # fmt: skip
            secs = max(float(r["time_s"]) for r in rows(run_dir) if r["kind"] == "train")
            best[name] = min(best.get(name, float("inf")), secs)
    return best


def forward_times(repeats: int) -> dict[str, float]:
    import torch

    from hazardseg.models import create_model

    torch.set_num_threads(2)
    x = torch.randn(1, 3, 720, 1280)
    out = {}
    for name in ("mask2former_tiny", "lraspp_mobilenet_v3", "deeplabv3_resnet50"):
        model = create_model(name, num_classes=13).eval()
        best = float("inf")
        with torch.inference_mode():
            model(x)
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x)
                best = min(best, time.perf_counter() - t0)
        out[name] = best
    return out


def aupr(res: dict, method: str) -> float:
    return res["methods"][method]["pooled"]["aupr"]


def open_miou(res: dict, method: str) -> float:
    return res["methods"][method]["open_set"]["open_miou"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lraspp", type=Path, required=True, help="bench_outlier_exposure out")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = args.data or args.lraspp / "data"
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [seed_run(s, data, args.out) for s in seeds]
    lr = [
        {
            k: json.loads((args.lraspp / f"seed{s}" / k / "eval" / "results.json").read_text())
            for k in ("base", "oe")
        }
        for s in seeds
    ]
    lr_ips = [images_per_second(args.lraspp / f"seed{s}" / "base") for s in seeds]
    (args.out / "summary.json").write_text(json.dumps(runs, indent=1, default=str))
    print(f"\n{len(seeds)} seed(s) {seeds}; pooled AUPR %, mean ± std")
    print("| method | mask2former_tiny | + RbA outlier fine-tuning | open mIoU | open mIoU after |")
    print("|---|---|---|---|---|")
    for m in runs[0]["base"]["methods"]:
        row = [
            mean_std([aupr(r["base"], m) for r in runs]),
            mean_std([aupr(r["rba"], m) for r in runs]),
            *(mean_std([open_miou(r[k], m) for r in runs]) for k in ("base", "rba")),
        ]
        print(f"| {m} | " + " | ".join(row) + " |")
    print("validation mIoU mask2former_tiny: " + mean_std([r["val"] for r in runs]))
    for kind in ("base", "oe"):
        best = max(
            lr[0][kind]["methods"], key=lambda m, k=kind: statistics.mean(aupr(x[k], m) for x in lr)
        )
        print(f"LR-ASPP {kind} best: {best} {mean_std([aupr(x[kind], best) for x in lr])}")
    ratio = [e / r["images_per_s"] for r, e in zip(runs, lr_ips, strict=True)]
    print("epoch time from the seeds' logs, mask2former_tiny / lraspp: "
          + ", ".join(f"{x:.2f}x" for x in ratio))  # fmt: skip
    epochs = epoch_seconds(data, args.out, args.repeats)
    m2f, lr_s = epochs["mask2former_tiny_cpu"], epochs["synthetic_cpu"]
    print(f"one epoch back to back: mask2former_tiny {m2f:.1f} s, lraspp {lr_s:.1f} s, "
          f"{m2f / lr_s:.2f}x")  # fmt: skip
    times = forward_times(args.repeats)
    print("forward 1280x720 (s): " + ", ".join(f"{k} {v:.3f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
