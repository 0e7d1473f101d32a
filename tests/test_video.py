"""Streaming video input/output (hazardseg.inference.video); the tests make their own videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from hazardseg.errors import DataError
from hazardseg.inference.video import is_video, iter_frames, probe_video, process_video
from hazardseg.inference.video_writer import VideoError, VideoWriter


def _frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A frame whose brightness encodes its index (survives lossy coding)."""
    img = np.full((h, w, 3), (i * 8) % 256, np.uint8)
    img[: h // 2, : w // 2, 0] = 200
    return img


def _make_video(path: Path, n: int, fps: float = 30, h: int = 48, w: int = 64, **kw) -> Path:
    with VideoWriter(path, fps, **kw) as writer:
        for i in range(n):
            writer.write(_frame(i, h, w))
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv"])
def test_write_probe_and_read_back(tmp_path, suffix):
    path = _make_video(tmp_path / f"clip{suffix}", 12, fps=24)
    assert is_video(path) and not is_video(tmp_path / "a.png")
    assert not list(tmp_path.glob(".*.tmp"))
    info = probe_video(path)
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(24, rel=1e-3)
    frames = list(iter_frames(path, every=5))
    assert [f.index for f in frames] == [0, 5, 10]
    for f in frames:
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
        # lossy codecs: compare the mean brightness of the lower half with the written value
        assert abs(float(f.image[24:, :, 1].mean()) - (f.index * 8) % 256) < 6
    assert frames[1].time_s == pytest.approx(5 / 24, abs=1e-3)
    assert [f.index for f in iter_frames(path, max_frames=2)] == [0, 1]


def test_process_video_every_batches_and_outputs(tmp_path):
    src = _make_video(tmp_path / "in.mp4", 30, fps=30)
    calls: list[int] = []

    def frame_fn(frames):
        calls.append(len(frames))
        out = []
        for f in frames:
            overlay = f.copy()
            overlay[..., 2] = 255
            out.append((overlay, {"anomaly_fraction": np.float32(0.25), "threshold": 1.5}))
        return out

    summary = process_video(src, tmp_path / "out", frame_fn, every=3, batch_size=4, progress=False)
    assert calls == [4, 4, 2]
    assert summary.frames_processed == 10 and summary.every == 3
    assert summary.output_fps == pytest.approx(10)
    rows = [json.loads(line) for line in (tmp_path / "out/frames.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(0, 30, 3))
    assert rows[1] == {
        "frame": 3,
        "time_s": pytest.approx(0.1, abs=1e-3),
        "anomaly_fraction": 0.25,
        "threshold": 1.5,
    }
    info = probe_video(tmp_path / "out/overlay.mp4")
    assert (info.width, info.height, info.frames) == (64, 48, 10)
    assert info.fps == pytest.approx(10, rel=1e-3)
    blue = next(iter_frames(tmp_path / "out/overlay.mp4")).image[..., 2]
    assert blue.mean() > 200
    meta = json.loads((tmp_path / "out/video.json").read_text())
    assert meta["frames_processed"] == 10 and meta["every"] == 3


def test_odd_frame_size_is_padded(tmp_path):
    path = _make_video(tmp_path / "odd.mp4", 3, h=33, w=47)
    info = probe_video(path)
    assert (info.width, info.height) == (48, 34)


def test_failures_leave_no_outputs(tmp_path):
    src = _make_video(tmp_path / "in.mp4", 6)
    out = tmp_path / "out"
    with pytest.raises(VideoError, match="returned 0 results for 1 frames"):
        process_video(src, out, lambda frames: [], progress=False)
    assert not any(p.is_file() for p in out.iterdir())

    def boom(frames):
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError):
        process_video(src, out, boom, progress=False)
    assert not any(p.is_file() for p in out.iterdir())
    with pytest.raises(VideoError, match="every must be a positive integer"):
        process_video(src, out, boom, every=0, progress=False)
    with pytest.raises(DataError, match="video not found"):
        process_video(tmp_path / "missing.mp4", out, boom, progress=False)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(DataError, match="cannot open as a video"):
        probe_video(bad)
    with pytest.raises(VideoError, match="unknown video suffix"):
        VideoWriter(tmp_path / "x.gif", 25)
    writer = VideoWriter(tmp_path / "sizes.mp4", 25)
    writer.write(_frame(0))
    with pytest.raises(VideoError, match="all frames must share one size"):
        writer.write(_frame(1, 32, 32))
    writer.abort()
    with pytest.raises(VideoError, match="uint8 RGB frame"):
        VideoWriter(tmp_path / "y.mp4", 25).write(np.zeros((4, 4), np.float32))
    assert not (tmp_path / "sizes.mp4").exists() and not list(tmp_path.glob(".*.tmp"))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_memory_is_flat_in_video_length(tmp_path):
    """2000 frames of 320x180 (345 MB of RGB) through process_video: RSS grows < 200 MB."""
    src = _make_video(tmp_path / "long.mp4", 2000, fps=30, h=180, w=320, preset="ultrafast")
    base = _rss_mb()
    peak = base

    def frame_fn(frames):
        nonlocal peak
        peak = max(peak, _rss_mb())
        return [(f, {"mean": float(f[::8, ::8].mean())}) for f in frames]

    summary = process_video(src, tmp_path / "out", frame_fn, batch_size=4, progress=False)
    peak = max(peak, _rss_mb())
    assert summary.frames_processed == 2000
    assert peak - base < 200, f"RSS grew by {peak - base:.0f} MB"
