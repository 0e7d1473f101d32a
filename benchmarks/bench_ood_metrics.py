"""Pooled OOD metrics over many pixels: hazardseg's PooledOOD against the usual alternatives.

Approaches, each run in its own subprocess (one thread) so its peak memory can be read:

- ``hazardseg``: ``PooledOOD`` fed one 1280x720 image (921,600 pixels) at a time, float32
  scores, ``--pixels`` pixels (default 100M); and the same with float16 scores.
- ``sklearn``: ``roc_auc_score``, ``average_precision_score`` and ``roc_curve`` (FPR95) on all
  pixels held in memory, on ``--sklearn-pixels`` pixels (default 20M, the largest size that
  runs in reasonable time on a 2-core machine; pass ``--sklearn-pixels 100000000`` to try all).
  hazardseg is also run on exactly these pixels, so its error against scikit-learn is direct.
- ``torchmetrics``: ``BinaryAUROC`` / ``BinaryAveragePrecision`` / ``BinaryROC`` with
  ``thresholds=None`` (exact mode; keeps every pixel), on the same ``--sklearn-pixels`` pixels.
- ``subsample-1M``: one pass that keeps a random 1M pixels as float16, then scikit-learn on them
  (what the reference run did).
- ``sort-reference``: exact metrics on all ``--pixels`` pixels by one full sort
  (``hazardseg.metrics.exact_curve_metrics``; validated against scikit-learn in the tests): the
  exact values the ``--pixels`` rows are compared with.

Errors are absolute differences to the exact values on the same pixels. Pixels are synthetic:
1% anomalies, normal scores N(0, 1), anomaly scores N(2, 1), generated chunk by chunk from a
fixed seed (generation time is not counted). "Mpx per CPU-s" divides by the process CPU time
(one thread), which is less sensitive than wall time to other load on a shared machine.
"peak MB" is the process's peak RSS above its RSS after imports: it includes generating the
pixels (chunk by chunk for the streaming approaches, all at once for the in-memory ones).

    python benchmarks/bench_ood_metrics.py                     # 100M pixels (minutes)
    python benchmarks/bench_ood_metrics.py --pixels 10000000 --sklearn-pixels 5000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

CHUNK = 921_600
METRICS = ("auroc", "aupr", "fpr95")


def chunks(n: int, dtype: str, seed: int = 0) -> Iterator[tuple]:
    """Deterministic (scores, is_anomaly) chunks of one image each, ``n`` pixels in total."""
    import torch

    for i, start in enumerate(range(0, n, CHUNK)):
        size = min(CHUNK, n - start)
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        y = torch.rand(size, generator=g) < 0.01
        s = torch.randn(size, generator=g) + 2.0 * y.float()
        yield s.to(getattr(torch, dtype)), y


def all_pixels(n: int, dtype: str):
    import torch

    parts = list(chunks(n, dtype))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fpr_at_95(fpr, tpr) -> float:
    import numpy as np

    fpr, tpr = np.asarray(fpr), np.asarray(tpr)
    return float(fpr[np.searchsorted(tpr, 0.95, side="left")])


def worker(name: str, n: int, dtype: str) -> dict:
    """Run one approach; return its metrics, seconds and memory."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    out: dict = {"approach": name, "pixels": n, "dtype": dtype}
    if name == "hazardseg":
        from hazardseg.metrics import PooledOOD

        base = rss_mb()
        acc, seconds, cpu = PooledOOD(), 0.0, 0.0
        steady_px, steady_cpu = 0, 0.0  # updates made once in the histogram stage
        for s, y in chunks(n, dtype):
            steady = acc.mode == "histogram"
            t0, c0 = time.perf_counter(), time.process_time()
            acc.update(s, y)
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
            if steady:
                steady_px += s.numel()
                steady_cpu += time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        res = acc.compute()
        out["compute_s"] = time.perf_counter() - t0
        out["cpu_s"] = cpu + time.process_time() - c0
        out["steady_mpx_per_cpu_s"] = steady_px / max(steady_cpu, 1e-9) / 1e6
        out.update({m: res[m] for m in METRICS}, exact=res["exact"], bound=res["error_bound"])
        out.update(
            update_s=seconds, seconds=seconds + out["compute_s"], state_mb=acc.nbytes / 2**20
        )
        out["mem_mb"] = peak_mb() - base
        return out
    if name == "subsample-1M":
        from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

        base = rss_mb()
        rng = np.random.default_rng(0)
        keep_s, keep_y, seconds, cpu = [], [], 0.0, 0.0
        for s, y in chunks(n, dtype):
            t0, c0 = time.perf_counter(), time.process_time()
            k = min(s.numel(), round(1_000_000 * s.numel() / n))
            idx = torch.from_numpy(rng.choice(s.numel(), size=k, replace=False))
            keep_s.append(s[idx].to(torch.float16))
            keep_y.append(y[idx])
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        sc = torch.cat(keep_s).float().numpy()
        lab = torch.cat(keep_y).numpy()
        fpr, tpr, _ = roc_curve(lab, sc, drop_intermediate=False)
        out.update(auroc=roc_auc_score(lab, sc), aupr=average_precision_score(lab, sc))
        out["fpr95"] = fpr_at_95(fpr, tpr)
        out["seconds"] = seconds + time.perf_counter() - t0
        out["cpu_s"] = cpu + time.process_time() - c0
        out["mem_mb"] = peak_mb() - base
        return out
    base = rss_mb()
    s, y = all_pixels(n, dtype)
    if name == "sklearn":
        from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

        sc, lab = s.float().numpy(), y.numpy()
        t0, c0 = time.perf_counter(), time.process_time()
        out["auroc"] = roc_auc_score(lab, sc)
        out["aupr"] = average_precision_score(lab, sc)
        fpr, tpr, _ = roc_curve(lab, sc, drop_intermediate=False)
        out["fpr95"] = fpr_at_95(fpr, tpr)
    elif name == "torchmetrics":
        from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinaryROC

        t0, c0 = time.perf_counter(), time.process_time()
        metrics = [BinaryAUROC(thresholds=None), BinaryAveragePrecision(thresholds=None)]
        roc = BinaryROC(thresholds=None)
        for start in range(0, n, CHUNK):
            part = slice(start, start + CHUNK)
            for m in (*metrics, roc):
                m.update(s[part].float(), y[part].long())
        out["auroc"] = float(metrics[0].compute())
        out["aupr"] = float(metrics[1].compute())
        fpr, tpr, _ = roc.compute()
        out["fpr95"] = fpr_at_95(fpr.numpy(), tpr.numpy())
    elif name == "sort-reference":
        from hazardseg.metrics import exact_curve_metrics

        t0, c0 = time.perf_counter(), time.process_time()
        res = exact_curve_metrics(s, y)
        out.update({m: res[m] for m in METRICS})
    else:
        raise SystemExit(f"unknown approach {name!r}")
    out["seconds"] = time.perf_counter() - t0
    out["cpu_s"] = time.process_time() - c0
    out["mem_mb"] = peak_mb() - base
    return out


def run(name: str, n: int, dtype: str) -> dict:
    """Run ``worker`` in a fresh single-threaded subprocess and parse its JSON line."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--worker", name, "--pixels", str(n), "--dtype", dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        return {"approach": name, "pixels": n, "dtype": dtype, "error": proc.stderr[-400:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def row(r: dict, ref: dict | None) -> str:
    if "error" in r:
        return f"| {r['approach']} | {r['pixels']:,} | {r['dtype']} | failed: {r['error']!r} |"
    mpx = r["pixels"] / r["seconds"] / 1e6
    mpx_s = f"{mpx:.1f} | {r['pixels'] / r['cpu_s'] / 1e6:.1f}"
    errs = " | ".join(f"{abs(r[m] - ref[m]):.1e}" for m in METRICS) if ref else "ref | ref | ref"
    return (
        f"| {r['approach']} | {r['pixels']:,} | {r['dtype']} | {r['seconds']:.2f} | {mpx_s} | "
        f"{r['mem_mb']:.0f} | {errs} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pixels", type=int, default=100_000_000)
    parser.add_argument("--sklearn-pixels", type=int, default=20_000_000)
    parser.add_argument("--skip-torchmetrics", action="store_true")
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.pixels, args.dtype)))
        return

    n, m = args.pixels, min(args.sklearn_pixels, args.pixels)
    results = []
    ref_n = run("sort-reference", n, "float32")
    ref_n16 = run("sort-reference", n, "float16")
    ref_m = run("sklearn", m, "float32")
    plan = [
        (run("hazardseg", n, "float32"), ref_n),
        (run("hazardseg", n, "float16"), ref_n16),
        (run("subsample-1M", n, "float32"), ref_n),
        (ref_n, None),
        (run("hazardseg", m, "float32"), ref_m),
        (ref_m, None),
    ]
    if not args.skip_torchmetrics:
        plan.append((run("torchmetrics", m, "float32"), ref_m))
    print(
        "| approach | pixels | scores | seconds | Mpx/s | peak MB | AUROC err | AP err | "
        "FPR95 err |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r, ref in plan:
        print(row(r, None if ref is None or "error" in ref else ref))
        results.append(r)
    fast = {(r["pixels"], r["dtype"]): r for r in results if r["approach"] == "hazardseg"}
    ours = fast.get((m, "float32"))
    if ours and "error" not in ref_m and "error" not in ours:
        print(
            f"\nOn {m:,} pixels: hazardseg is {ref_m['seconds'] / ours['seconds']:.1f}x faster "
            f"(wall clock; {ref_m['cpu_s'] / ours['cpu_s']:.1f}x in CPU time) than scikit-learn "
            f"and its peak memory is {ref_m['mem_mb'] / max(ours['mem_mb'], 1):.1f}x smaller."
        )
    big = fast.get((n, "float32"))
    if big and "error" not in big:
        print(
            f"{n:,} float32 pixels: exact={big['exact']}, state {big['state_mb']:.0f} MiB, "
            f"worst-case error bound {big['bound']}; histogram-stage update "
            f"{big['steady_mpx_per_cpu_s']:.1f} M pixels per CPU-second"
        )
    print("\nMachine: " + os.uname().machine + f", {os.cpu_count()} CPUs, one thread per approach")


if __name__ == "__main__":
    main()
