"""Hostile and broken images and arrays: decompression bombs (refused from the header, never
allocated), corrupt/truncated/empty PNGs, FIFOs named *.png, EXIF orientation, and limits on
values that drive allocations (resize, crop size, .npy shapes)."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from conftest import make_tiny_tree
from hazardseg.config import AugmentConfig
from hazardseg.data.check import check_dataset
from hazardseg.data.imageio import MAX_IMAGE_PIXELS, load_image, open_image
from hazardseg.data.inputs import collect_images
from hazardseg.data.streethazards import StreetHazards, load_label
from hazardseg.data.transforms import build_train_transform, parse_resize_policy
from hazardseg.errors import ConfigError, DataError
from hazardseg.evaluation.score_maps import load_npy_map as load_score_map
from hostile_helpers import assert_one_line_error, bomb_png, make_checkpoint, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EVAL = ["evaluate", "--checkpoint"]


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any image is decoded (a bomb must be refused from its header)."""

    def refuse(self: Image.Image) -> None:
        raise AssertionError(f"decoded an image of {self.size}")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail instead of hanging forever (e.g. on opening a FIFO)."""

    def boom(*_: object) -> None:
        raise TimeoutError("blocked: a FIFO was opened")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("size", [(30000, 30000), (9000, 9000), (40000, 10)])
def test_bomb_is_refused_from_the_header(tmp_path: Path, no_decoding: None, size) -> None:
    path = bomb_png(tmp_path / "bomb.png", *size)
    for loader in (open_image, load_image, load_label):
        with pytest.raises(DataError, match="bomb") as exc:
            loader(path)
        assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_limit_is_above_streethazards_frames() -> None:
    assert MAX_IMAGE_PIXELS >= 16 * 1280 * 720


@pytest.mark.parametrize(
    "content", [b"", b"\x89PNG\r\n\x1a\n", b"not an image at all", "truncated"]
)
def test_corrupt_truncated_and_empty_pngs(tmp_path: Path, content: bytes | str) -> None:
    path = tmp_path / "bad.png"
    if content == "truncated":
        buf = io.BytesIO()
        Image.fromarray(np.zeros((40, 40, 3), np.uint8) + 7).save(buf, format="PNG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"bad\.png"):
        load_image(path)


def _replace_with_bomb(root: Path, rel: str = "t5/1.png") -> Path:
    path = root / "test" / "images" / "test" / rel
    return bomb_png(path, 30000, 30000)


def test_data_check_reports_a_bomb(tiny_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = _replace_with_bomb(tiny_tree)
    code, _, err = run_cli(["data", "check", tiny_tree, "-s", "test", "--no-progress"], capsys)
    assert code == 1 and "Traceback" not in err
    assert any(str(bomb) in line and "bomb" in line for line in err.splitlines()), err


def test_data_check_never_decodes_a_bomb(tiny_tree: Path, monkeypatch) -> None:
    bomb = _replace_with_bomb(tiny_tree)
    real = ImageFile.ImageFile.load

    def guarded(self: Image.Image) -> object:
        assert self.size != (30000, 30000), "decoded the bomb"
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", guarded)
    report = check_dataset(tiny_tree, ["test"])
    assert any(str(bomb) in p for p in report.problems)


def test_evaluate_on_a_bomb_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"test": 2})
    bomb = _replace_with_bomb(root)
    ckpt = make_checkpoint(tmp_path / "best.pt")
    code, _, err = run_cli(
        [*EVAL, ckpt, "--data", root, "--methods", "msp", "--out", tmp_path / "ev", "--quiet"],
        capsys,
    )
    assert_one_line_error(code, err, bomb)


def test_predict_skips_bombs_and_corrupt_files_and_processes_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(src / "good.png")
    bomb_png(src / "bomb.png", 30000, 30000)
    (src / "empty.png").write_bytes(b"")
    ckpt = make_checkpoint(tmp_path / "best.pt")
    out = tmp_path / "out"
    code, _, err = run_cli(
        ["predict", "--checkpoint", ckpt, "--threshold", "0", "--out", out, src], capsys
    )
    # the rest is processed; the command then reports the skipped files in one line, exit 2
    assert_one_line_error(code, err, "2 image(s) could not be decoded", "predictions.json")
    assert (out / "good_seg.png").is_file() and (out / "predictions.json").is_file()
    assert not list(out.glob("bomb_*")) and not list(out.glob("empty_*"))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    loaded = load_image(path)
    assert loaded.size == (20, 40)  # shown upright: width and height swapped
    top = np.asarray(loaded)[:5].mean()
    assert top > 200  # the white left half is now on top
    png = tmp_path / "plain.png"
    Image.fromarray(arr).save(png)
    assert load_image(png).size == (40, 20)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_in_a_scanned_split_is_refused_not_opened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], deadline: None
) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"test": 2}, odgt=None)
    fifo = root / "test" / "images" / "test" / "t5" / "x.png"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        StreetHazards(root, "test")
    with pytest.raises(DataError, match="regular"):
        load_image(fifo)
    code, _, err = run_cli(["data", "check", root, "--no-progress", "-s", "test"], capsys)
    assert code == 1 and str(fifo) in err
    ckpt = make_checkpoint(tmp_path / "best.pt")
    code, _, err = run_cli(
        [*EVAL, ckpt, "--data", root, "--methods", "msp", "--out", tmp_path / "ev", "--quiet"],
        capsys,
    )
    assert_one_line_error(code, err, fifo)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_in_a_predict_folder_is_skipped(tmp_path: Path, deadline: None) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "a.png")
    os.mkfifo(src / "b.png")
    assert [k for _, k in collect_images([src])] == ["a"]
    with pytest.raises(DataError, match="not a regular file"):
        collect_images([src / "b.png"])


@pytest.mark.parametrize("policy", ["100000x100000", "40000x10", "short:100000"])
def test_resize_limits(policy: str) -> None:
    with pytest.raises(ConfigError, match="exceeds the image limit"):
        parse_resize_policy(policy)


def test_short_side_resize_of_an_extreme_aspect_is_refused() -> None:
    policy = parse_resize_policy("short:4096")
    with pytest.raises(DataError, match="exceeds the limit"):
        policy.output_size(10, 8000)


def test_cli_resize_limit_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"test": 2})
    ckpt = make_checkpoint(tmp_path / "best.pt")
    code, _, err = run_cli(
        [*EVAL, ckpt, "--data", root, "--out", tmp_path / "ev", "--resize", "100000x100000"],
        capsys,
    )
    assert_one_line_error(code, err, "100000x100000")


def test_crop_size_limit() -> None:
    with pytest.raises(ConfigError, match="crop_size"):
        build_train_transform(AugmentConfig(crop_size=100000))


def _npy_claiming(path: Path, shape: tuple[int, ...], dtype: str = "<f4") -> Path:
    buf = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    path.write_bytes(np.lib.format.magic(1, 0) + buf.getvalue()[8:] + b"\0" * 64)
    return path


def test_npy_header_claiming_a_huge_array_is_refused(tmp_path: Path) -> None:
    huge = _npy_claiming(tmp_path / "1.npy", (10**6, 10**6))
    with pytest.raises(DataError, match=r"shape \(1000000, 1000000\)"):
        load_score_map(huge, (48, 64))
    with pytest.raises(DataError, match="truncated"):
        load_score_map(huge, (10**6, 10**6))
    with pytest.raises(DataError, match="dtype"):
        load_score_map(_npy_claiming(tmp_path / "2.npy", (48, 64), "|O"), (48, 64))


def test_eval_maps_with_a_huge_npy_header_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tiny_tree(tmp_path / "sh", counts={"test": 2})
    maps = tmp_path / "maps"
    for i, town in ((1, "t5"), (2, "t6")):
        (maps / town).mkdir(parents=True, exist_ok=True)
        np.save(maps / town / f"{i}.npy", np.zeros((48, 64), np.float32))
    bad = _npy_claiming(maps / "t5" / "1.npy", (10**6, 10**6))
    code, _, err = run_cli(
        ["eval-maps", "--maps", maps, "--data", root, "--out", tmp_path / "o", "--quiet"], capsys
    )
    assert_one_line_error(code, err, bad)
