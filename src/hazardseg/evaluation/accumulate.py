"""Per-method metric accumulators, the optional score-map writer and the background worker."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hazardseg.errors import HazardsegError
from hazardseg.evaluation.spec import NONFINITE_POLICIES
from hazardseg.io import atomic_path
from hazardseg.metrics.ood import PerImageOOD, PooledOOD


def map_relpath(rel: str) -> str:
    """Score-map path of an image: ``t5/1.png`` -> ``t5/1.npy``."""
    return str(Path(rel).with_suffix(".npy"))


class MethodAccumulator:
    """Pooled and per-image OOD accumulators of one method, with non-finite score counting.

    Non-finite scores on evaluated pixels are counted per image; they are excluded from the
    metrics and :meth:`check_nonfinite` raises unless the policy is ``"exclude"``.
    """

    def __init__(self, name: str, nonfinite: str = "error") -> None:
        if nonfinite not in NONFINITE_POLICIES:
            raise HazardsegError(
                f"nonfinite policy {nonfinite!r}: expected one of {', '.join(NONFINITE_POLICIES)}"
            )
        self.name = name
        self.policy = nonfinite
        self.pooled = PooledOOD()
        self.per_image = PerImageOOD()
        self.nonfinite = 0
        self.nonfinite_images: list[str] = []

    def update(
        self,
        scores: torch.Tensor,
        is_anomaly: torch.Tensor,
        valid: torch.Tensor,
        ids: list[str],
        per_image_valid: torch.Tensor | None = None,
    ) -> None:
        """Add a batch: scores (N, H, W) float, masks (N, H, W) bool, one id per image.

        ``valid`` selects the pixels of the pooled protocol, ``per_image_valid`` those of the
        per-image protocol (default: ``valid``; see
        :func:`hazardseg.metrics.ood_protocol.per_image_masks`).
        """
        pi_valid = valid if per_image_valid is None else per_image_valid
        bad = ~torch.isfinite(scores) & (valid | pi_valid)
        if bool(bad.any()):
            per = bad.flatten(1).sum(1).tolist()
            self.nonfinite += int(sum(per))
            self.nonfinite_images.extend(i for i, c in zip(ids, per, strict=True) if c)
            valid = valid & ~bad
            pi_valid = pi_valid & ~bad
        self.pooled.update(scores, is_anomaly, valid)
        self.per_image.update(scores, is_anomaly, pi_valid, image_ids=list(ids))

    def merge(self, other: MethodAccumulator) -> MethodAccumulator:
        """Add another rank's accumulator; return self."""
        self.pooled.merge(other.pooled)
        self.per_image.merge(other.per_image)
        self.nonfinite += other.nonfinite
        self.nonfinite_images.extend(other.nonfinite_images)
        return self

    def all_reduce(self) -> None:
        """Merge this method's accumulators across ranks (every rank ends with the total)."""
        from hazardseg import distributed

        if not distributed.is_distributed():
            return
        self.pooled.all_reduce()
        self.per_image.all_reduce()
        parts = distributed.gather_objects((self.nonfinite, self.nonfinite_images))
        self.nonfinite = sum(p[0] for p in parts)
        self.nonfinite_images = [i for p in parts for i in p[1]]

    def check_nonfinite(self, where: str) -> None:
        """Raise when non-finite scores were seen and the policy is ``"error"``."""
        if self.nonfinite and self.policy == "error":
            first = ", ".join(sorted(self.nonfinite_images)[:3])
            raise HazardsegError(
                f"{where}: method '{self.name}' has {self.nonfinite} NaN/infinite scores in "
                f"{len(self.nonfinite_images)} image(s) (first: {first}); use --nonfinite "
                "exclude to leave those pixels out (the count is recorded)"
            )


class MapWriter:
    """Writes score maps as float32 ``<dir>/<method>/<rel>.npy`` (``--save-maps``; atomic).

    Only this opt-in output keeps score maps on disk: component metrics never need them.
    """

    def __init__(self, maps_dir: Path) -> None:
        self.maps_dir = Path(maps_dir)

    def map_path(self, method: str, rel: str) -> Path:
        """Where the score map of image ``rel`` for ``method`` is written."""
        return self.maps_dir / method / map_relpath(rel)

    def put(self, method: str, rel: str, scores: torch.Tensor) -> None:
        """Write one (H, W) score map as float32."""
        arr = scores.detach().to("cpu", torch.float32).numpy()
        with atomic_path(self.map_path(method, rel)) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)


class BackgroundWorker:
    """Runs submitted calls in submission order on one background thread.

    Metric updates (numpy/torch, which release the GIL) then overlap with the next forward
    pass. At most ``max_pending`` calls wait in the queue, so memory stays bounded. The first
    exception raised by a call is re-raised by the next :meth:`submit` or by :meth:`close`.
    With ``enabled=False`` calls run inline.
    """

    def __init__(self, enabled: bool = True, max_pending: int = 2) -> None:
        self.enabled = enabled
        self._error: BaseException | None = None
        if enabled:
            self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # drain without running once a call has failed
            fn, args = item
            try:
                with torch.inference_mode():
                    fn(*args)
            except BaseException as exc:  # re-raised in the submitting thread
                self._error = exc

    def submit(self, fn: Any, *args: Any) -> None:
        """Queue ``fn(*args)`` (or run it now when disabled)."""
        if self._error is not None:
            raise self._error
        if not self.enabled:
            fn(*args)
            return
        self._queue.put((fn, args))

    def close(self) -> None:
        """Wait for every queued call; re-raise the first failure."""
        self._stop()
        if self._error is not None:
            raise self._error

    def _stop(self) -> None:
        if self.enabled and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def __enter__(self) -> BackgroundWorker:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # an error is already on its way: stop the thread, keep that error
            self._stop()
