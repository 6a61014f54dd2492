"""Tests for asr_s2s.download against a local HTTP server that supports Range requests."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from asr_s2s.download import (
    DownloadError,
    ExtractError,
    download,
    extract,
    fetch,
    file_hash,
    is_extracted,
    read_checksums,
    verify_files,
)
from asr_s2s.errors import AsrError

PAYLOAD = bytes(range(256)) * 1000  # 256 kB, several read chunks' worth of distinct bytes
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


@dataclass
class Server:
    """The test server's content, switches and request log."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    honour_range: bool = True
    truncate_at: int | None = None  # send only this many bytes of the body, then hang up


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            range_header = self.headers.get("Range")
            server.requests.append((self.path, range_header))
            body = server.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            if range_header and server.honour_range:
                start = int(range_header.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            part = body[start:]
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            if server.truncate_at is not None:
                part = part[: server.truncate_at]
                server.truncate_at = None
                self.close_connection = True
            self.wfile.write(part)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    # Talk to the local server directly even if the environment sets a proxy.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    state = Server(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    state.files["/data/archive.bin"] = PAYLOAD
    # A short poll interval keeps shutdown() (and so each test's teardown) quick.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_full_download_is_verified_and_stamped(server: Server, tmp_path: Path) -> None:
    path = download(f"{server.url}/data/archive.bin", tmp_path, sha256=SHA256)
    assert path == tmp_path / "archive.bin"
    assert path.read_bytes() == PAYLOAD
    assert (tmp_path / "archive.bin.verified").read_text().strip() == f"sha256:{SHA256}"
    assert not (tmp_path / "archive.bin.part").exists()
    assert server.requests == [("/data/archive.bin", None)]


def test_md5_and_custom_filename(server: Server, tmp_path: Path) -> None:
    path = download(f"{server.url}/data/archive.bin", tmp_path / "sub", md5=MD5.upper(), filename="x.tar.gz")
    assert path == tmp_path / "sub" / "x.tar.gz"
    assert file_hash(path, "md5") == MD5


def test_resumes_partial_download_with_range(server: Server, tmp_path: Path) -> None:
    (tmp_path / "archive.bin.part").write_bytes(PAYLOAD[:100_000])
    path = download(f"{server.url}/data/archive.bin", tmp_path, sha256=SHA256)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/data/archive.bin", "bytes=100000-")]


def test_complete_part_file_is_accepted_on_416(server: Server, tmp_path: Path) -> None:
    (tmp_path / "archive.bin.part").write_bytes(PAYLOAD)
    path = download(f"{server.url}/data/archive.bin", tmp_path, sha256=SHA256)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/data/archive.bin", f"bytes={len(PAYLOAD)}-")]


def test_restarts_when_server_ignores_range(server: Server, tmp_path: Path) -> None:
    server.honour_range = False
    (tmp_path / "archive.bin.part").write_bytes(b"stale bytes that must not be kept")
    path = download(f"{server.url}/data/archive.bin", tmp_path, sha256=SHA256)
    assert path.read_bytes() == PAYLOAD


def test_interrupted_transfer_keeps_part_and_resumes(server: Server, tmp_path: Path) -> None:
    server.truncate_at = 50_000
    with pytest.raises(DownloadError, match="run again to resume"):
        download(f"{server.url}/data/archive.bin", tmp_path, sha256=SHA256)
    assert (tmp_path / "archive.bin.part").stat().st_size == 50_000
    assert not (tmp_path / "archive.bin").exists()
    path = download(f"{server.url}/data/archive.bin", tmp_path, sha256=SHA256)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/data/archive.bin", "bytes=50000-")


def test_fetch_without_checksum_resumes_an_interrupted_transfer(server: Server, tmp_path: Path) -> None:
    server.truncate_at = 70_000
    with pytest.raises(DownloadError, match="run again to resume"):
        fetch(f"{server.url}/data/archive.bin", tmp_path, "a.tar.gz")
    assert (tmp_path / "a.tar.gz.part").stat().st_size == 70_000
    path = fetch(f"{server.url}/data/archive.bin", tmp_path, "a.tar.gz")
    assert path == tmp_path / "a.tar.gz" and path.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/data/archive.bin", "bytes=70000-")
    assert not (tmp_path / "a.tar.gz.part").exists()
    # A file already there is taken as it is (its content is the caller's to verify).
    assert fetch(f"{server.url}/missing", tmp_path, "a.tar.gz") == path and len(server.requests) == 2


def test_read_checksums_and_verify_files(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"alpha")
    (tmp_path / "b.wav").write_bytes(b"beta")
    listing = tmp_path / "SUMS"
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in (("a.wav", b"alpha"), ("b.wav", b"beta"))}
    # sha256sum's text and binary markers, as `sha256sum` writes them.
    listing.write_text(f"{sha['a.wav'].upper()}  a.wav\n\n{sha['b.wav']} *b.wav\n")
    assert read_checksums(listing) == sha
    verify_files(tmp_path, sha)
    (tmp_path / "b.wav").write_bytes(b"betA")
    with pytest.raises(DownloadError, match=r"b\.wav: sha256 mismatch"):
        verify_files(tmp_path, sha)
    with pytest.raises(DownloadError, match=r"c\.wav: missing"):
        verify_files(tmp_path, {"a.wav": sha["a.wav"], "c.wav": "0" * 64})


@pytest.mark.parametrize(
    ("text", "message"),
    [("abc  a.wav\n", ":1: expected"), (f"{'0' * 64}  a\n{'1' * 64}  a\n", ":2: a is listed twice"),
     (f"{'0' * 64}\n", ":1: expected"), ("", "empty checksum list")],
)
def test_bad_checksum_lists_are_errors_naming_the_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "SUMS").write_text(text)
    with pytest.raises(AsrError, match=re.escape(message)):
        read_checksums(tmp_path / "SUMS")
    with pytest.raises(AsrError, match="cannot read checksum list"):
        read_checksums(tmp_path / "nowhere")


def test_checksum_mismatch_deletes_file(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="sha256 mismatch") as info:
        download(f"{server.url}/data/archive.bin", tmp_path, sha256="0" * 64)
    assert isinstance(info.value, AsrError)
    assert not (tmp_path / "archive.bin").exists()
    assert not (tmp_path / "archive.bin.part").exists()
    assert not (tmp_path / "archive.bin.verified").exists()


def test_verified_archive_is_not_requested_or_hashed_again(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{server.url}/data/archive.bin"
    download(url, tmp_path, sha256=SHA256)

    def no_hashing(*args: object) -> str:
        raise AssertionError("a verified file was hashed again")

    monkeypatch.setattr("asr_s2s.download.file_hash", no_hashing)
    assert download(url, tmp_path, sha256=SHA256).read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_present_unstamped_file_is_hashed_not_downloaded(server: Server, tmp_path: Path) -> None:
    (tmp_path / "archive.bin").write_bytes(PAYLOAD)
    download(f"{server.url}/data/archive.bin", tmp_path, md5=MD5)
    assert server.requests == []
    assert (tmp_path / "archive.bin.verified").read_text().strip() == f"md5:{MD5}"


def test_http_error_is_reported(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{server.url}/missing.tar.gz", tmp_path, sha256=SHA256)
    assert not (tmp_path / "missing.tar.gz").exists()


def test_unreachable_server_is_reported(tmp_path: Path) -> None:
    # Port 9 (discard) on localhost is closed on any sane test machine.
    with pytest.raises(DownloadError):
        download("http://127.0.0.1:9/x.tar.gz", tmp_path, sha256=SHA256, timeout=5)


def test_exactly_one_checksum_is_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        download("http://127.0.0.1:9/x", tmp_path)
    with pytest.raises(ValueError):
        download("http://127.0.0.1:9/x", tmp_path, md5=MD5, sha256=SHA256)


def _make_tar(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def _make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".zip"])
def test_extract_and_skip_when_stamped(tmp_path: Path, suffix: str) -> None:
    members = {"top/a.txt": b"alpha", "top/sub/b.txt": b"beta"}
    make = _make_zip if suffix == ".zip" else _make_tar
    archive = make(tmp_path / f"arch{suffix}", members)
    dest = tmp_path / "out"
    assert not is_extracted(archive, dest)
    assert extract(archive, dest) == dest
    assert is_extracted(archive, dest)
    assert (dest / "top/a.txt").read_bytes() == b"alpha"
    assert (dest / "top/sub/b.txt").read_bytes() == b"beta"
    (dest / "top/a.txt").unlink()
    extract(archive, dest)
    assert not (dest / "top/a.txt").exists(), "an already extracted archive was extracted again"


@pytest.mark.parametrize("name", ["../evil.txt", "top/../../evil.txt", "/tmp/evil-asr-s2s-test.txt"])
@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_extract_refuses_paths_escaping_dest(tmp_path: Path, name: str, kind: str) -> None:
    members = {"ok.txt": b"fine", name: b"evil"}
    make, suffix = (_make_tar, ".tar.gz") if kind == "tar" else (_make_zip, ".zip")
    archive = make(tmp_path / f"bad{suffix}", members)
    dest = tmp_path / "a" / "out"
    with pytest.raises(ExtractError, match="would be extracted outside"):
        extract(archive, dest)
    assert not (tmp_path / "a" / "evil.txt").exists()
    assert not Path("/tmp/evil-asr-s2s-test.txt").exists()
    assert not is_extracted(archive, dest)


def test_extract_refuses_symlink_out_of_dest(tmp_path: Path) -> None:
    archive = _make_tar(tmp_path / "link.tar.gz", {"ok.txt": b"fine"}, {"top/link": "../../outside"})
    with pytest.raises(ExtractError, match="points outside"):
        extract(archive, tmp_path / "out")


def test_extract_errors(tmp_path: Path) -> None:
    with pytest.raises(ExtractError, match="no such archive"):
        extract(tmp_path / "missing.tar.gz", tmp_path / "out")
    (tmp_path / "data.rar").write_bytes(b"x")
    with pytest.raises(ExtractError, match="unsupported"):
        extract(tmp_path / "data.rar", tmp_path / "out")
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar file at all")
    with pytest.raises(ExtractError, match="corrupt"):
        extract(tmp_path / "broken.tar.gz", tmp_path / "out")
