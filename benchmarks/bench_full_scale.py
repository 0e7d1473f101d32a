"""Full-scale rehearsal: calibrate + evaluate at the real StreetHazards size on synthetic scenes.

Generates (or reuses) a synthetic StreetHazards-format tree at the official 1280x720 size
(1500 test images and some validation/training images by default), saves a randomly
initialised small model, then runs the real commands as a user would:

1. a forward-only pass over the first ``--baseline-images`` test images (the same loader and
   forward function, no methods, no metrics): the obvious alternative each stage is compared to;
2. ``hazardseg calibrate`` on the validation split (fits SML/HEAT on the training split);
3. ``hazardseg evaluate`` on the test split: all six methods, mIoU, pooled, per-image and
   component metrics (at the calibrated thresholds, in the single pass);
4. optionally (``--torchrun``) the same ``evaluate`` under ``torchrun --nproc_per_node 2``
   (gloo, each process with the 1-process run's thread count, so the network computes the same
   logits), compared metric by metric (counts included) with the 1-process run.

It reports wall time per stage, what methods + metrics add on top of the forward pass, peak
RSS of each command, peak extra disk (files under the output folder and the command's temp
folder), and the metric-update speed in pixels/s per method per core.

    python benchmarks/bench_full_scale.py [--root DIR] [--test 1500] [--val 100] [--train 20]
        [--threads 2] [--baseline-images 40] [--torchrun] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from hazardseg.config import EvalConfig
from hazardseg.data.classes import KNOWN_CLASS_NAMES
from hazardseg.data.streethazards import StreetHazards
from hazardseg.data.synth import generate_dataset
from hazardseg.evaluation.passes import open_split
from hazardseg.models import create_model
from hazardseg.models.checkpoint import save_checkpoint
from hazardseg.models.forward import forward_logits

METHODS = ("msp", "max_logit", "energy", "entropy", "sml", "heat")


def tree_size(*folders: Path) -> int:
    """Bytes of every regular file below ``folders``."""
    total = 0
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def run_measured(cmd: list[str], env: dict[str, str], watch: list[Path]) -> dict[str, Any]:
    """Run ``cmd``; poll its peak RSS (VmHWM) and the peak size of the ``watch`` folders."""
    base = tree_size(*watch)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = {"rss_kb": 0, "disk": 0}

    def poll() -> None:
        while proc.poll() is None:
            try:
                text = Path(f"/proc/{proc.pid}/status").read_text()
                for line in text.splitlines():
                    if line.startswith("VmHWM:"):
                        peak["rss_kb"] = max(peak["rss_kb"], int(line.split()[1]))
            except OSError:
                pass
            peak["disk"] = max(peak["disk"], tree_size(*watch) - base)
            time.sleep(0.5)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, _ = proc.communicate()
    th.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stdout.write(out.decode(errors="replace"))
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return {
        "wall_s": wall,
        "peak_rss_mb": peak["rss_kb"] / 1024,
        "peak_extra_disk_mb": max(peak["disk"], tree_size(*watch) - base) / 2**20,
    }


def ensure_data(root: Path, counts: dict[str, int], size: tuple[int, int], workers: int) -> float:
    """Generate the synthetic tree unless it already holds exactly these counts."""
    try:
        have = {s: len(StreetHazards(root, s)) for s in counts}
    except Exception:
        have = {}
    if have == counts:
        return 0.0
    t0 = time.perf_counter()
    generate_dataset(
        root, counts["train"], counts["validation"], counts["test"], size=size, seed=0,
        progress=True, overwrite=True, workers=workers,
    )  # fmt: skip
    return time.perf_counter() - t0


def forward_only(ckpt_model: torch.nn.Module, root: Path, n: int, threads: int) -> float:
    """Seconds per image of data loading + the one forward pass (logits to label size)."""
    torch.set_num_threads(threads)
    ds = open_split(root, "test", EvalConfig(), max_images=n + 1)
    loader = DataLoader(ds, batch_size=1, num_workers=0)
    times = []
    with torch.inference_mode():
        t_prev = time.perf_counter()
        for i, batch in enumerate(loader):
            forward_logits(ckpt_model, batch["image"], "cpu", batch["mask"].shape[-2:])
            now = time.perf_counter()
            if i > 0:  # the first image warms up
                times.append(now - t_prev)
            t_prev = now
    return sum(times) / len(times)


def compare_results(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest absolute difference over every metric of two results.json documents."""
    worst = 0.0

    def walk(x: Any, y: Any) -> None:
        nonlocal worst
        if isinstance(x, dict):
            for k in x:
                if k in ("curves", "timing", "created", "thresholds"):
                    continue
                walk(x[k], y.get(k) if isinstance(y, dict) else None)
        elif isinstance(x, float) and isinstance(y, float):
            if not (math.isnan(x) and math.isnan(y)):
                worst = max(worst, abs(x - y))
        elif isinstance(x, int | float) and isinstance(y, int | float):
            worst = max(worst, abs(float(x) - float(y)))

    for section in ("segmentation", "methods"):
        walk(a[section], b[section])
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("bench-data/full-scale"))
    ap.add_argument("--out", type=Path, default=Path("bench-data/full-scale-runs"))
    ap.add_argument("--test", type=int, default=1500)
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--train", type=int, default=20)
    ap.add_argument("--fit-images", type=int, default=20)
    ap.add_argument(
        "--max-test", type=int, default=None, help="evaluate only the first N test images"
    )
    ap.add_argument(
        "--max-val", type=int, default=None, help="calibrate on the first N validation images"
    )
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--model", default="lraspp_mobilenet_v3")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--baseline-images", type=int, default=40)
    ap.add_argument("--torchrun", action="store_true", help="also evaluate with 2 processes")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    counts = {"train": args.train, "validation": args.val, "test": args.test}
    gen_s = ensure_data(args.root, counts, (w, h), args.threads)
    test_files = [s.image_path for s in StreetHazards(args.root, "test").samples]
    image_bytes = sum(f.stat().st_size for f in test_files[: args.max_test])

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    ckpt = save_checkpoint(
        args.out / "model.pt", model, model_name=args.model,
        class_names=list(KNOWN_CLASS_NAMES), config={}, epoch=0, best_metric=None,
    )  # fmt: skip
    fwd = forward_only(model, args.root, args.baseline_images, args.threads)

    exe = [sys.executable, "-m", "hazardseg"]
    tmp = args.out / "tmp"
    tmp.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TMPDIR": str(tmp)}
    common = [
        "--checkpoint", str(ckpt), "--data", str(args.root), "--methods", ",".join(METHODS),
        "--fit-images", str(args.fit_images), "--batch-size", str(args.batch_size),
        "--device", "cpu", "--quiet",
    ]  # fmt: skip
    val_cap = [] if args.max_val is None else ["--max-images", str(args.max_val)]
    test_cap = [] if args.max_test is None else ["--max-images", str(args.max_test)]
    cal = run_measured(
        [*exe, "calibrate", *common, *val_cap, "--split", "validation"], env, [args.out, tmp]
    )
    ev_out = args.out / "eval"
    ev = run_measured(
        [*exe, "evaluate", *common, *test_cap, "--split", "test", "--out", str(ev_out)],
        env,
        [args.out, tmp],
    )
    res = json.loads((ev_out / "results.json").read_text())
    t = res["timing"]
    n = res["data"]["num_images"]
    px = n * w * h
    added_in_pass = t["pass_s"] - t["data_s"] - t["forward_s"]
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads",
        "images": counts,
        "size": [w, h],
        "model": args.model,
        "generate_s": gen_s,
        "forward_only_s_per_image": fwd,
        "calibrate": cal,
        "evaluate": ev,
        "evaluate_pass_s_per_image": t["pass_s"] / n,
        "added_vs_forward_only": t["pass_s"] / n / fwd - 1,
        "added_vs_forward_in_pass": added_in_pass / (t["data_s"] + t["forward_s"]),
        "methods_share_of_forward": t["methods_s"] / t["forward_s"],
        "metric_updates_mpx_per_s_per_method_per_core": px * len(METHODS) / t["ood_s"] / 1e6,
        "components_mpx_per_s_per_method": px * len(METHODS) / max(t["components_s"], 1e-9) / 1e6,
        "segmentation_mpx_per_s": px / max(t["segmentation_s"], 1e-9) / 1e6,
        "extra_disk_share_of_image_bytes": ev["peak_extra_disk_mb"] * 2**20 / image_bytes,
        "test_image_bytes_mb": image_bytes / 2**20,
        "timing": t,
        "miou": res["segmentation"]["miou"],
    }
    if args.json is not None:  # written again at the end; kept if the torchrun stage is cut
        args.json.write_text(json.dumps(report, indent=2))
    if args.torchrun:
        tr_out = args.out / "eval-2proc"
        trun = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", "2", "-m", "hazardseg", "evaluate", *common,
            *test_cap, "--split", "test", "--out", str(tr_out),
        ]  # fmt: skip
        # each rank runs with the 1-process run's thread count: convolution results depend
        # on it at the ulp level, and the comparison is meant to be exact
        report["evaluate_2proc"] = run_measured(trun, env, [args.out, tmp])
        two = json.loads((tr_out / "results.json").read_text())
        report["max_abs_diff_2proc_vs_1proc"] = compare_results(res, two)
        report["max_abs_diff_2proc_vs_1proc_reverse"] = compare_results(two, res)

    print(json.dumps({k: v for k, v in report.items() if k != "timing"}, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
