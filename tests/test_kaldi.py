"""Kaldi data directory import: generated WAV and FLAC directories, segments, each bad-input case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import sine, write_audio

from asr_s2s import kaldi
from asr_s2s.audio import load_audio
from asr_s2s.cli import main
from asr_s2s.errors import ManifestError
from asr_s2s.manifest import read_manifest


def write_table(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def make_dir(root: Path, suffix: str, seconds: list[float], sr: int = 16000) -> Path:
    """A corpus under ``root``: audio in audio/, the data directory in data/ (paths relative to root)."""
    wav_lines, text_lines, spk_lines = [], [], []
    for i, sec in enumerate(seconds):
        rel = f"audio/spk{i % 2}/rec{i}{suffix}"
        write_audio(root / rel, sine(200 + 50 * i, sec, sr), sr)
        wav_lines.append(f"rec{i}\t{rel}")
        text_lines.append(f"rec{i} HELLO WORLD {i}")
        spk_lines.append(f"rec{i} spk{i % 2}")
    write_table(root / "data/wav.scp", wav_lines)
    write_table(root / "data/text", text_lines)
    write_table(root / "data/utt2spk", spk_lines)
    return root / "data"


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_import_durations_speakers_and_paths(tmp_path: Path, suffix: str) -> None:
    data = make_dir(tmp_path, suffix, [0.3, 0.55, 0.41], sr=8000)
    out = tmp_path / "manifests/all.jsonl"
    result = kaldi.import_kaldi(data, out, audio_root=tmp_path)
    assert not result.problems and sum(result.counts.values()) == 0
    utts = read_manifest(out)
    assert [u.id for u in utts] == ["rec0", "rec1", "rec2"]
    for i, utt in enumerate(utts):
        info = sf.info(str(tmp_path / f"audio/spk{i % 2}/rec{i}{suffix}"))
        assert utt.duration == pytest.approx(info.frames / info.samplerate, abs=1e-4)
        assert utt.audio_filepath.resolve() == (tmp_path / f"audio/spk{i % 2}/rec{i}{suffix}").resolve()
        assert utt.speaker == f"spk{i % 2}" and utt.text == f"HELLO WORLD {i}" and utt.offset == 0


def test_relative_paths_default_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_dir(tmp_path, ".wav", [0.2])
    monkeypatch.chdir(tmp_path / "audio")  # wrong folder: the paths start with audio/
    result = kaldi.read_kaldi_dir(data)
    assert result.counts[kaldi.MISSING_AUDIO] == 1 and not result.utterances
    assert f"{data / 'wav.scp'}:1:" in result.problems[0]
    monkeypatch.chdir(tmp_path)
    assert len(kaldi.read_kaldi_dir(data).utterances) == 1


def test_segments_become_offset_and_duration(tmp_path: Path) -> None:
    sr = 16000
    wave = np.concatenate([sine(300, 1.0, sr), sine(700, 1.0, sr)])
    write_audio(tmp_path / "long.flac", wave, sr)
    data = tmp_path / "data"
    write_table(data / "wav.scp", [f"rec {tmp_path / 'long.flac'}"])
    write_table(data / "segments", ["u1 rec 0.0 0.75", "u2 rec 0.75 1.5", "u3 rec 1.5 -1"])
    write_table(data / "text", ["u1 A", "u2 B", "u3 C"])
    result = kaldi.read_kaldi_dir(data)
    assert not result.problems
    got = {u.id: (u.offset, u.duration) for u in result.utterances}
    assert got == {"u1": (0.0, 0.75), "u2": (0.75, 0.75), "u3": (1.5, pytest.approx(0.5))}
    out = tmp_path / "m.jsonl"
    kaldi.import_kaldi(data, out)
    for utt in read_manifest(out):
        loaded, _ = load_audio(utt.audio_filepath, sr, utt.offset, utt.duration)
        start = int(round(utt.offset * sr))
        expected = wave[start : start + int(round(utt.duration * sr))]
        assert len(loaded) == len(expected)
        np.testing.assert_allclose(loaded.numpy(), expected, atol=1e-4)


def test_each_bad_input_is_counted_and_named(tmp_path: Path) -> None:
    write_audio(tmp_path / "ok.wav", sine(300, 0.4), 16000)
    write_audio(tmp_path / "ok2.flac", sine(400, 0.4), 16000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wave file")
    data = tmp_path / "data"
    write_table(
        data / "wav.scp",
        [
            "good ok.wav",
            "good2 ok2.flac",
            "cmd sox in.sph -t wav - |",
            "lonely",  # no value
            "good ok.wav",  # duplicate
            "gone missing.wav",
            "bad broken.wav",
            "untexted ok.wav",
        ],
    )
    write_table(data / "text", ["good HI", "good2 THERE", "cmd X", "gone Y", "bad Z", "orphan W"])
    result = kaldi.read_kaldi_dir(data, audio_root=tmp_path)
    assert [u.id for u in result.utterances] == ["good", "good2"]
    counts = result.counts
    assert counts[kaldi.COMMAND] == 1
    assert counts[kaldi.BAD_LINE] == 2
    assert counts[kaldi.MISSING_AUDIO] == 1
    assert counts[kaldi.UNREADABLE_AUDIO] == 1
    assert counts[kaldi.NO_TEXT] == 1
    assert counts[kaldi.NO_AUDIO] == 1
    joined = "\n".join(result.problems)
    scp = data / "wav.scp"
    assert f"{scp}:3: the entry is a command" in joined
    assert f"{scp}:4: 'lonely' has no value" in joined
    assert f"{scp}:5: duplicate id 'good' (first on line 1)" in joined
    assert f"{scp}:6:" in joined and "missing.wav: no such audio file" in joined
    assert f"{scp}:7:" in joined and "cannot read the audio header" in joined
    assert f"{scp}:8: 'untexted' has no line in" in joined
    assert f"{data / 'text'}:6: 'orphan' is not in wav.scp" in joined
    assert "1 command in wav.scp" in result.summary() and "2 utterances" in result.summary()


def test_bad_segments(tmp_path: Path) -> None:
    write_audio(tmp_path / "a.wav", sine(300, 1.0), 16000)
    data = tmp_path / "data"
    write_table(data / "wav.scp", [f"rec {tmp_path / 'a.wav'}"])
    write_table(
        data / "segments",
        ["s1 rec 0 0.5", "s2 rec 0.5", "s3 rec x 1", "s4 rec 0.6 0.4", "s5 rec 0.2 3.0", "s6 nowhere 0 1"],
    )
    write_table(data / "text", [f"s{i} T" for i in range(1, 7)])
    result = kaldi.read_kaldi_dir(data)
    assert [u.id for u in result.utterances] == ["s1"]
    seg = data / "segments"
    joined = "\n".join(result.problems)
    assert f"{seg}:2: expected 'UTT RECORDING START END'" in joined
    assert f"{seg}:3: START and END must be numbers" in joined
    assert f"{seg}:4: END (0.4) must be after START (0.6)" in joined
    assert f"{seg}:5: segment ends at 3 s, after the recording's end (1.00 s)" in joined
    assert f"{seg}:6: recording 'nowhere' is not in" in joined
    assert result.counts[kaldi.BAD_LINE] == 4 and result.counts[kaldi.NO_AUDIO] == 1


def test_missing_files_and_empty_imports_raise_one_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such data directory"):
        kaldi.read_kaldi_dir(tmp_path / "nope")
    write_table(tmp_path / "d/wav.scp", ["a x.wav |"])
    with pytest.raises(ManifestError, match=r"d/text: missing"):
        kaldi.read_kaldi_dir(tmp_path / "d")
    write_table(tmp_path / "d/text", ["a HI"])
    with pytest.raises(ManifestError, match="no utterance could be imported .*1 command in wav.scp"):
        kaldi.import_kaldi(tmp_path / "d", tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dir(tmp_path, ".flac", [0.3, 0.4])
    with open(data / "text", "a", encoding="utf-8") as handle:
        handle.write("extra NO AUDIO\n")
    out = tmp_path / "m.jsonl"
    assert main(["import-kaldi", str(data), "--out", str(out), "--audio-root", str(tmp_path)]) == 0
    printed = capsys.readouterr()
    assert "2 utterances" in printed.out and "1 transcript without audio" in printed.out
    assert len(read_manifest(out)) == 2
    assert main(["import-kaldi", str(data), "--out", str(out), "--audio-root", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "no utterance could be imported" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
