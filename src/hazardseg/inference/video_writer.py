"""Encoding RGB frames into a video file (PyAV), written atomically."""

from __future__ import annotations

import contextlib
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from hazardseg.errors import HazardsegError
from hazardseg.io import atomic_path
from hazardseg.optional import require

CONTAINER_FORMATS: dict[str, str] = {
    ".mp4": "mp4",
    ".avi": "avi",
    ".mkv": "matroska",
    ".mov": "mov",
    ".webm": "webm",
}
"""Video suffix -> the container format written."""


class VideoError(HazardsegError):
    """A video cannot be read or written as asked."""


class VideoWriter:
    """Encode RGB frames into a video file, written atomically when closed without error.

    The container follows the suffix of ``path`` (mp4, mkv, mov, avi, webm); ``codec``
    defaults to H.264 (libx264, ``crf``/``preset`` apply) for mp4/mkv/mov, MPEG-4 part 2 for
    avi and VP9 for webm. Frames of odd width or height are padded by one edge row/column
    (yuv420p needs even sizes). All frames must share the first frame's size.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        *,
        codec: str | None = None,
        crf: int = 23,
        preset: str = "veryfast",
    ) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in CONTAINER_FORMATS:
            raise VideoError(
                f"{self.path}: unknown video suffix {suffix!r}; expected one of "
                f"{', '.join(CONTAINER_FORMATS)}"
            )
        if not fps or not math.isfinite(fps) or fps <= 0:
            raise VideoError(f"{self.path}: frame rate must be > 0, got {fps!r}")
        self.av = require("av", "video input/output")
        self.format = CONTAINER_FORMATS[suffix]
        default = {"avi": "mpeg4", "webm": "libvpx-vp9"}.get(self.format, "libx264")
        self.codec = codec or default
        if self.codec not in self.av.codecs_available:
            fallback = "mpeg4"
            if codec is not None or fallback not in self.av.codecs_available:
                raise VideoError(f"video codec {self.codec!r} is not available in PyAV")
            self.codec = fallback
        self.fps = float(fps)
        self.crf = int(crf)
        self.preset = str(preset)
        self.frames = 0
        self._size: tuple[int, int] | None = None
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        self._container: Any = None
        self._stream: Any = None

    def _open(self, height: int, width: int) -> None:
        self._size = (height, width)
        self._container = self.av.open(str(self._tmp), "w", format=self.format)
        rate = Fraction(self.fps).limit_denominator(1001)
        stream = self._container.add_stream(self.codec, rate=rate)
        stream.width = width + width % 2
        stream.height = height + height % 2
        stream.pix_fmt = "yuv420p"
        if self.codec == "libx264":
            stream.options = {"crf": str(self.crf), "preset": self.preset}
        elif self.codec == "mpeg4":
            stream.codec_context.bit_rate = max(500_000, 4 * width * height)
        self._stream = stream

    def write(self, image: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise VideoError(
                f"{self.path.name}: expected an (H, W, 3) uint8 RGB frame, got "
                f"{image.dtype} {tuple(image.shape)}"
            )
        h, w = image.shape[:2]
        if self._container is None:
            self._open(h, w)
        elif (h, w) != self._size:
            raise VideoError(
                f"{self.path.name}: frame {self.frames} is {h}x{w}, the first frame was "
                f"{self._size[0]}x{self._size[1]} (HxW); all frames must share one size"
            )
        if h % 2 or w % 2:
            image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and move the file into place (nothing is written without frames)."""
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
        if self.frames == 0:
            self.abort()
            return
        self._stack.close()

    def abort(self) -> None:
        """Discard the output (the temporary file is removed, ``path`` left untouched)."""
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        self._stack.__exit__(VideoError, VideoError("aborted"), None)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
