"""Evaluation overhead: every anomaly method + every metric vs the forward pass alone.

Builds a randomly initialised model, a small StreetHazards-format tree of SIZE x SIZE images
(with an anomaly block in each test image), times the bare forward pass per image, then runs
``hazardseg.evaluation.evaluate`` with all methods on the same images and reports its
per-image forward time and methods + metrics time (score computation, confusion matrix,
pooled and per-image OOD accumulators, score-map storage and the component pass). The
once-per-run finalisation (curve computation) is reported separately.

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
        evaluate(ckpt, root, "test", "all", None, fit_images=2, max_images=1)  # fit + warm-up
        res = evaluate(ckpt, root, "test", "all", Path(tmp) / "eval", fit_images=2)
    n = res["data"]["num_images"]
    t = res["timing"]
    fwd = t["forward_s"] / n
    extra = (t["methods_s"] + t["metrics_s"]) / n
    print(
        f"model {args.model}, {args.size}x{args.size}, {n} images, "
        f"{torch.get_num_threads()} threads, methods: {', '.join(res['methods'])}"
    )
    rows = [
        ("bare forward pass", bare),
        ("evaluate: forward (+ resize)", fwd),
        ("evaluate: anomaly methods", t["methods_s"] / n),
        ("evaluate: confusion matrix", t["segmentation_s"] / n),
        ("evaluate: pooled + per-image OOD", t["ood_s"] / n),
        ("evaluate: score-map storage", t["store_s"] / n),
        ("evaluate: component pass", t["components_s"] / n),
    ]
    for label, sec in rows:
        share = f"{sec / fwd:7.1%}" if label.startswith("evaluate: ") and sec != fwd else ""
        print(f"{label:34s} {sec * 1000:9.1f} ms/image {share}")
    print(f"once per run: curve finalisation {t['finalize_s'] * 1000:.1f} ms")
    print(f"methods alone / forward          {t['methods_s'] / n / fwd:9.1%}")
    print(
        f"methods + metrics / forward      {extra / fwd:9.1%}   "
        f"(vs bare forward: {extra / bare:.1%})"
    )


if __name__ == "__main__":
    main()
