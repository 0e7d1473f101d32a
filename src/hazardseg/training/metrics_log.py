"""Training metrics: :class:`MetricLogger` averages the loss and throughput over each logging
window; :class:`MetricsLog` keeps the rows of RUN_DIR/metrics.jsonl and metrics.csv and the
TensorBoard scalars."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hazardseg import distributed
from hazardseg.distributed import DistContext
from hazardseg.io import atomic_write_text
from hazardseg.progress import Progress
from hazardseg.run_folder import RunFolder

TRAIN_FIELDS: tuple[str, ...] = ("epoch", "iteration", "loss", "lr", "images_per_s", "time_s")
VAL_FIELDS: tuple[str, ...] = (
    "epoch",
    "iteration",
    "miou",
    "miou_no_unlabeled",
    "pixel_accuracy",
    "time_s",
)


def iou_column(class_name: str) -> str:
    """CSV column of a class's IoU: ``iou_<name>`` with spaces as underscores."""
    return "iou_" + class_name.replace(" ", "_")


def csv_columns(class_names: Sequence[str]) -> list[str]:
    """Header of metrics.csv: kind, the union of train and val fields, one IoU column per class."""
    cols = ["kind"]
    for f in TRAIN_FIELDS + VAL_FIELDS:
        if f not in cols:
            cols.append(f)
    return cols + [iou_column(n) for n in class_names]


def flatten_row(row: dict[str, Any]) -> dict[str, Any]:
    """One metrics.jsonl row as a flat CSV row (``iou`` dict -> ``iou_<class>`` columns)."""
    flat = {k: v for k, v in row.items() if k != "iou"}
    for name, value in (row.get("iou") or {}).items():
        flat[iou_column(name)] = value
    return flat


def _clean(value: Any) -> Any:
    """JSON-safe value: non-finite floats become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class MetricsLog:
    """Keeps the run's metric rows and rewrites metrics.jsonl/csv atomically after each row.

    ``tb_dir`` enables TensorBoard scalars (``train/loss``, ``train/lr``, ``val/miou``,
    ``val/iou/<class>`` ...) with the global iteration as step.
    """

    def __init__(
        self,
        out_dir: Path,
        class_names: Sequence[str],
        rows: list[dict[str, Any]] | None = None,
        tb_dir: Path | None = None,
        purge_step: int | None = None,
        flush_every_s: float = 30.0,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.class_names = list(class_names)
        self.rows: list[dict[str, Any]] = list(rows or [])
        self.flush_every_s = float(flush_every_s)
        self._last_write = -math.inf
        self._dirty = False
        self.writer = None
        if tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(tb_dir), purge_step=purge_step)

    @classmethod
    def for_run(cls, out_dir: Path, class_names: Sequence[str], iteration: int) -> MetricsLog:
        """The log of run directory ``out_dir`` resumed at global ``iteration`` (0: a new run):
        rows logged after it are dropped (the log then matches an uninterrupted run),
        TensorBoard writes to ``out_dir/tb``."""
        folder = RunFolder(out_dir)
        rows = folder.metric_rows(up_to_iteration=iteration).rows
        return cls(out_dir, class_names, rows=rows, tb_dir=folder.tensorboard, purge_step=iteration)

    def log(self, row: dict[str, Any]) -> None:
        """Append a row (``kind`` "train" or "val").

        The files are rewritten after every validation row and at most every
        ``flush_every_s`` seconds otherwise (call :meth:`flush` before a checkpoint).
        """
        row = _clean(row)
        self.rows.append(row)
        self._dirty = True
        if row["kind"] != "train" or time.monotonic() - self._last_write >= self.flush_every_s:
            self.flush()
        if self.writer is not None:
            step = int(row["iteration"])
            if row["kind"] == "train":
                for key in ("loss", "lr", "images_per_s"):
                    if row.get(key) is not None:
                        self.writer.add_scalar(f"train/{key}", row[key], step)
            else:
                for key in ("miou", "miou_no_unlabeled", "pixel_accuracy"):
                    if row.get(key) is not None:
                        self.writer.add_scalar(f"val/{key}", row[key], step)
                for name, value in (row.get("iou") or {}).items():
                    if value is not None:
                        self.writer.add_scalar(f"val/iou/{name}", value, step)

    def flush(self) -> None:
        """Rewrite metrics.jsonl and metrics.csv (atomically) if rows were added."""
        if self._dirty:
            self._write()
            self._dirty = False
            self._last_write = time.monotonic()
        if self.writer is not None:
            self.writer.flush()

    def _write(self) -> None:
        folder = RunFolder(self.out_dir)
        atomic_write_text(folder.metrics_jsonl, "".join(json.dumps(r) + "\n" for r in self.rows))
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf,
            fieldnames=csv_columns(self.class_names),
            extrasaction="ignore",
            lineterminator="\n",
        )
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: ("" if v is None else v) for k, v in flatten_row(r).items()})
        atomic_write_text(folder.metrics_csv, buf.getvalue())

    def close(self) -> None:
        """Write pending rows; flush and close TensorBoard."""
        self.flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class SmoothedValue:
    """Sum and count of a tensor value over the current window, kept on the value's device
    (adding a value does not wait for the GPU)."""

    def __init__(self, device: torch.device) -> None:
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0

    def update(self, value: torch.Tensor) -> None:
        """Add one value."""
        self.total += value.double()
        self.count += 1

    def global_avg(self, ctx: DistContext) -> float:
        """Mean over the window of every process (a collective call under torchrun)."""
        total = float(distributed.all_reduce_sum(ctx, self.total.clone()))
        return total / (self.count * ctx.world_size)

    def reset(self) -> None:
        """Start a new window."""
        self.total.zero_()
        self.count = 0


class MetricLogger:
    """One process's view of the training log: the mean loss and images/s over the current
    logging window, the run's clock, and (rank 0, ``rows`` given) the metric rows on disk."""

    def __init__(
        self, ctx: DistContext, rows: MetricsLog | None = None, elapsed_s: float = 0.0
    ) -> None:
        self.ctx = ctx
        self.rows = rows
        self.loss = SmoothedValue(ctx.device)
        self.images = 0
        self._start = time.monotonic() - elapsed_s
        self._tick = time.monotonic()

    def elapsed(self) -> float:
        """Seconds the run has trained, the runs it resumes included."""
        return time.monotonic() - self._start

    def update(self, loss: torch.Tensor, images: int) -> None:
        """Count one step: its loss and the number of images this process trained on."""
        self.loss.update(loss)
        self.images += images * self.ctx.world_size

    def window(self) -> tuple[float, float]:
        """Mean loss over the processes and images/s of all processes since the window
        started (a collective call under torchrun)."""
        loss = self.loss.global_avg(self.ctx)
        return loss, self.images / max(time.monotonic() - self._tick, 1e-9)

    def new_window(self) -> None:
        """Start a new logging window."""
        self.loss.reset()
        self.images = 0
        self._tick = time.monotonic()

    def log(self, row: dict[str, Any]) -> None:
        """Record a metrics row stamped with ``time_s`` (a no-op without ``rows``)."""
        if self.rows is not None:
            self.rows.log({**row, "time_s": self.elapsed()})

    def flush(self) -> None:
        """Write the rows logged so far."""
        if self.rows is not None:
            self.rows.flush()

    def close(self) -> None:
        """Write pending rows; close TensorBoard."""
        if self.rows is not None:
            self.rows.close()


class TrainProgress:
    """What a training run shows while it runs: per epoch a bar on a terminal (periodic
    lines elsewhere), one summary line per epoch and per validation. Every line also goes
    to ``log_file`` (RUN_DIR/train.log, rank 0) whether or not it is shown."""

    def __init__(self, log_file: Path | None, show: bool, every_s: float = 30.0) -> None:
        self.log_file = log_file
        self.show = show
        self.every_s = every_s
        self._bar: Progress | None = None

    def epoch(self, epoch: int, epochs: int, iterations: int) -> Progress:
        """The progress of one epoch's iterations (close it at the epoch's end)."""
        self._bar = Progress(
            iterations,
            f"epoch {epoch}/{epochs}",
            unit="it",
            show=self.show,
            every_s=self.every_s,
            log_file=self.log_file,
        )
        return self._bar

    def say(self, text: str) -> None:
        """A line: under the bar (or on stderr) when shown, and in the log file."""
        bar = self._bar if self._bar is not None and not self._bar.closed else None
        if bar is None:
            bar = Progress(None, "", show=self.show, log_file=self.log_file, bar=False)
        bar.write(text)
