"""Tests for asr_s2s.writers: files and folders in, transcripts out in every format, failures."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import sine, write_audio

from asr_s2s.cli import main
from asr_s2s.errors import AsrError, AudioError
from asr_s2s.transcribe import Segment, Transcriber, Transcription, load_model
from asr_s2s.writers import format_srt, format_timestamp, format_vtt, transcribe_files

SRT_CUE = re.compile(r"^(\d+)\n(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)\n(.+)$")
VTT_CUE = re.compile(r"^(\d\d:\d\d:\d\d\.\d\d\d) --> (\d\d:\d\d:\d\d\.\d\d\d)\n(.+)$")


@pytest.fixture(scope="module")
def transcriber(tiny_model_path: Path) -> Transcriber:
    return load_model(tiny_model_path, device="cpu")


def stamp(text: str) -> float:
    h, m, s = text.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


# ---- many files, output formats --------------------------------------------------------------


EXPECTED = ["a", "sub/b", "sub/deeper/c"]


@pytest.mark.parametrize("fmt", ["txt", "json", "srt", "vtt"])
def test_folders_are_searched_and_every_format_parses(
    fmt: str, tmp_path: Path, audio_tree: Path, transcriber: Transcriber
) -> None:
    results = transcribe_files(transcriber, [audio_tree], fmt, tmp_path / "out", progress=False)
    assert [
        Path(r.audio_path).relative_to(audio_tree).with_suffix("").as_posix() for r in results
    ] == EXPECTED
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.*"))
    assert written == [f"{name}.{fmt}" for name in EXPECTED]
    for name, result in zip(EXPECTED, results):
        assert result.segments, "the random model spells something for every tone"
        text = (tmp_path / "out" / f"{name}.{fmt}").read_text(encoding="utf-8")
        if fmt == "txt":
            assert text == result.text + "\n"
        elif fmt == "json":
            data = json.loads(text)
            assert data["text"] == result.text and data["audio_path"] == result.audio_path
            assert data["segments"][0]["start"] == 0.0 and data["duration"] == pytest.approx(result.duration)
        elif fmt == "srt":
            cues = [SRT_CUE.match(block) for block in text.strip().split("\n\n")]
            assert all(cues) and [int(c[1]) for c in cues] == list(range(1, len(cues) + 1))
            assert stamp(cues[-1][3]) == pytest.approx(result.duration, abs=1e-3)
        else:
            header, *blocks = text.strip().split("\n\n")
            assert header == "WEBVTT"
            cues = [VTT_CUE.match(block) for block in blocks]
            assert all(cues) and stamp(cues[0][1]) == 0.0


def test_jsonl_collects_all_files(tmp_path: Path, audio_tree: Path, transcriber: Transcriber) -> None:
    results = transcribe_files(transcriber, [audio_tree], "jsonl", tmp_path, progress=False)
    lines = (tmp_path / "transcripts.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [r.to_dict() for r in results]


def test_stdout_output(
    capsys: pytest.CaptureFixture[str], audio_tree: Path, transcriber: Transcriber
) -> None:
    one = audio_tree / "a.wav"
    (result,) = transcribe_files(transcriber, [one], progress=False)
    assert capsys.readouterr().out == result.text + "\n"
    results = transcribe_files(transcriber, [audio_tree], progress=False)
    assert capsys.readouterr().out.splitlines() == [f"{r.audio_path}\t{r.text}" for r in results]
    transcribe_files(transcriber, [audio_tree], "jsonl", progress=False)
    assert [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()] == [
        r.text for r in results
    ]
    transcribe_files(transcriber, [one], "srt", progress=False)
    assert SRT_CUE.match(capsys.readouterr().out.strip())


def test_colliding_output_names_keep_the_audio_suffix(tmp_path: Path, transcriber: Transcriber) -> None:
    a = write_audio(tmp_path / "in" / "x.wav", sine(300, 0.5))
    b = write_audio(tmp_path / "in" / "x.flac", sine(400, 0.5))
    transcribe_files(transcriber, [a, b, a], "txt", tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.flac.txt", "x.wav.txt"]
    other = write_audio(tmp_path / "other" / "x.wav", sine(500, 0.5))
    with pytest.raises(AsrError, match="would both be written to x.wav.txt"):
        transcribe_files(transcriber, [a, b, other], "txt", tmp_path / "out", progress=False)


def test_timestamps_and_subtitle_text() -> None:
    assert format_timestamp(0.0) == "00:00:00,000"
    assert format_timestamp(1.5) == "00:00:01,500"
    assert format_timestamp(3661.2345, ".") == "01:01:01.234"
    assert format_timestamp(59.9996) == "00:01:00,000"
    result = Transcription("one two", [Segment(0.0, 1.25, "one"), Segment(2.0, 3.5, "two")], "x.wav", 4.0)
    assert (
        format_srt(result)
        == "1\n00:00:00,000 --> 00:00:01,250\none\n\n2\n00:00:02,000 --> 00:00:03,500\ntwo\n"
    )
    assert (
        format_vtt(result)
        == "WEBVTT\n\n00:00:00.000 --> 00:00:01.250\none\n\n00:00:02.000 --> 00:00:03.500\ntwo\n"
    )


# ---- failures --------------------------------------------------------------------------------


def test_bad_file_among_many_is_reported_and_the_rest_go_on(
    tmp_path: Path, transcriber: Transcriber, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    write_audio(folder / "good.wav", sine(300, 0.6))
    (folder / "bad.wav").write_bytes(b"RIFF not really a wave file")
    (folder / "empty.wav").write_bytes(b"")
    with caplog.at_level(logging.ERROR), pytest.raises(AsrError, match="2 of 3 files failed"):
        transcribe_files(transcriber, [folder], "txt", tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "good.txt").is_file()
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "bad.wav" in logged and "empty.wav" in logged and "empty file" in logged


def test_single_bad_file_raises_its_audio_error(tmp_path: Path, transcriber: Transcriber) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(AudioError) as err:
        transcribe_files(transcriber, [bad], progress=False)
    assert err.value.path == str(bad)
    with pytest.raises(AudioError, match="no such file"):
        transcriber.transcribe(tmp_path / "missing.wav")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(AsrError, match="no audio files"):
        transcribe_files(transcriber, [tmp_path / "nothing"], progress=False)


def test_cli_transcribe(
    tmp_path: Path, tiny_model_path: Path, audio_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = audio_tree / "a.wav"
    assert main(["--quiet", "transcribe", "--model", str(tiny_model_path), str(wav), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip()
    out = tmp_path / "out"
    args = [
        "transcribe",
        "--model",
        str(tiny_model_path),
        "--format",
        "vtt",
        "--output-dir",
        str(out),
        "--quiet",
    ]
    assert main([*args, "--beam-size", "2", str(audio_tree)]) == 0
    assert len(list(out.rglob("*.vtt"))) == 3
    (tmp_path / "bad.wav").write_bytes(b"junk")
    assert main([*args, str(audio_tree), str(tmp_path / "bad.wav")]) == 1
    assert "1 of 4 files failed" in capsys.readouterr().err
    assert main(["transcribe", "--model", str(tiny_model_path), str(wav), "--beam-size", "0", "--quiet"]) == 1


def test_cli_transcribe_max_chunk_seconds(
    tmp_path: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wave = np.concatenate([sine(300, 1.5), np.zeros(16000, dtype=np.float32), sine(500, 1.5)])
    path = write_audio(tmp_path / "two.wav", wave)
    args = ["--quiet", "transcribe", "--model", str(tiny_model_path), str(path), "--format", "json"]
    spans = []
    for extra in ([], ["--max-chunk-seconds", "2"]):
        assert main([*args, *extra]) == 0
        spans.append([(s["start"], s["end"]) for s in json.loads(capsys.readouterr().out)["segments"]])
    assert spans[0] == [(0.0, 4.0)]  # 4 s is within the default decode.max_chunk_seconds (20)
    assert len(spans[1]) == 2 and all(e - s <= 2.0 for s, e in spans[1])
    assert main([*args, "--max-chunk-seconds", "0.5"]) == 1
    assert "max_chunk_seconds must be at least 1.0" in capsys.readouterr().err
