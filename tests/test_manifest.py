"""Tests for asr_s2s.manifest: NeMo-compatible JSONL reading, validation errors and atomic writing."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from asr_s2s.errors import AsrError, ManifestError
from asr_s2s.manifest import Utterance, iter_manifest, parse_line, read_manifest, write_manifest


def _write_lines(path: Path, lines: list[str | dict]) -> Path:
    text = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def _rec(name: str = "a.wav", duration: float = 1.5, text: str = "hello", **extra) -> dict:
    return {"audio_filepath": name, "duration": duration, "text": text, **extra}


def test_nemo_fields_and_relative_paths(tmp_path: Path) -> None:
    sub = tmp_path / "manifests"
    sub.mkdir()
    absolute = tmp_path / "abs" / "b.flac"
    path = _write_lines(
        sub / "m.jsonl",
        [
            _rec("audio/a.wav", 1.25, "Hello world"),
            _rec(str(absolute), 2, "x", offset=0.5, id="utt-b", speaker=42),
        ],
    )
    a, b = read_manifest(path)
    assert a.audio_filepath == sub.resolve() / "audio" / "a.wav"  # relative to the manifest folder
    assert a.duration == 1.25 and a.text == "Hello world" and a.offset == 0.0
    assert a.id == "a" and a.speaker is None
    assert b.audio_filepath == absolute and b.duration == 2.0 and isinstance(b.duration, float)
    assert (b.offset, b.id, b.speaker) == (0.5, "utt-b", "42")


def test_relative_paths_do_not_depend_on_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    path = _write_lines(tmp_path / "data" / "m.jsonl", [_rec("x/a.wav")])
    monkeypatch.chdir(tmp_path)
    (utt,) = read_manifest(Path("data/m.jsonl"))
    assert utt.audio_filepath == tmp_path.resolve() / "data" / "x" / "a.wav"
    assert utt.audio_filepath.is_absolute()
    assert path.exists()


def test_default_id_with_offset_is_unique_per_segment(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "m.jsonl",
        [_rec("long.wav", 1.0, "a", offset=0.0), _rec("long.wav", 1.0, "b", offset=1.0)],
    )
    ids = [u.id for u in read_manifest(path)]
    assert len(set(ids)) == 2 and ids[0] == "long"


def test_blank_lines_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(
        (json.dumps(_rec("a.wav")) + "\r\n\r\n   \n" + json.dumps(_rec("b.wav")) + "\r\n").encode()
    )
    assert [u.id for u in read_manifest(path)] == ["a", "b"]


def test_utf8_bom_at_start_is_accepted(tmp_path: Path) -> None:
    # Windows editors write a byte-order mark; NeMo's reader (utf-8 text mode) would choke, we should not.
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(_rec("a.wav", text="caf\u00e9")) + "\n").encode())
    (utt,) = read_manifest(path)
    assert utt.text == "caf\u00e9"


def test_iter_manifest_is_lazy(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "m.jsonl", [_rec("a.wav"), _rec("b.wav"), "{broken"])
    stream = iter_manifest(path)
    assert next(stream).id == "a"
    assert next(stream).id == "b"
    with pytest.raises(ManifestError) as info:
        next(stream)
    assert info.value.line == 3


def test_iter_manifest_reads_one_line_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asr_s2s.manifest as manifest

    path = _write_lines(tmp_path / "m.jsonl", [_rec(f"{i}.wav") for i in range(50)])
    parsed: list[int | None] = []
    real = manifest.parse_line

    def counting(*args, **kwargs):
        parsed.append(kwargs.get("lineno", args[3] if len(args) > 3 else None))
        return real(*args, **kwargs)

    monkeypatch.setattr(manifest, "parse_line", counting)
    stream = iter_manifest(path)
    next(stream)
    assert len(parsed) == 1


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "invalid JSON"),
        ('["a.wav", 1, "x"]', "expected a JSON object"),
        ('{"duration": 1, "text": "x"}', "missing field 'audio_filepath'"),
        ('{"audio_filepath": "a.wav", "text": "x"}', "missing field 'duration'"),
        ('{"audio_filepath": "a.wav", "duration": 1}', "missing field 'text'"),
        ('{"audio_filepath": "", "duration": 1, "text": "x"}', "audio_filepath"),
        ('{"audio_filepath": "   ", "duration": 1, "text": "x"}', "audio_filepath"),
        ('{"audio_filepath": 3, "duration": 1, "text": "x"}', "audio_filepath"),
        ('{"audio_filepath": "a.wav", "duration": 1, "text": null}', "'text'"),
        ('{"audio_filepath": "a.wav", "duration": -1, "text": "x"}', "'duration' must be positive"),
        ('{"audio_filepath": "a.wav", "duration": 0, "text": "x"}', "'duration' must be positive"),
        ('{"audio_filepath": "a.wav", "duration": "1.5", "text": "x"}', "'duration' must be a number"),
        ('{"audio_filepath": "a.wav", "duration": true, "text": "x"}', "'duration' must be a number"),
        ('{"audio_filepath": "a.wav", "duration": NaN, "text": "x"}', "'duration' must be finite"),
        ('{"audio_filepath": "a.wav", "duration": Infinity, "text": "x"}', "'duration' must be finite"),
        ('{"audio_filepath": "a.wav", "duration": 1, "text": "x", "offset": -2}', "'offset'"),
        ('{"audio_filepath": "a.wav", "duration": 1, "text": "x", "offset": "0"}', "'offset'"),
        ('{"audio_filepath": "a.wav", "duration": 1, "text": "x", "id": ""}', "'id'"),
        ('{"audio_filepath": "a.wav", "duration": 1, "text": "x", "id": [1]}', "'id'"),
    ],
)
def test_invalid_line_error_names_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    path = _write_lines(tmp_path / "m.jsonl", [_rec("ok.wav"), line])
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    err = info.value
    assert str(err).startswith(f"{path}:2: ")
    assert reason in str(err)
    assert (err.path, err.line) == (str(path), 2)
    assert "\n" not in str(err)
    assert isinstance(err, AsrError)


def test_non_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes((json.dumps(_rec("a.wav")) + "\n").encode() + b'{"text": "\xff\xfe"}\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: not valid UTF-8"):
        read_manifest(path)


def test_duplicate_ids(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "m.jsonl", [_rec("a/x.wav"), _rec("b/y.wav"), _rec("c/x.wav")])
    with pytest.raises(ManifestError, match=r"m\.jsonl:3: duplicate id 'x'"):
        read_manifest(path)
    path = _write_lines(tmp_path / "n.jsonl", [_rec("a.wav", id="u1"), _rec("b.wav", id="u1")])
    with pytest.raises(ManifestError, match=r"n\.jsonl:2: duplicate id 'u1'"):
        read_manifest(path)


def test_empty_manifest(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    assert list(iter_manifest(path)) == []
    with pytest.raises(ManifestError, match="no utterances") as info:
        read_manifest(path)
    assert info.value.path == str(path)


def test_missing_manifest_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such manifest"):
        read_manifest(tmp_path / "missing.jsonl")
    with pytest.raises(ManifestError, match="not a file"):
        read_manifest(tmp_path)


def test_on_error_skips_bad_lines(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "m.jsonl",
        [_rec("a.wav"), "{bad", _rec("b.wav", duration=-1), _rec("c.wav"), _rec("a.wav")],
    )
    errors: list[ManifestError] = []
    utts = read_manifest(path, on_error=errors.append)
    assert [u.id for u in utts] == ["a", "c"]
    assert [e.line for e in errors] == [2, 3, 5]
    assert all(isinstance(e, ManifestError) for e in errors)


def test_all_lines_bad_with_on_error_is_empty_error(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "m.jsonl", ["{bad", "[]"])
    errors: list[ManifestError] = []
    with pytest.raises(ManifestError, match="no utterances"):
        read_manifest(path, on_error=errors.append)
    assert len(errors) == 2


def test_parse_line_standalone() -> None:
    utt = parse_line(json.dumps(_rec("a.wav", id=7)), Path("/data"))
    assert utt.id == "7" and utt.audio_filepath == Path("/data/a.wav")
    with pytest.raises(ManifestError, match="<manifest>: invalid JSON"):
        parse_line("nope", Path("/data"))


def _utts(base: Path) -> list[Utterance]:
    return [
        Utterance("u1", base / "audio" / "a.wav", 1.25, "hello world"),
        Utterance("u2", base / "b.flac", 3.0, "caf\u00e9 \u201cquoted\u201d", offset=1.5, speaker="spk"),
        Utterance("u3", Path("/elsewhere/c.wav"), 0.5, ""),
    ]


@pytest.mark.parametrize("relative", [False, True])
def test_write_read_round_trip(tmp_path: Path, relative: bool) -> None:
    base = tmp_path.resolve()
    utts = _utts(base)
    path = base / "out" / "m.jsonl"
    assert write_manifest(path, utts, relative=relative) == 3
    assert read_manifest(path) == utts
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert "offset" not in records[0] and records[1]["offset"] == 1.5
    assert "\u201c" in path.read_text(encoding="utf-8")  # not escaped
    if relative:
        # Under the manifest's folder -> relative; elsewhere -> absolute.
        path2 = base / "m2.jsonl"
        write_manifest(path2, utts, relative=True)
        records = [json.loads(line) for line in path2.read_text(encoding="utf-8").splitlines()]
        assert records[0]["audio_filepath"] == os.path.join("audio", "a.wav")
        assert records[2]["audio_filepath"] == "/elsewhere/c.wav"
        assert read_manifest(path2) == utts


def test_write_relative_audio_path_is_read_back_as_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An Utterance built with a cwd-relative path must still point at the same file after a
    # round trip through a manifest in another folder (readers resolve against the manifest folder).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.wav").write_bytes(b"")
    utt = Utterance("u1", Path("a.wav"), 1.0, "x")
    for relative in (False, True):
        path = tmp_path / "sub" / f"m{int(relative)}.jsonl"
        write_manifest(path, [utt], relative=relative)
        (back,) = read_manifest(path)
        assert back.audio_filepath.resolve() == (tmp_path / "a.wav").resolve()


def test_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    write_manifest(path, _utts(tmp_path)[:1])
    before = path.read_bytes()

    def failing() -> Iterator[Utterance]:
        yield _utts(tmp_path)[1]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_manifest(path, failing())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]  # no temp file left


def test_write_leaves_no_temp_files_and_normal_permissions(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "m.jsonl"
    write_manifest(path, _utts(tmp_path))
    assert [p.name for p in path.parent.iterdir()] == ["m.jsonl"]
    # A temporary file is created private (0600); the final manifest must follow the umask as a
    # plain open() would, so that other users of a shared data folder can read it.
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_write_empty_iterable(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    assert write_manifest(path, []) == 0
    assert path.read_text() == ""
