"""CPU throughput of the evaluation forward pass of deeplabv3_resnet50.

Compares hazardseg's inference path (eval mode, no aux head, torch.inference_mode) in fp32,
channels_last, bf16 autocast and channels_last+bf16 against the plain torchvision loop
(torchvision's deeplabv3_resnet50 with its aux head, eval + no_grad) in the same run, with the
same random weights and a smooth random image. Reports images/s, the speed ratio to the plain
loop, and the fraction of pixels whose argmax agrees with the plain fp32 output.

    python benchmarks/bench_inference.py --iters 3 --size 512
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from torch.nn import functional as F

from hazardseg.models import create_model
from hazardseg.models.forward import autocast_context, prepare_for_inference


def smooth_image(size: int, batch: int, seed: int = 0) -> torch.Tensor:
    """A normalised image with large smooth regions (random low-res noise, upsampled)."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.randn(batch, 3, max(size // 32, 2), max(size // 32, 2), generator=gen)
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)


def round_robin(
    fns: list[Callable[[], torch.Tensor]], iters: int, warmup: int
) -> tuple[list[float], list[torch.Tensor]]:
    """Median seconds per call of each function, timed in interleaved rounds so that load
    changes on a shared machine hit every configuration alike; and each one's last output."""
    outs = []
    for fn in fns:
        for _ in range(max(warmup, 1)):
            out = fn()
        outs.append(out)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(iters):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            outs[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times], outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per config")
    parser.add_argument("--size", type=int, default=512, help="square input side in pixels")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    plain = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=13, aux_loss=True
    ).eval()
    ours = create_model("deeplabv3_resnet50")
    ours.load_state_dict(plain.state_dict(), strict=True)
    x = smooth_image(args.size, args.batch)

    def run_plain() -> torch.Tensor:
        with torch.no_grad():
            return plain(x)["out"]

    def make_ours(channels_last: bool, dtype: str | None) -> Callable[[], torch.Tensor]:
        # A copy per configuration: channels_last conversion changes the module in place.
        model = prepare_for_inference(copy.deepcopy(ours), "cpu", channels_last=channels_last)
        inp = x.contiguous(memory_format=torch.channels_last) if channels_last else x

        def run() -> torch.Tensor:
            with torch.inference_mode(), autocast_context("cpu", dtype):
                return model(inp)["out"].float()

        return run

    configs: list[tuple[str, Callable[[], Callable[[], torch.Tensor]]]] = [
        ("torchvision plain fp32 (no_grad)", lambda: run_plain),
        ("hazardseg fp32", lambda: make_ours(False, None)),
        ("hazardseg channels_last", lambda: make_ours(True, None)),
        ("hazardseg bf16 autocast", lambda: make_ours(False, "bf16")),
        ("hazardseg channels_last+bf16", lambda: make_ours(True, "bf16")),
    ]
    print(
        f"deeplabv3_resnet50 eval forward, {args.batch}x3x{args.size}x{args.size}, "
        f"{args.iters} iters after {args.warmup} warm-up, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.machine()} CPU"
    )
    seconds, outs = round_robin([build() for _, build in configs], args.iters, args.warmup)
    reference = outs[0].argmax(1)
    base_rate = args.batch / seconds[0]
    rows = []
    for (label, _), sec, out in zip(configs, seconds, outs, strict=True):
        rate = args.batch / sec
        agree = (out.argmax(1) == reference).float().mean().item()
        rows.append((label, rate, rate / base_rate, agree))

    print("| configuration | images/s | ratio to plain | argmax agreement |")
    print("|---|---|---|---|")
    for label, rate, ratio, agree in rows:
        print(f"| {label} | {rate:.3f} | {ratio:.2f}x | {100 * agree:.2f}% |")


if __name__ == "__main__":
    main()
