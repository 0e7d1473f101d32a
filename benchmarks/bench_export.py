"""CPU inference: onnxruntime on a hazardseg ONNX export vs eager PyTorch.

For each model and size, in one run and with the same random weights and image:
- "torchvision plain fp32": torchvision's own model class (aux head included), eval + no_grad,
  on a normalised float input: the loop a typical script runs;
- "hazardseg channels_last+bf16": hazardseg's best eager CPU path (bench_inference.py);
- "onnxruntime <level>": the graph written by ``hazardseg export`` (uint8 NHWC input,
  normalisation, logits, class map and confidence inside), one session per optimisation level.
Timed in interleaved rounds (median); reports images/s, the ratio to the plain loop, the
logits' max abs difference and the argmax agreement with the plain fp32 output.

    python benchmarks/bench_export.py --threads 2 --iters 3
    python benchmarks/bench_export.py --exportability   # try exporting every registered model
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision

from bench_inference import round_robin
from hazardseg.data.transforms import normalize
from hazardseg.deploy.onnx_check import sample_images
from hazardseg.deploy.onnx_export import ExportOptions, export_model
from hazardseg.deploy.onnx_runtime import OnnxSegmenter
from hazardseg.io import atomic_write_json
from hazardseg.models import create_model, list_models
from hazardseg.models.forward import autocast_context, prepare_for_inference

TORCHVISION = {
    "deeplabv3_resnet50": lambda: torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=13, aux_loss=True
    ),
    "lraspp_mobilenet_v3": lambda: torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=13
    ),
}


def bench_one(
    name: str, height: int, width: int, args: argparse.Namespace, tmp: Path
) -> list[dict[str, object]]:
    """Rows of one model x size."""
    torch.manual_seed(0)
    plain = TORCHVISION[name]().eval()
    ours = create_model(name).eval()
    ours.load_state_dict(plain.state_dict(), strict=True)
    images = sample_images(args.batch, height, width, seed=1)
    x = normalize(images.permute(0, 3, 1, 2).float() / 255.0).contiguous()
    np_images = images.numpy()

    def run_plain() -> np.ndarray:
        with torch.no_grad():
            return plain(x)["out"].numpy()

    fast = prepare_for_inference(copy.deepcopy(ours), "cpu", channels_last=True)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def run_fast() -> np.ndarray:
        with torch.inference_mode(), autocast_context("cpu", "bf16"):
            return fast(x_cl)["out"].float().numpy()

    path = tmp / f"{name}_{height}x{width}.onnx"
    start = time.perf_counter()
    options = ExportOptions(height=height, width=width, threads=args.threads, check=False)
    export_model(ours, path, options=options)
    export_s = time.perf_counter() - start

    def make_ort(level: str) -> Callable[[], np.ndarray]:
        seg = OnnxSegmenter(path, threads=args.threads, optimization=level, spinning=False)

        def run() -> np.ndarray:
            out = seg.run(np_images, logits=True)
            assert out.logits is not None
            return out.logits

        return run

    configs: list[tuple[str, Callable[[], np.ndarray]]] = [
        ("torchvision plain fp32 (no_grad)", run_plain),
        ("hazardseg channels_last+bf16", run_fast),
    ]
    configs += [(f"onnxruntime fp32, optimisation '{lv}'", make_ort(lv)) for lv in args.levels]
    seconds, outs = round_robin([fn for _, fn in configs], args.iters, args.warmup)
    ref = outs[0]
    rows = []
    for (label, _), sec, out in zip(configs, seconds, outs, strict=True):
        rows.append(
            {
                "model": name,
                "size": f"{width}x{height}",
                "config": label,
                "images_per_s": args.batch / sec,
                "ratio": seconds[0] / sec,
                "logits_max_abs_diff": float(np.abs(out - ref).max()),
                "argmax_agreement": float((out.argmax(1) == ref.argmax(1)).mean()),
            }
        )
    print(f"  ({name} {width}x{height}: export {export_s:.1f} s)", flush=True)
    return rows


def _row(r: dict[str, object]) -> str:
    return (
        f"| {r['model']} | {r['size']} | {r['config']} | {r['images_per_s']:.3f} | "
        f"{r['ratio']:.2f}x | {r['logits_max_abs_diff']:.1e} | "
        f"{100 * float(r['argmax_agreement']):.2f}% |"  # type: ignore[arg-type]
    )


def exportability(size: int, names: list[str]) -> None:
    """Try registered models (random weights) at a fixed size and with --dynamic (default
    tracing size), no methods."""
    print("| model | fixed size | --dynamic |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            cells = []
            for dynamic in (False, True):
                torch.manual_seed(0)
                options = {"img_size": (size, size)} if name == "hiera_base" else {}
                model = create_model(name, **options)
                try:
                    hw = None if dynamic else size
                    options = ExportOptions(height=hw, width=hw, dynamic=dynamic)
                    rep = export_model(model, Path(tmp) / "m.onnx", options=options)
                    c = rep.check
                    cells.append(
                        f"ok (logits {c['logits_max_abs_diff']:.1e}, "
                        f"argmax {100 * c['argmax_agreement']:.2f}%)"
                    )
                except Exception as exc:
                    cells.append(f"refused: {' '.join(str(exc).split())[:400]}")
            print(f"| {name} | {cells[0]} | {cells[1]} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(TORCHVISION), choices=TORCHVISION)
    parser.add_argument(
        "--sizes", nargs="+", default=["512x512", "1280x720"], help="WxH sizes to time"
    )
    parser.add_argument("--levels", nargs="+", default=["all"], help="ORT optimisation levels")
    parser.add_argument("--iters", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--exportability",
        nargs="*",
        metavar="MODEL",
        default=None,
        help="try exporting these registered models (none given: all) instead of timing",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.exportability is not None:
        exportability(64, args.exportability or list_models())
        return
    load = os.getloadavg()
    print(
        f"batch {args.batch}, {args.iters} rounds after {args.warmup} warm-up, "
        f"{args.threads} threads, torch {torch.__version__}, {platform.machine()} CPU, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for size in args.sizes:
                w, h = (int(v) for v in size.lower().split("x"))
                new = bench_one(name, h, w, args, Path(tmp))
                for r in new:
                    print(f"  {_row(r)}", flush=True)
                rows += new
    print(
        "| model | size | configuration | images/s | ratio to plain | logits max abs diff "
        "| argmax agreement |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(_row(r))
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json is not None:
        atomic_write_json(args.json, rows)


if __name__ == "__main__":
    main()
