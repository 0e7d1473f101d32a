"""Download (resumable) and safe extraction of the official StreetHazards archives."""

from __future__ import annotations

import copy
import filecmp
import http.client
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

from tqdm import tqdm

from hazardseg.data.check import CheckReport, check_dataset
from hazardseg.errors import DataError

DEFAULT_URLS: dict[str, str] = {
    "train": "https://people.eecs.berkeley.edu/~hendrycks/streethazards_train.tar",
    "test": "https://people.eecs.berkeley.edu/~hendrycks/streethazards_test.tar",
}
"""Official archive of each top-level folder (train/ holds train + validation)."""

ARCHIVE_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("train", "validation"),
    "test": ("test",),
}
"""Splits contained in each top-level folder."""

_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class _Interrupted(Exception):
    """A transfer stopped before the expected number of bytes arrived."""


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _attempt(url: str, part: Path, timeout: float, bar: tqdm | None) -> None:
    """One request: resume ``part`` with a Range request when it has data."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "hazardseg"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            match = re.search(r"/(\d+)", exc.headers.get("Content-Range", "") or "")
            if match and int(match.group(1)) == have:
                return  # the partial file is already complete
            part.unlink()
            raise _Interrupted("server refused the resume range; restarting") from None
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}; expected the archive") from None
    with response:
        if have and response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                part.unlink()
                raise _Interrupted("server answered an unexpected range; restarting")
            total = None if match.group(3) == "*" else int(match.group(3))
            mode = "ab"
        else:  # a full answer (200), also when the server ignores Range
            have = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        if bar is not None:
            bar.reset(total=total)
            bar.update(have)
        received = have
        with open(part, mode) as fh:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (http.client.IncompleteRead, OSError) as exc:
                    raise _Interrupted(str(exc) or type(exc).__name__) from None
                if not chunk:
                    break
                fh.write(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        if total is not None and received < total:
            raise _Interrupted(f"got {received} of {total} bytes")


def download_file(
    url: str,
    dest: str | Path,
    *,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming an earlier partial file.

    A partial file is continued with an HTTP Range request; a server that ignores Range (200)
    restarts it from zero. ``dest`` appears only once complete (rename). A dropped connection
    is retried ``retries`` times; after that :class:`DataError` says how to resume.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    bar = tqdm(desc=dest.name, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress)
    try:
        for attempt in range(retries + 1):
            try:
                _attempt(url, part, timeout, bar)
                break
            except _Interrupted as exc:
                if attempt == retries:
                    have = part.stat().st_size if part.exists() else 0
                    raise DataError(
                        f"{url}: download interrupted after {have} bytes ({exc}); "
                        f"run the command again to resume {part}"
                    ) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                if attempt == retries:
                    reason = getattr(exc, "reason", exc)
                    raise DataError(f"{url}: cannot download ({reason})") from None
    finally:
        bar.close()
    os.replace(part, dest)
    return dest


def _checked_member(member: tarfile.TarInfo, into: Path) -> tarfile.TarInfo:
    """tarfile's "data" filter for Pythons without it (before 3.11.4): strip leading slashes;
    refuse names or links that leave ``into`` (absolute link targets included), devices and
    FIFOs; drop setuid/setgid/sticky bits and write permission for group and others; the owner
    may read and write."""
    dest = into.resolve()
    name = member.name.lstrip("/" + os.sep)
    if os.path.isabs(name):
        raise tarfile.ExtractError(f"{member.name!r} is an absolute path")
    target = (dest / name).resolve()
    if not target.is_relative_to(dest):
        raise tarfile.ExtractError(f"{name!r} would be extracted outside the destination")
    if member.isdev() or member.isfifo():
        raise tarfile.ExtractError(f"{name!r} is a special file")
    if member.issym() or member.islnk():
        link = member.linkname
        base = target.parent if member.issym() else dest
        if os.path.isabs(link) or not (base / link).resolve().is_relative_to(dest):
            raise tarfile.ExtractError(f"{name!r} links outside the destination")
    checked = copy.copy(member)
    checked.name = name
    checked.mode = (member.mode & 0o755) | (0o700 if member.isdir() else 0o600)
    return checked


def _safe_extract(archive: Path, into: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, filter="data")
            else:
                members = [_checked_member(m, into) for m in tar.getmembers()]
                tar.extractall(into, members=members)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive}: cannot extract ({exc}); expected a tar archive") from None


def _find_tops(folder: Path) -> list[Path]:
    """Locate train/ and test/ in an extracted archive, at its top or one folder below."""
    tops = [folder / name for name in ARCHIVE_SPLITS if (folder / name).is_dir()]
    if tops:
        return tops
    subdirs = [p for p in folder.iterdir() if p.is_dir()]
    if len(subdirs) == 1:
        return [subdirs[0] / name for name in ARCHIVE_SPLITS if (subdirs[0] / name).is_dir()]
    return []


def _same_file_content(a: Path, b: Path) -> bool:
    if a.is_symlink() or b.is_symlink() or not (a.is_file() and b.is_file()):
        return False
    return filecmp.cmp(a, b, shallow=False)


def _plan_merge(src: Path, dst: Path, moves: list[tuple[Path, Path]]) -> None:
    """Collect the moves that put ``src`` onto ``dst`` without touching anything existing.

    Folders are merged; a file identical to the archive member is kept as it is; any other
    existing path (a file where the archive has a folder or the reverse, a file with other
    content, a symbolic link) is a conflict: DataError naming it, and nothing has moved yet.
    """
    if not os.path.lexists(dst):
        moves.append((src, dst))
        return
    if dst.is_symlink():
        raise DataError(
            f"{dst}: exists as a symbolic link where the archive has "
            f"{'a folder' if src.is_dir() else 'a file'}; nothing was changed (hazardseg does "
            "not write through links: move it away or extract into an empty folder)"
        )
    if src.is_dir() and not src.is_symlink() and dst.is_dir():
        for child in sorted(src.iterdir()):
            _plan_merge(child, dst / child.name, moves)
        return
    if _same_file_content(src, dst):
        return
    if dst.is_dir():
        what = "is a folder where the archive has a file"
    elif src.is_dir():
        what = "is a file where the archive has a folder"
    else:
        what = "already exists with other content than the archive's file"
    raise DataError(
        f"{dst}: {what}; nothing was changed (move it away or extract into an empty folder)"
    )


def extract_archive(archive: str | Path, root: str | Path) -> list[str]:
    """Extract a StreetHazards archive into ``root`` (yielding ROOT/train and/or ROOT/test).

    Uses tarfile's safe "data" filter (no member lands outside ``root``); an extra top-level
    folder in the archive is removed. Existing files are never deleted or replaced: a file that
    conflicts with an archive member (other content, a file where the archive has a folder, or
    the reverse) raises DataError naming it before anything is moved. Returns the names of the
    top-level folders placed ("train", "test").
    """
    archive, root = Path(archive), Path(root)
    if not archive.is_file():
        raise DataError(f"{archive}: archive not found; expected a StreetHazards .tar file")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".hazardseg-extract-", dir=root))
    try:
        _safe_extract(archive, tmp)
        tops = _find_tops(tmp)
        if not tops:
            raise DataError(
                f"{archive}: no train/ or test/ folder inside; expected a StreetHazards archive"
            )
        moves: list[tuple[Path, Path]] = []
        for top in tops:
            _plan_merge(top, root / top.name, moves)
        for src, dst in moves:
            os.replace(src, dst)
        return [top.name for top in tops]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_dataset(
    root: str | Path,
    *,
    archives: Sequence[str | Path] | None = None,
    urls: dict[str, str] | None = None,
    parts: Iterable[str] = ("train", "test"),
    keep_archives: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    workers: int = 1,
) -> CheckReport:
    """Fetch (or take from ``archives``), extract and check StreetHazards under ``root``.

    Without ``archives``, downloads the official archive of each of ``parts`` (URLs from
    ``urls`` or :data:`DEFAULT_URLS`) to ``ROOT/<name>.tar``. Returns the check report of the
    splits that were extracted.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: not a folder; expected a dataset root folder")
    urls = {**DEFAULT_URLS, **(urls or {})}
    downloaded: list[Path] = []
    if archives:
        files = [Path(a) for a in archives]
        for f in files:
            if not f.is_file():
                raise DataError(f"{f}: archive not found; expected a StreetHazards .tar file")
    else:
        files = []
        for name in parts:
            if name not in urls:
                raise DataError(f"unknown archive {name!r}; expected one of train, test")
            url = urls[name]
            base = Path(urllib.parse.urlsplit(url).path).name
            if base in ("", ".", "..") or base.startswith("."):
                base = f"streethazards_{name}.tar"
            dest = root / base
            existed = dest.is_file()
            files.append(
                download_file(url, dest, retries=retries, timeout=timeout, progress=progress)
            )
            if not existed:  # only files this call created are ever removed
                downloaded.append(dest)
    placed: list[str] = []
    for f in files:
        try:
            placed.extend(extract_archive(f, root))
        except DataError as exc:
            if f in downloaded:
                # a download cut short without a length header looks complete; remove it so
                # the next run fetches it again instead of failing on the same file forever
                f.unlink(missing_ok=True)
                raise DataError(f"{exc} (removed the downloaded file; run again)") from None
            raise
    if not keep_archives:
        for f in downloaded:
            f.unlink(missing_ok=True)
    splits = [s for top in dict.fromkeys(placed) for s in ARCHIVE_SPLITS[top]]
    return check_dataset(root, splits, workers=workers, progress=progress)
