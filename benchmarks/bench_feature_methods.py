"""Feature-density methods and test-time augmentation on the full demo setting, over seeds.

For every trained run (``hazardseg train -c configs/synthetic_cpu.yaml --set train.seed=S``)
this evaluates every anomaly method on the test split with and without TTA (fitted methods
fitted in one pass on ``--fit-images`` training images, each TTA setting with its own state
file), the validation mIoU with and without TTA, the time each method's score adds to the
forward pass (one forward with features, then every method timed on the same batch), and the
fitting cost of every fitted method (time inside its ``fit_update``/``fit_end``, beside the
forward time of the fitting pass). It writes ``OUT/feature_methods.json`` and prints markdown
tables (mean +- std over runs).

    hazardseg data synth DATA --train 300 --val 50 --test 100 --size 320x180 --seed 0
    for S in 0 1 2; do hazardseg train -c configs/synthetic_cpu.yaml --data DATA \\
        --out RUNS/seed$S --set train.seed=$S; done
    python benchmarks/bench_feature_methods.py --data DATA --runs RUNS/seed0 RUNS/seed1 \\
        RUNS/seed2 --out OUT [--tta 0.75,1,flip] [--fit-images 50]

``--report OUT/feature_methods.json`` re-prints the tables of a finished run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from hazardseg.anomaly import AnomalyMethod, create_method, list_methods
from hazardseg.anomaly.state import AnomalyState
from hazardseg.data.streethazards import StreetHazards
from hazardseg.data.transforms import build_eval_transform
from hazardseg.evaluation import evaluate
from hazardseg.evaluation.spec import RunOptions, resolve_spec
from hazardseg.models.checkpoint import load_model
from hazardseg.models.forward import forward_logits, parse_tta

EXISTING = ("msp", "max_logit", "energy", "entropy", "sml", "heat")
FEATURE = ("knn", "mahalanobis")


@contextlib.contextmanager
def fit_timers() -> Iterator[dict[str, float]]:
    """Accumulate the seconds every fitted method spends in fit_update / fit_end."""
    times: dict[str, float] = {}
    patched = []
    for name in list_methods():
        cls = type(create_method(name))
        if not create_method(name).needs_fit or cls in [c for c, _, _ in patched]:
            continue
        for attr in ("fit_update", "fit_end"):
            orig = getattr(cls, attr)

            def timed(self: AnomalyMethod, *a: Any, _orig: Any = orig, **k: Any) -> Any:
                t = time.perf_counter()
                try:
                    return _orig(self, *a, **k)
                finally:
                    times[self.name] = times.get(self.name, 0.0) + time.perf_counter() - t

            patched.append((cls, attr, orig))
            setattr(cls, attr, timed)
    try:
        yield times
    finally:
        for cls, attr, orig in patched:
            setattr(cls, attr, orig)


def method_times(
    ckpt: Path, data: Path, state: Path, tta: str | None, images: int, repeats: int
) -> dict[str, float]:
    """Seconds per image: the forward with features (``forward``) and each method's score."""
    model, info = load_model(ckpt, device="cpu")
    spec_resize = (info.get("config") or {}).get("eval", {}).get("resize", "native")
    ds = StreetHazards(data, "test", build_eval_transform(spec_resize), max_images=images)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    size = ds[0]["mask"].shape[-2:]
    methods = {n: create_method(n) for n in list_methods()}
    wanted = {"resize": spec_resize, "tta": str(parse_tta(tta) or "none")}
    fits = AnomalyState.read(state)
    for method in methods.values():
        if method.needs_fit:  # the newest fit under this resize and TTA
            (entry, *_) = [
                e for e in reversed(fits.fits_of(method))
                if all(str(e["fit"].get(k)) == v for k, v in wanted.items())
            ]  # fmt: skip
            method.load_state_dict(dict(entry["state"]))
    out: dict[str, float] = {}
    with torch.inference_mode():
        forward_logits(model, x[:1], "cpu", size, features=True, tta=tta)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            logits, feats = forward_logits(model, x, "cpu", size, features=True, tta=tta)
            best = min(best, time.perf_counter() - t)
        out["forward"] = best / len(x)
        for name, m in methods.items():
            if not m.fitted:
                continue
            m.score(logits[:1], None if feats is None else feats[:1])
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                m.score(logits, feats)
                best = min(best, time.perf_counter() - t)
            out[name] = best / len(x)
    return out


def knn_fit_time(run: Path, data: Path, images: int, bank_size: int) -> dict[str, Any]:
    """Fit ``knn`` alone on the first ``images`` training scenes (one pass): wall seconds of
    the pass, of the forward passes in it, and inside knn's fit_update / fit_end."""
    from torch.utils.data import DataLoader

    from hazardseg.anomaly import fit_methods
    from hazardseg.anomaly.knn import KNN

    model, info = load_model(run / "best.pt", device="cpu")
    resize = (info.get("config") or {}).get("eval", {}).get("resize", "native")
    ds = StreetHazards(data, "train", build_eval_transform(resize), max_images=images)
    loader = DataLoader(ds, batch_size=8, shuffle=False, num_workers=0)
    knn = KNN(bank_size=bank_size)
    fwd = [0.0]
    real_forward = model.forward

    def timed_forward(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return real_forward(*a, **k)
        finally:
            fwd[0] += time.perf_counter() - t

    model.forward = timed_forward  # type: ignore[method-assign]
    load = os.getloadavg()
    t0 = time.perf_counter()
    with fit_timers() as ft:
        n = fit_methods({"knn": knn}, model, loader, "cpu")
    total = time.perf_counter() - t0
    assert knn.bank is not None
    return {"images": n, "bank": list(knn.bank.shape), "bank_size": bank_size, "total_s": total,
            "forward_s": fwd[0], "knn_s": ft.get("knn", 0.0), "load": load,
            "threads": torch.get_num_threads()}  # fmt: skip


def one_run(run: Path, data: Path, out: Path, tta: str, fit_images: int, timing_images: int):
    """Every number of one trained run (with and without TTA)."""
    ckpt = run / "best.pt"
    row: dict[str, Any] = {"run": str(run), "load": os.getloadavg()}
    for label, setting in (("plain", "none"), ("tta", tta)):
        state = out / run.name / f"state_{label}.pt"
        ckpt_config = load_model(ckpt, device="cpu")[1].get("config")
        spec = resolve_spec(
            ckpt_config, {"fit_images": fit_images, "tta": setting, "components": "none"}
        )
        t0 = time.perf_counter()
        with fit_timers() as ft:
            res = evaluate(
                ckpt, data, "test", dataclasses.replace(spec, methods="all"),
                RunOptions(state_path=state), out_dir=out / run.name / f"test_{label}",
            )  # fmt: skip
        wall = time.perf_counter() - t0
        val = evaluate(
            ckpt, data, "validation", dataclasses.replace(spec, methods="msp"),
            RunOptions(state_path=state, save_state=False), out_dir=out / run.name / f"val_{label}",
        )  # fmt: skip
        row[label] = {
            "methods": {
                n: {
                    "pooled": {k: m["pooled"][k] for k in ("auroc", "aupr", "fpr95")},
                    "per_image": {k: m["per_image"][k] for k in ("auroc", "aupr", "fpr95")},
                }
                for n, m in res["methods"].items()
            },
            "test_miou": res["segmentation"]["miou"],
            "val_miou": val["segmentation"]["miou"],
            "val_s": val["timing"]["total_s"],
            "timing": {k: res["timing"][k] for k in ("fit_s", "forward_s", "methods_s", "total_s")},
            "fit_method_s": dict(ft),
            "wall_s": wall,
            "per_method_s": method_times(ckpt, data, state, setting, timing_images, 3),
        }
        print(json.dumps({"run": run.name, label: row[label]["timing"],
                          "val_miou": row[label]["val_miou"]}), flush=True)  # fmt: skip
    row["load_after"] = os.getloadavg()
    return row


def retime(path: Path, data: Path, out: Path, images: int) -> None:
    """Re-measure ``per_method_s`` of every finished run in ``path`` (states saved beside it)
    and rewrite the file; the metrics are left as they are."""
    doc = json.loads(path.read_text())
    load = [os.getloadavg()[0]]
    for row in doc["runs"]:
        run = Path(row["run"])
        for label, setting in (("plain", "none"), ("tta", doc["tta"])):
            state = out / run.name / f"state_{label}.pt"
            times = method_times(run / "best.pt", data, state, setting, images, 3)
            row[label]["per_method_s"] = times
            print(json.dumps({"run": run.name, label: times}), flush=True)
    load.append(os.getloadavg()[0])
    doc["retimed"] = {"images": images, "load": load}
    path.write_text(json.dumps(doc, indent=1))
    print(report(doc))


def _ms(values: list[float], scale: float = 100.0) -> str:
    vals = [scale * v for v in values if v is not None]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def report(doc: dict[str, Any]) -> str:
    """Markdown tables of a finished benchmark (mean ± std over runs)."""
    rows = doc["runs"]
    lines = [f"runs: {len(rows)}; TTA = `{doc['tta']}`; fit on {doc['fit_images']} train images",
             "", "| method | TTA | pooled AUROC | pooled AUPR | pooled FPR95 | per-image AUROC "
             "| per-image AUPR | per-image FPR95 | score ms/img | % of forward |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    names = list(rows[0]["plain"]["methods"])
    for name in names:
        for label in ("plain", "tta"):
            ms = [r[label]["methods"][name] for r in rows]
            cells = [_ms([m[p][k] for m in ms]) for p in ("pooled", "per_image")
                     for k in ("auroc", "aupr", "fpr95")]  # fmt: skip
            t = [r[label]["per_method_s"].get(name) for r in rows]
            f = [r[label]["per_method_s"]["forward"] for r in rows]
            pct = [a / b for a, b in zip(t, f, strict=True) if a is not None]
            lines.append(f"| {name} | {'yes' if label == 'tta' else 'no'} | " + " | ".join(cells)
                         + f" | {_ms(t, 1000)} | {_ms(pct)} |")  # fmt: skip
    lines += ["", "| | no TTA | TTA |", "|---|---|---|"]
    for key, title in (("val_miou", "validation mIoU %"), ("test_miou", "test mIoU %")):
        lines.append(f"| {title} | {_ms([r['plain'][key] for r in rows])} | "
                     f"{_ms([r['tta'][key] for r in rows])} |")  # fmt: skip
    fwd = [[r[lab]["per_method_s"]["forward"] for r in rows] for lab in ("plain", "tta")]
    lines.append(f"| forward ms/img (with features) | {_ms(fwd[0], 1000)} | {_ms(fwd[1], 1000)} |")
    lines += ["", "| fitting (one pass) | no TTA s | TTA s |", "|---|---|---|"]
    lines.append("| whole fitting pass (forward + all methods) | "
                 f"{_ms([r['plain']['timing']['fit_s'] for r in rows], 1)} | "
                 f"{_ms([r['tta']['timing']['fit_s'] for r in rows], 1)} |")  # fmt: skip
    for name in ("sml", "heat", "knn", "mahalanobis"):
        vals = [[r[lab]["fit_method_s"].get(name, 0.0) for r in rows] for lab in ("plain", "tta")]
        lines.append(f"| {name} fit_update + fit_end | {_ms(vals[0], 1)} | {_ms(vals[1], 1)} |")
    loads = [r["load"][0] for r in rows] + [r["load_after"][0] for r in rows]
    lines.append(f"\nload average (1 min) at start / end of the runs: {loads}")
    if doc.get("retimed"):
        rt = doc["retimed"]
        lines.append(
            f"score and forward times re-measured (--retime) on {rt['images']} test images, "
            f"load average {rt['load'][0]:.2f} -> {rt['load'][1]:.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--runs", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=Path("bench-data/feature-methods"))
    ap.add_argument("--tta", default="0.75,1,flip")
    ap.add_argument("--fit-images", type=int, default=50)
    ap.add_argument("--timing-images", type=int, default=4)
    ap.add_argument("--report", type=Path, help="Print the tables of a finished run.")
    ap.add_argument(
        "--knn-fit",
        type=int,
        metavar="N",
        help="Only time fitting knn alone on "
        "the first N training scenes of the first run (--knn-bank vectors).",
    )
    ap.add_argument("--knn-bank", type=int, default=200_000)
    ap.add_argument(
        "--retime",
        action="store_true",
        help="Only re-measure the per-method score times of the finished runs in "
        "OUT/feature_methods.json with their saved states (e.g. on a quiet machine).",
    )
    args = ap.parse_args()
    if args.retime:
        retime(args.out / "feature_methods.json", args.data, args.out, args.timing_images)
        return
    if args.knn_fit:
        res = knn_fit_time(args.runs[0], args.data, args.knn_fit, args.knn_bank)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "knn_fit.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res))
        return
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "feature_methods.json"
    doc = {"tta": args.tta, "fit_images": args.fit_images, "torch_threads":
           torch.get_num_threads(), "runs": []}  # fmt: skip
    if path.is_file():  # resume: keep finished runs
        old = json.loads(path.read_text())
        if old.get("tta") == args.tta and old.get("fit_images") == args.fit_images:
            doc["runs"] = [r for r in old["runs"] if Path(r["run"]) in args.runs]
    done = {r["run"] for r in doc["runs"]}
    for run in args.runs:
        if str(run) in done:
            continue
        doc["runs"].append(one_run(run, args.data, args.out, args.tta, args.fit_images,
                                   args.timing_images))  # fmt: skip
        path.write_text(json.dumps(doc, indent=1))
    print(report(doc))


if __name__ == "__main__":
    main()
