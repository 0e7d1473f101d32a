"""``ablate``: train and evaluate every variant of a config grid over several seeds.

Grid file (YAML)::

    seeds: [0, 1, 2]                 # optional, default [0]
    variants:
      baseline: {}
      no_scale: {augment.scale: false}

Every variant is validated before anything trains. Each (variant, seed) run lives in
``OUT/<variant>/seed<k>/`` (a normal training run directory); its test evaluation is
``eval/test/results.json`` there, and a run whose results exist is skipped (resumable).
Validation always uses the evaluation transform (the training loop's validation loader is
built with ``build_eval_transform``), so every variant is validated on the same
un-augmented data.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hazardseg.config import ExperimentConfig, apply_overrides, config_to_dict, read_yaml_file
from hazardseg.errors import ConfigError
from hazardseg.io import atomic_write_json, atomic_write_text

METRICS = ("val_miou", "test_miou", "auroc", "aupr", "fpr95")


@dataclass
class Grid:
    """Variants (name -> {dotted config key: value}) and the seeds to run each with."""

    variants: dict[str, dict[str, Any]]
    seeds: list[int]


def parse_seeds(text: str) -> list[int]:
    """Parse ``"0,1,2"`` into a list of distinct non-negative seeds."""
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: expected distinct non-negative integers")
    return seeds


_VARIANT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_RESERVED = {"ablation.json", "ablation.csv", "ablation.md"}


def check_variant_name(name: Any, where: str | os.PathLike[str]) -> str:
    """A variant name is a folder name below OUT: letters, digits, ``-``, ``_`` and ``.``, not
    starting with ``.`` or ``-`` (so never ``..``, a path or a hidden name), at most 100
    characters and not one of the ablation's own output files; ConfigError otherwise."""
    text = str(name)
    if (
        not isinstance(name, str | int)
        or isinstance(name, bool)
        or not _VARIANT_NAME.match(text)
        or text.lower() in _RESERVED
    ):
        raise ConfigError(
            f"{where}: variant name {name!r}: use letters, digits, - _ and . (not first), "
            "at most 100 characters; it names a folder below --out"
        )
    return text


def load_grid(path: str | os.PathLike[str]) -> Grid:
    """Read and check the shape of a grid file (keys are checked by :func:`variant_configs`)."""
    p = Path(path)
    data = read_yaml_file(p, "grid file")
    if not isinstance(data, dict) or set(data) - {"variants", "seeds"}:
        raise ConfigError(f"{p}: expected top-level keys 'variants' and optional 'seeds'")
    variants = data.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(f"{p}: 'variants' must be a non-empty mapping of name -> settings")
    for name, settings in variants.items():
        if not isinstance(settings, dict | None):
            raise ConfigError(f"{p}: variant '{name}' must map dotted config keys to values")
        check_variant_name(name, p)
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(f"{p}: 'seeds' must be a list of integers")
    folded: dict[str, str] = {}
    for name in map(str, variants):
        if name.lower() in folded:
            raise ConfigError(
                f"{p}: variant names {folded[name.lower()]!r} and {name!r} differ only in case; "
                "they would share a folder on some file systems"
            )
        folded[name.lower()] = name
    return Grid(
        {str(k): dict(v or {}) for k, v in variants.items()},
        parse_seeds(",".join(str(s) for s in seeds)),
    )


def variant_configs(
    base: ExperimentConfig, grid: Grid, sets: Sequence[str] = ()
) -> dict[str, ExperimentConfig]:
    """Apply ``sets`` then each variant's settings to ``base``; every variant is validated
    here, so a bad key fails before anything trains."""
    base = apply_overrides(base, list(sets))
    out = {}
    for name, settings in grid.variants.items():
        check_variant_name(name, "ablation grid")
        items = [f"{k}={json.dumps(v)}" for k, v in settings.items()]
        try:
            out[name] = apply_overrides(base, items)
        except ConfigError as exc:
            raise ConfigError(f"ablation variant '{name}': {exc}") from None
    return out


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return None, None
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def summarize(rows: Sequence[dict[str, Any]], variants: Sequence[str]) -> list[dict[str, Any]]:
    """One row per variant: mean and sample std (ddof=1; 0 for one seed) of each metric."""
    table = []
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        row: dict[str, Any] = {"variant": name, "seeds": len(mine)}
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std([r[metric] for r in mine])
        table.append(row)
    return table


def _fmt(mean: float | None, std: float | None) -> str:
    return "n/a" if mean is None else f"{100 * mean:.2f} ± {100 * (std or 0.0):.2f}"


def table_markdown(table: Sequence[dict[str, Any]], method: str) -> str:
    """Markdown table of :func:`summarize` rows (values in %, mean ± std over seeds)."""
    seeds = sorted({r["seeds"] for r in table})
    head = (
        f"Ablation: mean ± std (sample, ddof=1) over {'/'.join(map(str, seeds))} seed(s) per "
        f"variant; validation on un-augmented data; test anomaly metrics of '{method}' "
        "(pooled protocol), in %.\n\n"
    )
    cols = ["variant", "seeds", "val mIoU", "test mIoU", "AUROC", "AUPR", "FPR95"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table:
        cells = [r["variant"], str(r["seeds"])] + [
            _fmt(r[f"{m}_mean"], r[f"{m}_std"]) for m in METRICS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def table_csv(table: Sequence[dict[str, Any]]) -> str:
    """CSV of :func:`summarize` rows (fractions, not %)."""
    keys = list(table[0]) if table else []
    out = [",".join(keys)]
    for r in table:
        out.append(",".join("" if r[k] is None else str(r[k]) for k in keys))
    return "\n".join(out) + "\n"


def run_ablation(
    base: ExperimentConfig,
    grid: Grid,
    out_dir: str | os.PathLike[str],
    *,
    sets: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    method: str = "max_logit",
    progress: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train and evaluate every (variant, seed); write ``ablation.csv``, ``ablation.md`` and
    ``ablation.json`` into ``out_dir`` and return the JSON content."""
    from hazardseg.evaluation import evaluate
    from hazardseg.evaluation.results import load_results
    from hazardseg.evaluation.spec import RunOptions
    from hazardseg.training import fit

    configs = variant_configs(base, grid, sets)
    seed_list = list(seeds) if seeds is not None else grid.seeds
    out = Path(out_dir)
    rows = []
    t0 = time.perf_counter()
    total = len(configs) * len(seed_list)
    k = 0
    for name, cfg in configs.items():
        if cfg.data.root is None:
            raise ConfigError("no data root: set data.root in the config, or pass --data")
        for seed in seed_list:
            k += 1
            run = out / name / f"seed{seed}"
            res_path = run / "eval" / "test" / "results.json"
            if res_path.is_file():
                say(f"[{time.perf_counter() - t0:6.1f}s] {k}/{total} {name} seed {seed}: done")
            else:
                say(f"[{time.perf_counter() - t0:6.1f}s] {k}/{total} {name} seed {seed}: train")
                seeded = apply_overrides(cfg, [f"train.seed={seed}"])
                trained = fit(seeded, run, overwrite=True, progress=progress)
                spec = dataclasses.replace(seeded.eval, methods=method, components="none")
                evaluate(
                    trained["best_checkpoint"],
                    seeded.data.root,
                    "test",
                    spec,
                    RunOptions(save_state=False),
                    out_dir=res_path.parent,
                )
            results = load_results(res_path)
            pooled = results["methods"][method]["pooled"]
            rows.append(
                {
                    "variant": name,
                    "seed": seed,
                    "val_miou": _best_val_miou(run),
                    "test_miou": results["segmentation"]["miou"],
                    "auroc": pooled["auroc"],
                    "aupr": pooled["aupr"],
                    "fpr95": pooled["fpr95"],
                    "run": str(run),
                }
            )
    table = summarize(rows, list(configs))
    doc = {
        "method": method,
        "seeds": seed_list,
        "variants": {n: grid.variants[n] for n in configs},
        "base_config": config_to_dict(apply_overrides(base, list(sets))),
        "runs": rows,
        "table": table,
    }
    atomic_write_json(out / "ablation.json", doc)
    atomic_write_text(out / "ablation.csv", table_csv(table))
    atomic_write_text(out / "ablation.md", table_markdown(table, method))
    return doc


def _best_val_miou(run: Path) -> float | None:
    """Best validation mIoU logged in the run's metrics.jsonl."""
    from hazardseg.run_folder import RunFolder

    return RunFolder(run).metric_rows().best_val_miou()
