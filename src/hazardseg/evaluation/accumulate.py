"""The background worker of ``evaluate``: metric updates overlapped with the next forward."""

from __future__ import annotations

import queue
import threading
from typing import Any

import torch


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
