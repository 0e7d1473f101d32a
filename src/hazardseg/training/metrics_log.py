"""Training metrics: rows in RUN_DIR/metrics.jsonl and metrics.csv, scalars in TensorBoard."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hazardseg.io import atomic_write_text

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

    @staticmethod
    def read_rows(path: Path, up_to_iteration: int | None = None) -> list[dict[str, Any]]:
        """Rows of an existing metrics.jsonl, dropping those after ``up_to_iteration``.

        Used on resume: rows logged after the checkpoint being resumed are discarded so the
        log matches an uninterrupted run. A torn last line is skipped.
        """
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if up_to_iteration is None or int(row.get("iteration", 0)) <= up_to_iteration:
                rows.append(row)
        return rows

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
        atomic_write_text(
            self.out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.rows)
        )
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
        atomic_write_text(self.out_dir / "metrics.csv", buf.getvalue())

    def close(self) -> None:
        """Write pending rows; flush and close TensorBoard."""
        self.flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
