"""Progress of anything a user waits on: a tqdm bar on a terminal, periodic plain lines
otherwise (a log file, a CI job, a pipe), and the same lines appended to an optional log file.

::

    with Progress(total=len(loader), desc="epoch 3/20", unit="batch") as bar:
        for batch in loader:
            ...
            bar.update(1, loss=f"{loss:.3f}")
    for item in track(items, len(items), "predict", unit="image"):
        ...
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

EVERY_S = 30.0
"""Seconds between two plain progress lines (not on a terminal)."""


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr) is an interactive terminal."""
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = round(s)
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class Progress:
    """Counts work done out of ``total`` (None: unknown) and shows it.

    With ``show``: on a terminal (``bar=None`` decides by stderr) a tqdm bar; otherwise one
    line on stderr every ``every_s`` seconds and, when any was printed, a final line on
    :meth:`close` (a run shorter than ``every_s`` prints nothing). Every plain line (and every
    :meth:`write`) is also appended to ``log_file`` when given, shown or not.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        unit: str = "it",
        show: bool = True,
        every_s: float = EVERY_S,
        bar: bool | None = None,
        log_file: str | os.PathLike[str] | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.show = show
        self.log_file = Path(log_file) if log_file is not None else None
        self.enabled = show or self.log_file is not None
        self.every_s = float(every_s)
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self._stream = stream
        self._start = time.monotonic()
        self._last_line = self._start
        self._closed = False
        use_bar = is_terminal(stream) if bar is None else bar
        self._bar = None
        if show and use_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False, file=stream
            )

    @property
    def stream(self) -> TextIO:
        """Where plain lines go (stderr unless given)."""
        return self._stream if self._stream is not None else sys.stderr

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self._start

    def line(self) -> str:
        """The plain progress line: count, rate, elapsed and remaining time, postfix values."""
        elapsed = self.elapsed()
        rate = self.n / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        text = f"{self.desc}: {count} {self.unit} ({rate:.2f} {self.unit}/s, {_seconds(elapsed)}"
        if self.total is not None and rate > 0 and self.n < self.total:
            text += f" elapsed, ~{_seconds((self.total - self.n) / rate)} left"
        else:
            text += " elapsed"
        text += ")"
        if self.postfix:
            text += " " + " ".join(f"{k} {v}" for k, v in self.postfix.items())
        return text

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Count ``n`` more units; ``postfix`` values are shown after the count."""
        if not self.enabled:
            return
        self.n += n
        if postfix:
            self.postfix.update(postfix)
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(self.postfix, refresh=False)
        now = time.monotonic()
        if now - self._last_line >= self.every_s:
            self._last_line = now
            self._emit(self.line(), to_stream=self._bar is None)

    def write(self, text: str) -> None:
        """A message line: under the bar on a terminal, on stderr otherwise; and in the log."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self._stream)
            self._emit(text, to_stream=False)
        else:
            self._emit(text, to_stream=True)

    def _emit(self, text: str, to_stream: bool) -> None:
        if to_stream and self.show:
            print(text, file=self.stream, flush=True)
        if self.log_file is not None:
            with open(self.log_file, "a", encoding="utf-8") as fh:
                fh.write(text + "\n")

    def close(self, final_line: bool = True) -> None:
        """Remove the bar; write the final plain line (not on a terminal) and to the log,
        unless ``final_line`` is False (the caller writes its own summary)."""
        if self._closed or not self.enabled:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        if final_line and (self.n or self.total):
            # a plain final line only closes a run that already printed periodic lines
            shown = self._bar is None and self._last_line > self._start
            self._emit(self.line(), to_stream=shown)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(final_line=exc_type is None)


def track(
    items: Iterable[T],
    total: int | None,
    desc: str,
    *,
    unit: str = "it",
    enabled: bool = True,
    every_s: float = EVERY_S,
    log_file: str | os.PathLike[str] | None = None,
) -> Iterator[T]:
    """Iterate ``items`` while showing (``enabled``) a :class:`Progress` of ``total`` units,
    also written to ``log_file`` when given."""
    if not enabled and log_file is None:
        yield from items
        return
    with Progress(total, desc, unit=unit, show=enabled, every_s=every_s, log_file=log_file) as bar:
        for item in items:
            yield item
            bar.update(1)
