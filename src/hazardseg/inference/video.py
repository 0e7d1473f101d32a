"""Streaming video input and output (PyAV, which bundles FFmpeg in its wheels).

Frames are decoded, processed in small batches, encoded and released one batch at a time, so
memory does not grow with the video's length::

    def frame_fn(frames):                    # list of (H, W, 3) uint8 RGB
        return [(overlay(f), {"anomaly_fraction": 0.01}) for f in frames]

    summary = process_video("drive.mp4", "out/", frame_fn, every=2)
    # out/overlay.mp4, out/frames.jsonl (one JSON object per processed frame), out/video.json

The overlays are encoded by :class:`hazardseg.inference.video_writer.VideoWriter`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hazardseg.errors import DataError
from hazardseg.inference.video_writer import VideoError, VideoWriter
from hazardseg.io import atomic_path, atomic_write_json
from hazardseg.optional import require

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".mov", ".webm")
"""File suffixes read and written as video."""
DEFAULT_FPS = 25.0
"""Frame rate assumed when a video does not state one."""

FrameFn = Callable[[list[np.ndarray]], Sequence[tuple[np.ndarray, dict[str, Any]]]]
"""``frame_fn(frames) -> [(overlay_rgb_uint8, record_dict), ...]``, one pair per frame."""


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a video suffix (mp4, avi, mkv, mov, webm)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video's first video stream."""

    path: str
    width: int
    height: int
    fps: float
    frames: int | None
    """Frame count stated by the container (may be missing or approximate)."""
    duration_s: float | None
    codec: str


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    index: int
    """0-based position in the video (counting skipped frames)."""
    time_s: float | None
    image: np.ndarray
    """(H, W, 3) uint8 RGB."""


@dataclass(frozen=True)
class VideoOutputs:
    """File names :func:`process_video` writes (``overlay`` None: no overlay video) and the
    overlay's codec (None: the container's default, see :class:`VideoWriter`)."""

    overlay: str | None = "overlay.mp4"
    records: str = "frames.jsonl"
    summary: str = "video.json"
    codec: str | None = None


@dataclass(frozen=True)
class VideoSummary:
    """What :func:`process_video` read and wrote."""

    input: str
    overlay: str | None
    records: str
    summary: str
    width: int
    height: int
    fps: float
    output_fps: float
    every: int
    frames_read: int
    frames_processed: int
    elapsed_s: float

    @property
    def frames_per_s(self) -> float:
        """Processed frames per wall-clock second."""
        return self.frames_processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {**self.__dict__, "frames_per_s": self.frames_per_s}


def _av() -> Any:
    return require("av", "video input/output")


@contextlib.contextmanager
def _open_input(path: str | os.PathLike[str]) -> Iterator[tuple[Any, Any]]:
    av = _av()
    p = Path(path)
    if not p.is_file():
        raise DataError(f"video not found: {p}")
    try:
        container = av.open(str(p), "r")
    except Exception as exc:  # PyAV raises FFmpeg errors of many types
        raise DataError(f"{p}: cannot open as a video ({' '.join(str(exc).split())})") from None
    try:
        if not container.streams.video:
            raise DataError(f"{p}: has no video stream")
        yield container, container.streams.video[0]
    finally:
        container.close()


def _fps(stream: Any) -> float:
    for rate in (stream.average_rate, getattr(stream, "guessed_rate", None), stream.base_rate):
        if rate:
            value = float(rate)
            if math.isfinite(value) and value > 0:
                return value
    return DEFAULT_FPS


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Size, frame rate, frame count and codec of the first video stream of ``path``."""
    with _open_input(path) as (container, stream):
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        return VideoInfo(
            path=str(path),
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            fps=_fps(stream),
            frames=int(stream.frames) if stream.frames else None,
            duration_s=duration,
            codec=str(stream.codec_context.name),
        )


def _check_every(every: int) -> int:
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise VideoError(f"every must be a positive integer (1 = every frame), got {every!r}")
    return every


def iter_frames(
    path: str | os.PathLike[str], *, every: int = 1, max_frames: int | None = None
) -> Iterator[Frame]:
    """Decode ``path`` frame by frame, yielding every ``every``-th frame (the first always) as
    uint8 RGB, at most ``max_frames`` of them; skipped frames are decoded but not converted."""
    _check_every(every)
    yielded = 0
    with _open_input(path) as (container, stream):
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % every:
                    continue
                if max_frames is not None and yielded >= max_frames:
                    return
                time_s = float(frame.time) if frame.time is not None else None
                yield Frame(index, time_s, frame.to_ndarray(format="rgb24"))
                yielded += 1
        except _av().error.FFmpegError as exc:
            raise DataError(f"{path}: video decoding failed ({exc})") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"record value of type {type(value).__name__} is not JSON-serialisable")


def process_video(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    frame_fn: FrameFn,
    *,
    every: int = 1,
    batch_size: int = 1,
    progress: bool = True,
    max_frames: int | None = None,
    outputs: VideoOutputs | None = None,
) -> VideoSummary:
    """Stream ``path`` through ``frame_fn`` and write the results into ``out_dir``.

    Every ``every``-th frame is passed to ``frame_fn`` in lists of up to ``batch_size``
    frames; it returns one ``(overlay, record)`` per frame. The overlays are encoded into a
    video (at the source frame rate divided by ``every``), the records written as JSON lines
    with ``frame`` (index in the video) and ``time_s`` added, and a summary; ``outputs`` names
    the files (default :class:`VideoOutputs`). Outputs appear only when the whole video was
    processed. ``progress`` shows a bar with frames/s on stderr.
    """
    names = outputs or VideoOutputs()
    _check_every(every)
    if batch_size < 1:
        raise VideoError(f"batch_size must be >= 1, got {batch_size}")
    info = probe_video(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    output_fps = info.fps / every
    total = None if info.frames is None else -(-info.frames // every)
    if max_frames is not None and total is not None:
        total = min(total, max_frames)

    from hazardseg.progress import Progress

    start = time.perf_counter()
    processed = 0
    last_index = -1
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(Progress(total, Path(path).name, unit="frame", show=progress))
        rec_tmp = stack.enter_context(atomic_path(out / names.records))
        records = stack.enter_context(open(rec_tmp, "w", encoding="utf-8"))
        writer = None
        if names.overlay is not None:
            writer = stack.enter_context(
                VideoWriter(out / names.overlay, output_fps, codec=names.codec)
            )

        def flush(batch: list[Frame]) -> None:
            nonlocal processed
            results = list(frame_fn([f.image for f in batch]))
            if len(results) != len(batch):
                raise VideoError(
                    f"frame_fn returned {len(results)} results for {len(batch)} frames"
                )
            for frame, (overlay, record) in zip(batch, results, strict=True):
                if writer is not None:
                    writer.write(np.asarray(overlay))
                row = {"frame": frame.index, "time_s": frame.time_s, **dict(record)}
                records.write(json.dumps(row, default=_json_default) + "\n")
            processed += len(batch)
            bar.update(len(batch))

        batch: list[Frame] = []
        for frame in iter_frames(path, every=every, max_frames=max_frames):
            last_index = frame.index
            batch.append(frame)
            if len(batch) >= batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
        if processed == 0:
            raise DataError(f"{path}: no frames could be decoded")
        records.close()
    elapsed = time.perf_counter() - start
    summary = VideoSummary(
        input=str(path),
        overlay=str(out / names.overlay) if names.overlay is not None else None,
        records=str(out / names.records),
        summary=str(out / names.summary),
        width=info.width,
        height=info.height,
        fps=info.fps,
        output_fps=output_fps,
        every=every,
        frames_read=last_index + 1,
        frames_processed=processed,
        elapsed_s=elapsed,
    )
    atomic_write_json(out / names.summary, summary.to_dict())
    return summary
