"""``demo``: the whole pipeline on synthetic scenes, from nothing but the installed package.

Stages: generate synthetic StreetHazards-format data, train LR-ASPP MobileNetV3 from scratch
with the packaged ``synthetic_cpu`` recipe, calibrate every anomaly method on validation,
evaluate on test, compare, draw qualitative panels and write the HTML report.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hazardseg.config import ExperimentConfig, load_config
from hazardseg.errors import HazardsegError

RECIPE = "synthetic_cpu.yaml"
"""Packaged training recipe (configs/synthetic_cpu.yaml links to it: one file)."""


@dataclass(frozen=True)
class DemoPlan:
    """Sizes and budgets of one demo run."""

    n_train: int
    n_val: int
    n_test: int
    size: tuple[int, int]
    """Scene size (W, H)."""
    overrides: tuple[str, ...]
    """Config overrides applied on top of the recipe."""
    fit_images: int
    """Training images the fitted methods are fitted on (``eval.fit_images`` of the run)."""
    panels: int


FULL = DemoPlan(
    n_train=300,
    n_val=50,
    n_test=100,
    size=(320, 180),
    overrides=(),
    fit_images=50,
    panels=6,
)
QUICK = DemoPlan(
    n_train=160,
    n_val=16,
    n_test=24,
    size=(192, 108),
    overrides=(
        "train.epochs=10",
        "train.val_every_epochs=5",
        "augment.crop_size=96",
        "eval.resize=native",
    ),
    fit_images=16,
    panels=3,
)


def recipe_path() -> Path:
    """Path of the packaged ``synthetic_cpu`` recipe."""
    return Path(str(resources.files("hazardseg") / "recipes" / RECIPE))


def demo_config(plan: DemoPlan, data_root: Path, workers: int) -> ExperimentConfig:
    """The recipe with the plan's overrides, the data root, the worker count and the fitting
    images (``eval.fit_images``, so the run's config says how its methods are fitted)."""
    overrides = [
        *plan.overrides,
        f"data.root={data_root}",
        f"data.num_workers={workers}",
        f"eval.fit_images={plan.fit_images}",
        f"eval.workers={workers}",
    ]
    return load_config(recipe_path(), overrides)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise HazardsegError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise HazardsegError(f"--out {out}: folder is not empty (pass --overwrite to reuse it)")


def run_demo(
    out: str | os.PathLike[str] = "hazardseg-demo",
    *,
    quick: bool = False,
    workers: int = 0,
    overwrite: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every stage into ``out`` and return the summary: ``report``, ``miou``,
    ``methods`` ({name: {auroc, aupr, fpr95}}), ``stages`` ({stage: seconds}) and paths."""
    from hazardseg.data.synth import generate_dataset
    from hazardseg.evaluation import evaluate
    from hazardseg.evaluation.calibrate import calibrate
    from hazardseg.inference.visualize import PanelSelection, visualize
    from hazardseg.reports.compare import write_comparison
    from hazardseg.reports.html import build_report
    from hazardseg.training import fit

    if workers < 0:
        raise HazardsegError(f"--workers {workers}: expected 0 or more")
    out_dir = Path(out)
    _check_out(out_dir, overwrite)
    plan = QUICK if quick else FULL
    data, run = out_dir / "data", out_dir / "run"
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    total = 7

    def stage(n: int, name: str, text: str) -> float:
        say(f"[{time.perf_counter() - t0:6.1f}s] {n}/{total} {name}: {text}")
        return time.perf_counter()

    t = stage(
        1,
        "data",
        f"{plan.n_train}/{plan.n_val}/{plan.n_test} synthetic scenes "
        f"{plan.size[0]}x{plan.size[1]} -> {data}",
    )
    generate_dataset(
        data,
        plan.n_train,
        plan.n_val,
        plan.n_test,
        size=plan.size,
        seed=0,
        progress=False,
        overwrite=overwrite,
        workers=max(1, workers),
    )
    stages["data"] = time.perf_counter() - t

    cfg = demo_config(plan, data, workers)
    t = stage(2, "train", f"{cfg.model.name} from scratch, {cfg.train.epochs} epochs -> {run}")
    trained = fit(cfg, run, overwrite=overwrite, progress=True)
    ckpt = Path(trained["best_checkpoint"])
    stages["train"] = time.perf_counter() - t
    say(
        f"         best validation mIoU {100 * trained['best_miou']:.1f} "
        f"(epoch {trained['best_epoch']})"
    )

    # the run's config (in the checkpoint) holds the fitting settings: every later command
    # on this checkpoint uses the same fits and thresholds without being told
    t = stage(
        3, "calibrate",
        f"fit sml/heat/knn/mahalanobis on {cfg.eval.fit_images} train images, thresholds at "
        "5% FPR on validation",
    )  # fmt: skip
    calibrate(ckpt, data, "validation")
    stages["calibrate"] = time.perf_counter() - t

    t = stage(4, "evaluate", "every method on the test split")
    results = evaluate(ckpt, data, "test", out_dir=run / "eval" / "test")
    stages["evaluate"] = time.perf_counter() - t

    t = stage(5, "compare", f"tables and curves -> {out_dir / 'compare'}")
    write_comparison([run / "eval" / "test"], out_dir / "compare", overwrite=True)
    stages["compare"] = time.perf_counter() - t

    t = stage(6, "visualize", f"{plan.panels} test panels -> {run / 'visualize'}")
    visualize(
        ckpt, data, "test", run / "visualize",
        selection=PanelSelection(samples=plan.panels, method="max_logit"),
    )  # fmt: skip
    stages["visualize"] = time.perf_counter() - t

    t = stage(7, "report", f"{run / 'report.html'}")
    report = build_report(run)
    stages["report"] = time.perf_counter() - t
    elapsed = time.perf_counter() - t0
    say(f"[{elapsed:6.1f}s] done")
    methods = {
        name: {k: m["pooled"][k] for k in ("auroc", "aupr", "fpr95")}
        for name, m in results["methods"].items()
    }
    return {
        "report": str(report),
        "checkpoint": str(ckpt),
        "data": str(data),
        "quick": quick,
        "miou": results["segmentation"]["miou"],
        "best_val_miou": trained["best_miou"],
        "methods": methods,
        "stages": stages,
        "total_s": elapsed,
    }


def summary_text(summary: dict[str, Any]) -> str:
    """The end-of-demo table: where the report is, the test mIoU and each method's metrics."""

    def pct(v: Any) -> str:
        return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:6.2f}"

    lines = [
        f"report: {summary['report']}",
        f"test mIoU: {pct(summary['miou']).strip()}   (validation best "
        f"{pct(summary['best_val_miou']).strip()}; pooled protocol, % below)",
        f"{'method':<12} {'AUROC':>7} {'AUPR':>7} {'FPR95':>7}",
    ]
    for name, m in summary["methods"].items():
        lines.append(f"{name:<12} {pct(m['auroc']):>7} {pct(m['aupr']):>7} {pct(m['fpr95']):>7}")
    lines.append(f"total {summary['total_s']:.1f}s")
    return "\n".join(lines)
