"""Run-directory bookkeeping: refuse to clobber a run, clear it on request, name best copies."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from hazardseg.errors import HazardsegError
from hazardseg.io import atomic_path
from hazardseg.run_folder import BEST_COPY_GLOB, TRAINING_FILES, RunFolder


def existing_run_files(out_dir: Path) -> list[Path]:
    """Training outputs already present in ``out_dir`` (empty when it is new or unused)."""
    return RunFolder(out_dir).training_outputs()


def check_run_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Raise when ``out_dir`` cannot be used as asked; never writes anything.

    A directory holding any training output is refused unless ``resume`` or ``overwrite``.
    """
    if resume and overwrite:
        raise HazardsegError("--resume and --overwrite exclude each other: choose one")
    if out_dir.exists() and not out_dir.is_dir():
        raise HazardsegError(f"{out_dir}: exists and is not a directory")
    found = existing_run_files(out_dir)
    if found and not (resume or overwrite):
        raise HazardsegError(
            f"{out_dir} already holds a training run ({found[0].name}); "
            "pass --resume to continue it or --overwrite to start again"
        )


def clear_run_dir(out_dir: Path) -> None:
    """Remove the training outputs (:data:`hazardseg.run_folder.TRAINING_FILES`), best copies
    and ``tb/``.

    Anything else in the directory (evaluations, figures, user files) is kept.
    """
    for path in existing_run_files(out_dir):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def remove_stale_temp_files(out_dir: Path) -> list[Path]:
    """Delete temporary files of interrupted atomic writes (``.<run file>.*.tmp``).

    A process killed while writing leaves such a file beside the complete previous version.
    """
    removed = []
    if out_dir.is_dir():
        for tmp in out_dir.glob(".*.tmp"):
            stem = tmp.name[1:].split(".tmp")[0]
            if any(stem.startswith(n + ".") for n in TRAINING_FILES) or stem.startswith("best_"):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def best_copy_name(model_name: str, miou: float, when: datetime | None = None) -> str:
    """``best_<model>_<YYYYmmdd>_miou<xx.xx>.pt`` with mIoU in percent."""
    when = when or datetime.now(UTC)
    return f"best_{model_name}_{when:%Y%m%d}_miou{100.0 * miou:.2f}.pt"


def publish_best_copy(out_dir: Path, best: Path, model_name: str, miou: float) -> Path:
    """Copy ``best`` to its dated, named copy atomically and remove older copies of this run."""
    target = out_dir / best_copy_name(model_name, miou)
    with atomic_path(target) as tmp:
        shutil.copyfile(best, tmp)
    for old in out_dir.glob(BEST_COPY_GLOB):
        if old != target:
            old.unlink(missing_ok=True)
    return target
