"""The optional score-map writer and the background worker of ``evaluate``."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hazardseg.io import atomic_path


def map_relpath(rel: str) -> str:
    """Score-map path of an image: ``t5/1.png`` -> ``t5/1.npy``."""
    return str(Path(rel).with_suffix(".npy"))


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
