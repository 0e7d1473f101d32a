"""Training-step time per registered model: float32 vs bfloat16 autocast on the CPU.

One step = forward + loss (main + 0.4 aux) + backward + Adam step, via the same
``hazardseg.training.steps.train_step`` that ``hazardseg train`` runs. Random weights and
inputs (nothing is downloaded). Prints seconds per step (median of ``--iters`` timed steps after
one warm-up step; fp32 and bf16 steps alternate so machine load hits both alike) and the
fp32 / bf16 ratio (> 1: bf16 is faster).

    python benchmarks/bench_train_step.py                      # every model, batch 2, 256x256
    python benchmarks/bench_train_step.py --models lraspp_mobilenet_v3 deeplabv3_resnet50
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hazardseg.config import TrainConfig
from hazardseg.models import create_model, list_models
from hazardseg.training.losses import SegmentationLoss
from hazardseg.training.steps import resolve_precision, train_step


def _setup(name: str, bf16: bool) -> tuple:
    torch.manual_seed(0)
    model = create_model(name, num_classes=13).train()
    precision = resolve_precision(TrainConfig(cpu_bf16=bf16), torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    return model, precision, optimizer


def time_model(name: str, batch: int, size: int, iters: int) -> tuple[float, float]:
    """Median seconds per training step of model ``name`` in fp32 and in bf16 autocast.

    The two variants run alternately (fp32, bf16, fp32, ...) so that load from other
    processes on a shared machine affects both alike.
    """
    device = torch.device("cpu")
    variants = [_setup(name, False), _setup(name, True)]
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    criterion = SegmentationLoss(13, aux_weight=0.4)
    g = torch.Generator().manual_seed(0)
    data = {
        "image": torch.randn(batch, 3, size, size, generator=g),
        "mask": torch.randint(0, 13, (batch, size, size), generator=g),
    }
    times: list[list[float]] = [[], []]
    for i in range(iters + 1):
        for k, (model, precision, optimizer) in enumerate(variants):
            t0 = time.perf_counter()
            train_step(model, data, criterion, optimizer, scaler, precision, device)
            if i > 0:  # first step of each variant is warm-up
                times[k].append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="default: every model")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.models or list_models()
    print(
        f"training step, batch {args.batch}, {args.size}x{args.size}, CPU, "
        f"{args.threads} threads, median of {args.iters} steps (torch {torch.__version__})"
    )
    print("| model | fp32 s/step | bf16 s/step | fp32/bf16 |\n|---|---|---|---|")
    for name in names:
        fp32, bf16 = time_model(name, args.batch, args.size, args.iters)
        print(f"| {name} | {fp32:.3f} | {bf16:.3f} | {fp32 / bf16:.2f} |", flush=True)


if __name__ == "__main__":
    main()
