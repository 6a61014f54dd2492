"""Resumable, checksum-verified downloads and safe archive extraction (stdlib ``urllib`` only).

``download`` keeps a partial transfer in ``<file>.part`` and resumes it with an HTTP Range request;
a finished file is verified once and then marked by ``<file>.verified`` (holding the checksum), so
later calls return at once without hashing gigabytes again. ``fetch`` is the same resumable
transfer without the archive's checksum, for archives that are not byte-stable (GitHub's generated
ones) and whose extracted files are checked instead: ``read_checksums`` reads a ``sha256sum`` list,
``verify_files`` checks every listed file. ``extract`` refuses members that would land outside the
destination and marks a finished extraction with a stamp file.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from asr_s2s.errors import AsrError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
# Raised by tarfile's "data" filter (absent from Python versions that lack the filter).
_TAR_FILTER_ERRORS = getattr(tarfile, "FilterError", ())


class DownloadError(AsrError):
    """A download failed, or its content does not match the expected checksum."""


class ExtractError(AsrError):
    """An archive cannot be extracted (unsupported, corrupt or unsafe)."""


def download(
    url: str,
    dest_dir: str | Path,
    md5: str | None = None,
    sha256: str | None = None,
    filename: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` into ``dest_dir`` and verify it; returns the file's path.

    Exactly one of ``md5`` / ``sha256`` is required: an unverified download is never accepted.
    ``filename`` defaults to the last component of the URL's path.
    """
    if md5 is not None and sha256 is None:
        algorithm, expected = "md5", md5.strip().lower()
    elif sha256 is not None and md5 is None:
        algorithm, expected = "sha256", sha256.strip().lower()
    else:
        raise ValueError("download() needs exactly one of md5= or sha256=")
    name = filename or PurePosixPath(urllib.parse.urlsplit(url).path).name
    if not name:
        raise ValueError(f"cannot derive a file name from {url!r}; pass filename=")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / name
    stamp = target.with_name(target.name + ".verified")
    part = target.with_name(target.name + ".part")

    if target.is_file():
        if _stamp_matches(stamp, algorithm, expected):
            log.info("%s already downloaded and verified", target)
            return target
        # Present but never verified (e.g. copied in by hand): hash it once instead of re-downloading.
        _verify(target, algorithm, expected, stamp, url)
        return target

    stamp.unlink(missing_ok=True)
    _fetch(url, part, timeout)
    os.replace(part, target)
    _verify(target, algorithm, expected, stamp, url)
    return target


def fetch(url: str, dest_dir: str | Path, filename: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest_dir/filename`` without checking the file itself; returns its path.

    For archives whose bytes are not stable (GitHub's generated ``.tar.gz``): the caller must verify
    what it extracts (:func:`verify_files`). An interrupted transfer stays in ``<filename>.part`` and
    the next call resumes it with a Range request; an existing ``filename`` is returned as it is.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / filename
    if not target.is_file():
        part = target.with_name(target.name + ".part")
        _fetch(url, part, timeout)
        os.replace(part, target)
    return target


def read_checksums(path: str | Path) -> dict[str, str]:
    """A ``sha256sum``-style list (``HEX  NAME`` or ``HEX *NAME`` per line) as name -> lowercase hex.

    Raises :class:`AsrError` naming the file and line of a malformed line or a repeated name.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise AsrError(f"{path}: cannot read checksum list ({err.strerror or err})") from None
    sums: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition(" ")
        name = name.removeprefix(" ").removeprefix("*")
        if not sep or not name or len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise AsrError(f"{path}:{number}: expected 'SHA256  NAME', got {line!r}")
        if name in sums:
            raise AsrError(f"{path}:{number}: {name} is listed twice")
        sums[name] = digest.lower()
    if not sums:
        raise AsrError(f"{path}: empty checksum list")
    return sums


def verify_files(root: str | Path, checksums: dict[str, str], algorithm: str = "sha256") -> None:
    """Check that every file of ``checksums`` (names relative to ``root``) exists and matches.

    Files are checked in name order; the first missing or mismatching one raises
    :class:`DownloadError` naming it.
    """
    root = Path(root)
    for name in sorted(checksums):
        path = root / name
        if not path.is_file():
            raise DownloadError(f"{path}: missing (listed in the checksum list)")
        actual = file_hash(path, algorithm)
        if actual != checksums[name]:
            raise DownloadError(f"{path}: {algorithm} mismatch (expected {checksums[name]}, got {actual})")


def _stamp_matches(stamp: Path, algorithm: str, expected: str) -> bool:
    try:
        return stamp.read_text(encoding="utf-8").strip() == f"{algorithm}:{expected}"
    except OSError:
        return False


def _verify(target: Path, algorithm: str, expected: str, stamp: Path, url: str) -> None:
    actual = file_hash(target, algorithm)
    if actual != expected:
        target.unlink(missing_ok=True)
        stamp.unlink(missing_ok=True)
        raise DownloadError(
            f"{target}: {algorithm} mismatch for {url} (expected {expected}, got {actual}); "
            "the file was deleted, run again to re-download"
        )
    stamp.write_text(f"{algorithm}:{expected}\n", encoding="utf-8")
    log.info("verified %s (%s %s)", target, algorithm, expected)


def file_hash(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Download ``url`` into ``part``, resuming from its current size when the server allows it."""
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "asr-s2s-download"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # The range starts at or past the end: the .part is complete (or longer than the file,
            # which the checksum will catch).
            log.info("%s: partial file already complete", part)
            return
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise DownloadError(f"{url}: {getattr(err, 'reason', err)}") from None

    with response:
        if offset and response.status != 206:
            # The server ignored the Range header and sends the whole file: start over.
            log.info("%s: server does not support resuming; restarting", url)
            offset = 0
        elif offset:
            log.info("resuming %s at byte %d", url, offset)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.isdigit() else None
        mode = "ab" if offset else "wb"
        try:
            with (
                open(part, mode) as handle,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=part.name.removesuffix(".part"),
                    # A bar without a total is noise; None keeps it quiet when not on a terminal.
                    disable=None if total is not None else True,
                ) as bar,
            ):
                while chunk := response.read(_CHUNK):
                    handle.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as err:
            # Keep the .part: the next call resumes from where this one stopped.
            raise DownloadError(f"{url}: transfer interrupted ({err}); run again to resume") from None
    if total is not None and part.stat().st_size != total:
        raise DownloadError(
            f"{url}: transfer ended at {part.stat().st_size} of {total} bytes; run again to resume"
        )


def _extract_stamp(archive: Path, dest_dir: Path) -> Path:
    return dest_dir / f".{archive.name}.extracted"


def is_extracted(archive: str | Path, dest_dir: str | Path) -> bool:
    """Whether :func:`extract` already finished extracting ``archive`` into ``dest_dir``.

    Lets callers skip the download of an archive that was extracted and then deleted.
    """
    return _extract_stamp(Path(archive), Path(dest_dir)).is_file()


def forget_extracted(archive: str | Path, dest_dir: str | Path) -> None:
    """Remove :func:`extract`'s stamp, so that the next call extracts ``archive`` again."""
    _extract_stamp(Path(archive), Path(dest_dir)).unlink(missing_ok=True)


def extract(archive: str | Path, dest_dir: str | Path) -> Path:
    """Extract a ``.tar.gz``/``.tgz``/``.tar``/``.zip`` archive into ``dest_dir``; returns ``dest_dir``.

    A member that would escape ``dest_dir`` (absolute path, ``..``, link pointing outside) stops
    the extraction with :class:`ExtractError` before it is written. A stamp file
    ``dest_dir/.<archive name>.extracted``, written once all went well, makes later calls a no-op.
    """
    archive = Path(archive)
    dest_dir = Path(dest_dir)
    stamp = _extract_stamp(archive, dest_dir)
    if stamp.is_file():
        log.info("%s already extracted into %s", archive, dest_dir)
        return dest_dir
    if not archive.is_file():
        raise ExtractError(f"{archive}: no such archive")
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            _extract_zip(archive, dest_dir)
        elif name.endswith((".tar.gz", ".tgz", ".tar")):
            _extract_tar(archive, dest_dir)
        else:
            raise ExtractError(f"{archive}: unsupported archive type (expected .tar.gz, .tgz, .tar or .zip)")
    except _TAR_FILTER_ERRORS as err:
        raise ExtractError(f"{archive}: unsafe member ({err})") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        raise ExtractError(f"{archive}: corrupt archive ({err})") from None
    stamp.write_text(f"{archive.name}\n", encoding="utf-8")
    log.info("extracted %s into %s", archive, dest_dir)
    return dest_dir


def _safe_target(dest_dir: Path, member: str, archive: Path) -> Path:
    root = dest_dir.resolve()
    target = (root / member).resolve()
    if PurePosixPath(member).is_absolute() or not target.is_relative_to(root):
        raise ExtractError(f"{archive}: member {member!r} would be extracted outside {dest_dir}")
    return target


def _extract_tar(archive: Path, dest_dir: Path) -> None:
    with tarfile.open(archive) as tar:
        # Members are checked as extractall() reaches them: one pass over the (possibly huge)
        # compressed stream, where listing them first would decompress it twice.
        members = _checked_tar_members(tar, dest_dir, archive)
        if hasattr(tarfile, "data_filter"):
            # The "data" filter (Python >= 3.12, backported to 3.10/3.11 updates) checks again.
            tar.extractall(dest_dir, members=members, filter="data")
        else:
            tar.extractall(dest_dir, members=members)


def _checked_tar_members(tar: tarfile.TarFile, dest_dir: Path, archive: Path) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        target = _safe_target(dest_dir, member.name, archive)
        if member.issym():
            # A symlink's target is relative to the link's own folder.
            link = PurePosixPath(member.linkname)
            resolved = (target.parent / link).resolve()
            if link.is_absolute() or not resolved.is_relative_to(dest_dir.resolve()):
                raise ExtractError(
                    f"{archive}: link {member.name!r} -> {member.linkname!r} points outside {dest_dir}"
                )
        elif member.islnk():
            # A hard link's target is a path inside the archive.
            _safe_target(dest_dir, member.linkname, archive)
        elif not (member.isfile() or member.isdir()):
            raise ExtractError(f"{archive}: member {member.name!r} is not a file or folder")
        yield member


def _extract_zip(archive: Path, dest_dir: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _safe_target(dest_dir, info.filename, archive)
        for info in infos:
            target = _safe_target(dest_dir, info.filename, archive)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
