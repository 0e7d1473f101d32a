"""Evaluation overhead: every anomaly method + every metric vs the forward pass alone.

Builds a randomly initialised model, a small StreetHazards-format tree of SIZE x SIZE images
(with an anomaly block in each test image), times the bare forward pass per image, then runs
``hazardseg.evaluation.evaluate`` with all methods on the same images twice: metric updates
inline, and on a background thread overlapped with the next forward pass (the default). It
reports per-image times of every stage (score computation, confusion matrix, pooled and
per-image OOD accumulators, score-map storage, component pass) relative to the forward pass,
and the wall time methods + metrics add to data loading + forward. The once-per-run
finalisation (curve computation) is reported separately.

    python benchmarks/bench_evaluation.py [--model deeplabv3_resnet50] [--size 512] [--images 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hazardseg.data.classes import KNOWN_CLASS_NAMES, PALETTE, SPLITS, TOWNS
from hazardseg.evaluation import evaluate
from hazardseg.evaluation.spec import RunOptions, resolve_spec
from hazardseg.models import create_model
from hazardseg.models.checkpoint import save_checkpoint


def write_tree(root: Path, size: int, counts: dict[str, int], seed: int = 0) -> None:
    """Blocky random scenes in the official layout; test images get an anomaly block."""
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        top, sub = SPLITS[split]
        for i in range(n):
            label = np.full((size, size), 8, np.uint8)
            label[: size // 3] = 2
            for _ in range(12):
                y, x = rng.integers(0, size - size // 8, 2)
                label[y : y + size // 8, x : x + size // 8] = rng.integers(1, 14)
            if split == "test":
                label[size // 2 : size // 2 + size // 10, size // 3 : size // 3 + size // 8] = 14
            img = PALETTE[label.astype(int) - 1].astype(np.int16)
            img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
            rel = f"{TOWNS[split][0]}/{i + 1}.png"
            for kind, arr in (("images", img), ("annotations", label)):
                p = root / top / kind / sub / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(p)


def time_forward(model: torch.nn.Module, size: int, n: int) -> float:
    """Median seconds of one bare forward pass of a (1, 3, size, size) image."""
    x = torch.randn(1, 3, size, size)
    times = []
    with torch.inference_mode():
        model(x)  # warm-up
        for _ in range(n):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="deeplabv3_resnet50")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sh"
        write_tree(root, args.size, {"train": 2, "test": args.images})
        ckpt = save_checkpoint(
            Path(tmp) / "run" / "model.pt",
            model,
            model_name=args.model,
            class_names=list(KNOWN_CLASS_NAMES),
            config={},
            epoch=0,
            best_metric=None,
        )
        bare = time_forward(model, args.size, args.images)
        spec = resolve_spec(None, {"methods": "all", "fit_images": 2})
        evaluate(ckpt, root, "test", spec, RunOptions(max_images=1))  # fit + warm-up
        runs = {
            overlap: evaluate(
                ckpt,
                root,
                "test",
                spec,
                RunOptions(overlap=overlap),
                out_dir=Path(tmp) / f"eval{overlap}",
            )
            for overlap in (False, True)
        }
    n = runs[True]["data"]["num_images"]
    print(
        f"model {args.model}, {args.size}x{args.size}, {n} images, "
        f"{torch.get_num_threads()} threads, methods: {', '.join(runs[True]['methods'])}"
    )
    print(f"{'bare forward pass':44s} {bare * 1000:9.1f} ms/image")
    for overlap, res in runs.items():
        t = res["timing"]
        fwd = t["forward_s"] / n
        mode = "metrics on a background thread" if overlap else "metrics inline"
        print(f"evaluate, {mode}:")
        rows = [
            ("forward (+ resize to label resolution)", t["forward_s"]),
            ("anomaly methods (6)", t["methods_s"]),
            ("confusion matrix", t["segmentation_s"]),
            ("pooled + per-image OOD accumulators", t["ood_s"]),
            ("score-map storage", t["store_s"]),
            ("component pass", t["components_s"]),
        ]
        for label, sec in rows:
            share = "" if label.startswith("forward") else f"{sec / n / fwd:7.1%}"
            print(f"  {label:42s} {sec / n * 1000:9.1f} ms/image {share}")
        added = t["added_s"] / n
        print(
            f"  {'wall time added to data + forward':42s} {added * 1000:9.1f} ms/image "
            f"{added / fwd:7.1%}"
        )
        print(f"  {'once per run: curve finalisation':42s} {t['finalize_s'] * 1000:9.1f} ms")
    t = runs[True]["timing"]
    print(f"methods alone / forward: {t['methods_s'] / t['forward_s']:.1%}")
    print(
        "wall time added by methods + metrics / forward: "
        f"inline {runs[False]['timing']['added_s'] / runs[False]['timing']['forward_s']:.1%}, "
        f"background {t['added_s'] / t['forward_s']:.1%}"
    )


if __name__ == "__main__":
    main()
