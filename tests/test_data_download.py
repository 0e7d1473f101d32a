"""Tests of ``data download``: local HTTP server only (127.0.0.1), resume, safe extraction."""

from __future__ import annotations

import io
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import make_tiny_tree
from hazardseg.cli import main
from hazardseg.data.download import download_file, extract_archive
from hazardseg.errors import DataError


class _Server:
    """Serves ``files`` by name; optional Range support and a cut after N bytes."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.honor_range = True
        self.cut_first_after: int | None = None
        self.requests: list[str | None] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                owner.requests.append(rng)
                if name not in owner.files:
                    self.send_error(404)
                    return
                data = owner.files[name]
                start = 0
                if rng and owner.honor_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if owner.cut_first_after is not None and len(owner.requests) == 1:
                    self.wfile.write(body[: owner.cut_first_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _tar_bytes(src: Path, names: list[str], prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in names:
            tar.add(src / name, arcname=f"{prefix}{name}")
    return buf.getvalue()


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    src = make_tiny_tree(tmp_path_factory.mktemp("src") / "sh", size=(32, 32))
    return {
        "streethazards_train.tar": _tar_bytes(src, ["train"]),
        "streethazards_test.tar": _tar_bytes(src, ["test"], prefix="StreetHazards/"),
        "blob.bin": bytes(range(256)) * 400,
    }


@pytest.fixture
def server(archives: dict[str, bytes]) -> Iterator[_Server]:
    srv = _Server(archives)
    yield srv
    srv.close()


def test_download_extract_and_check(
    server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    code = main(["data", "download", str(root), "--no-progress", "--timeout", "5",
                 "--train-url", f"{server.url}/streethazards_train.tar",
                 "--test-url", f"{server.url}/streethazards_test.tar"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "train: 4 images" in out and "test: 3 images" in out and "OK:" in out
    assert (root / "test/images/test/t6/2.png").is_file()  # top-level folder stripped
    assert not (root / "StreetHazards").exists()
    assert (root / "streethazards_train.tar").read_bytes() == server.files[
        "streethazards_train.tar"
    ]
    assert not list(root.glob("*.part")) and not list(root.glob(".hazardseg-extract-*"))


def test_resume_from_part_file(server: _Server, tmp_path: Path) -> None:
    data = server.files["blob.bin"]
    dest = tmp_path / "blob.bin"
    (tmp_path / "blob.bin.part").write_bytes(data[: len(data) // 2])
    download_file(f"{server.url}/blob.bin", dest, progress=False, timeout=5)
    assert server.requests == [f"bytes={len(data) // 2}-"]
    assert dest.read_bytes() == data and not (tmp_path / "blob.bin.part").exists()


def test_interrupted_download_resumes(server: _Server, tmp_path: Path) -> None:
    data = server.files["blob.bin"]
    server.cut_first_after = 1000
    dest = download_file(f"{server.url}/blob.bin", tmp_path / "b", progress=False, timeout=5)
    assert server.requests == [None, "bytes=1000-"]
    assert dest.read_bytes() == data


def test_interrupted_without_retries_keeps_part(server: _Server, tmp_path: Path) -> None:
    server.cut_first_after = 1000
    with pytest.raises(DataError, match=r"interrupted after 1000 bytes.*resume"):
        download_file(f"{server.url}/blob.bin", tmp_path / "b", retries=0, progress=False)
    assert (tmp_path / "b.part").stat().st_size == 1000 and not (tmp_path / "b").exists()
    download_file(f"{server.url}/blob.bin", tmp_path / "b", progress=False, timeout=5)
    assert (tmp_path / "b").read_bytes() == server.files["blob.bin"]


def test_server_ignoring_range_restarts(server: _Server, tmp_path: Path) -> None:
    data = server.files["blob.bin"]
    server.honor_range = False
    (tmp_path / "b.part").write_bytes(b"x" * 5000)  # would corrupt the file if appended to
    download_file(f"{server.url}/blob.bin", tmp_path / "b", progress=False, timeout=5)
    assert server.requests == ["bytes=5000-"]
    assert (tmp_path / "b").read_bytes() == data


def test_http_404_is_data_error(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="HTTP 404"):
        download_file(f"{server.url}/nope.tar", tmp_path / "x", progress=False, timeout=5)


def test_from_archive(
    archives: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "streethazards_test.tar"
    tar.write_bytes(archives["streethazards_test.tar"])
    root = tmp_path / "data"
    code = main(["data", "download", str(root), "--from-archive", str(tar), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "test: 3 images" in out and "train:" not in out


def _escaping_archive(path: Path) -> Path:
    """A tar archive whose one member would land outside the destination."""
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    return path


def test_unsafe_and_bad_archives_rejected(tmp_path: Path) -> None:
    evil = _escaping_archive(tmp_path / "evil.tar")
    with pytest.raises(DataError, match=r"evil\.tar: cannot extract"):
        extract_archive(evil, tmp_path / "root")
    assert not (tmp_path / "escape.txt").exists()
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar")
    with pytest.raises(DataError, match=r"junk\.tar: cannot extract"):
        extract_archive(junk, tmp_path / "root")
    assert main(["data", "download", str(tmp_path / "r"), "--from-archive", "missing.tar"]) == 2


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member("a/../../escape.txt"),
        _member("link", tarfile.SYMTYPE, "/etc/passwd"),
        _member("d/link", tarfile.SYMTYPE, "../../outside"),
        _member("hard", tarfile.LNKTYPE, "../outside"),
        _member("dev", tarfile.CHRTYPE),
        _member("fifo", tarfile.FIFOTYPE),
    ],
    ids=["dotdot", "abs-symlink", "escaping-symlink", "hardlink", "device", "fifo"],
)
def test_extraction_without_data_filter_refuses_what_the_filter_refuses(
    tmp_path: Path, member: tarfile.TarInfo
) -> None:
    """Pythons before 3.11.4 have no tarfile "data" filter; the fallback check refuses the same
    members (and the real filter, where present, refuses them too)."""
    from hazardseg.data.download import _checked_member

    with pytest.raises(tarfile.ExtractError):
        _checked_member(member, tmp_path)
    if hasattr(tarfile, "data_filter"):
        with pytest.raises(tarfile.FilterError):
            tarfile.data_filter(member, str(tmp_path))


def test_extraction_without_data_filter_keeps_safe_members_and_drops_special_bits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hazardseg.data.download import _checked_member

    ok = _checked_member(_member("a/b.txt", mode=0o6777), tmp_path)
    assert ok.name == "a/b.txt" and ok.mode == 0o755
    assert _checked_member(_member("/abs.txt"), tmp_path).name == "abs.txt"  # as the filter does
    assert _checked_member(_member("d", tarfile.DIRTYPE, mode=0o1777), tmp_path).mode == 0o755
    assert _checked_member(_member("a/l", tarfile.SYMTYPE, "b.txt"), tmp_path).linkname == "b.txt"
    # the whole extraction on the fallback path, as on Python 3.11.0-3.11.3
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    evil = _escaping_archive(tmp_path / "evil.tar")
    with pytest.raises(DataError, match=r"evil\.tar: cannot extract .*outside"):
        extract_archive(evil, tmp_path / "root")
    assert not (tmp_path / "escape.txt").exists()


def test_download_that_does_not_extract_is_removed(tmp_path: Path) -> None:
    from hazardseg.data.download import download_dataset
    from hazardseg.errors import DataError

    srv = _Server({"cut.tar": b"not a tar archive " * 64})
    try:
        root = tmp_path / "data"
        with pytest.raises(DataError, match="removed the downloaded file; run again"):
            download_dataset(
                root, urls={"train": f"{srv.url}/cut.tar"}, parts=("train",), progress=False
            )
        assert not (root / "cut.tar").exists() and not list(root.glob("*.part"))
    finally:
        srv.close()
