"""A run folder: what training writes and every later command reads, named in one place.

::

    RUN_DIR/
      config.yaml            resolved ExperimentConfig
      last.pt, best.pt       checkpoints (+ best_<model>_<YYYYmmdd>_miou<xx.xx>.pt)
      metrics.jsonl          one JSON row per logging interval / validation
      metrics.csv            the same rows flattened
      train.log              the progress lines of training (epochs, validations)
      class_weights.json     cached class weights
      tb/                    TensorBoard event files
      anomaly_state.pt       fitted anomaly-method state and calibrated thresholds
      eval/<split>/results.json, visualize/, report.html

:class:`RunFolder` owns these names and the one reader of ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG = "config.yaml"
LAST = "last.pt"
BEST = "best.pt"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
TRAIN_LOG = "train.log"
CLASS_WEIGHTS = "class_weights.json"
TENSORBOARD = "tb"
ANOMALY_STATE = "anomaly_state.pt"
EVAL = "eval"
VISUALIZE = "visualize"
REPORT = "report.html"
BEST_COPY_GLOB = "best_*_miou*.pt"

TRAINING_FILES: tuple[str, ...] = (
    CONFIG,
    LAST,
    BEST,
    METRICS_JSONL,
    METRICS_CSV,
    TRAIN_LOG,
    CLASS_WEIGHTS,
)
"""Files a training run writes (plus best copies and ``tb/``)."""

_NUMERIC_KEYS = (
    "epoch",
    "iteration",
    "loss",
    "lr",
    "images_per_s",
    "time_s",
    "miou",
    "miou_no_unlabeled",
    "pixel_accuracy",
)


@dataclass
class MetricRows:
    """The rows of a metrics.jsonl file and how many lines or values were unreadable."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """The rows of one kind ("train" or "val")."""
        return [r for r in self.rows if r.get("kind") == kind]

    def best_val_miou(self) -> float | None:
        """The best validation mIoU logged, or None."""
        values = [r["miou"] for r in self.of_kind("val") if r.get("miou") is not None]
        return max(values) if values else None


def _number_or_none(value: Any) -> tuple[float | int | None, bool]:
    """(value as a finite number or None, whether a non-null value was dropped)."""
    if value is None:
        return None, False
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, True
    if isinstance(value, float) and not math.isfinite(value):
        return None, True
    return value, False


def _clean_row(row: dict[str, Any]) -> bool:
    """Replace values of the known numeric keys that are not finite numbers by None, in
    place; returns whether any was replaced."""
    bad = False
    for key in _NUMERIC_KEYS:
        if key in row:
            row[key], dropped = _number_or_none(row[key])
            bad |= dropped
    iou = row.get("iou")
    if iou is not None and not isinstance(iou, dict):
        row["iou"], bad = None, True
    elif isinstance(iou, dict):
        for name in list(iou):
            iou[name], dropped = _number_or_none(iou[name])
            bad |= dropped
    return bad


def read_metric_rows(
    path: str | os.PathLike[str], up_to_iteration: int | None = None
) -> MetricRows:
    """The rows of a metrics.jsonl file (none when it is missing). Unreadable lines (a run
    still writing may leave a torn last line) are skipped and counted, as are values of the
    metric keys that are not finite numbers (read as None). With ``up_to_iteration``, rows
    logged after that iteration are dropped (a resumed run continues from its checkpoint)."""
    p = Path(path)
    out = MetricRows()
    if not p.is_file():
        return out
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            out.skipped += 1
            continue
        if not isinstance(row, dict):
            out.skipped += 1
            continue
        out.skipped += _clean_row(row)
        if up_to_iteration is not None and int(row.get("iteration") or 0) > up_to_iteration:
            continue
        out.rows.append(row)
    return out


@dataclass(frozen=True)
class RunFolder:
    """The files of one run folder (see the module docstring)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def last(self) -> Path:
        return self.root / LAST

    @property
    def best(self) -> Path:
        return self.root / BEST

    @property
    def metrics_jsonl(self) -> Path:
        return self.root / METRICS_JSONL

    @property
    def metrics_csv(self) -> Path:
        return self.root / METRICS_CSV

    @property
    def train_log(self) -> Path:
        return self.root / TRAIN_LOG

    @property
    def class_weights(self) -> Path:
        return self.root / CLASS_WEIGHTS

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    @property
    def anomaly_state(self) -> Path:
        return self.root / ANOMALY_STATE

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def visualize(self) -> Path:
        return self.root / VISUALIZE

    def eval_dir(self, split: str) -> Path:
        """Where ``evaluate`` writes the results of ``split`` by convention."""
        return self.root / EVAL / split

    def best_copies(self) -> list[Path]:
        """The dated best-checkpoint copies, sorted."""
        return sorted(self.root.glob(BEST_COPY_GLOB)) if self.root.is_dir() else []

    def training_outputs(self) -> list[Path]:
        """Training outputs present in the folder (empty when it is new or unused)."""
        if not self.root.exists():
            return []
        found = [self.root / n for n in TRAINING_FILES if (self.root / n).exists()]
        found += self.best_copies()
        if self.tensorboard.exists():
            found.append(self.tensorboard)
        return found

    def metric_rows(self, up_to_iteration: int | None = None) -> MetricRows:
        """The rows of metrics.jsonl (see :func:`read_metric_rows`)."""
        return read_metric_rows(self.metrics_jsonl, up_to_iteration)
