"""Transcription API, long-recording chunking, batch transcription of files, output formats, export."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import fsdd_files, noise, sine, tiny_model, write_audio

import asr_s2s
import asr_s2s.audio as audio_module
from asr_s2s.audio import load_audio
from asr_s2s.checkpoint import ModelBundle, atomic_save, bundle_payload, load_file, rng_state
from asr_s2s.cli import main
from asr_s2s.errors import AudioError, ConfigError
from asr_s2s.transcribe import Transcriber, Transcription, load_model
from asr_s2s.writers import transcribe_files

# The package re-exports the function `transcribe` under the module's name, as whisper does.
transcribe_module = importlib.import_module("asr_s2s.transcribe")

SR = 16000


@pytest.fixture(scope="module")
def transcriber(tiny_model_path: Path) -> Transcriber:
    return load_model(tiny_model_path, device="cpu")


def assert_ordered(spans: list[tuple[float, float]], limit: float) -> None:
    """Spans are non-empty, increasing, non-overlapping and no longer than ``limit`` seconds."""
    assert spans
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert s0 < e0 <= s1 < e1
    assert all(e - s <= limit + 1e-6 for s, e in spans)


# ---- waveforms and files ---------------------------------------------------------------------


def test_stereo_44k_file_and_waveforms_agree(tmp_path: Path, transcriber: Transcriber) -> None:
    stereo = np.stack([sine(330, 1.5, 44100, amp=0.4), sine(520, 1.5, 44100, amp=0.2)], axis=1)
    path = write_audio(tmp_path / "stereo.wav", stereo, 44100)
    stored, _ = sf.read(str(path), dtype="float32")  # the PCM-16 samples, as the file holds them
    result = transcriber.transcribe(path)
    assert isinstance(result, Transcription)
    assert result.audio_path == str(path) and result.duration == pytest.approx(1.5)
    assert result.text and [(s.start, s.end) for s in result.segments] == [(0.0, 1.5)]
    for audio in (stored, stored.T, torch.from_numpy(stored), torch.from_numpy(stored.T.copy())):
        same = transcriber.transcribe(audio, sample_rate=44100)
        assert same.text == result.text and same.audio_path is None
        assert same.duration == pytest.approx(1.5)
    pcm = np.round(stored * 32768).clip(-32768, 32767).astype(np.int16)
    assert transcriber.transcribe(pcm, sample_rate=44100).text == result.text


def test_waveform_input_errors(transcriber: Transcriber) -> None:
    wave = sine(300, 0.5)
    with pytest.raises(ValueError, match="sample_rate"):
        transcriber.transcribe(wave)
    with pytest.raises(ValueError, match="dimensions"):
        transcriber.transcribe(wave[None, None], sample_rate=SR)
    with pytest.raises(AudioError, match="NaN"):
        transcriber.transcribe(np.full(1000, np.nan, dtype=np.float32), sample_rate=SR)
    with pytest.raises(AudioError, match="no audio"):
        transcriber.transcribe(np.zeros(0, dtype=np.float32), sample_rate=SR)
    with pytest.raises(TypeError):
        transcriber.transcribe(123)  # type: ignore[arg-type]


def test_package_level_api(tmp_path: Path, tiny_model_path: Path) -> None:
    path = write_audio(tmp_path / "tone.wav", sine(440, 0.8))
    model = asr_s2s.load_model(tiny_model_path, device="cpu")
    assert isinstance(model, asr_s2s.Transcriber)
    result = model.transcribe(str(path))
    # The one-call function, as asr_s2s.transcribe's (the package attribute is the same function).
    assert result.text == transcribe_module.transcribe(tiny_model_path, path, device="cpu").text
    assert result.text == transcribe_module.transcribe(model, sine(440, 0.8), sample_rate=SR).text
    assert asr_s2s.transcribe is transcribe_module.transcribe
    assert model.transcribe(path, beam_size=3).duration == pytest.approx(0.8)


def test_package_api_in_a_fresh_interpreter(tmp_path: Path, tiny_model_path: Path) -> None:
    path = write_audio(tmp_path / "tone.wav", sine(440, 0.8))
    code = (
        "import sys, asr_s2s; "
        "print(type(asr_s2s.load_model(sys.argv[1], device='cpu').transcribe(sys.argv[2])).__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tiny_model_path), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.strip() == "Transcription"


def test_real_fsdd_recordings(transcriber: Transcriber) -> None:
    files = fsdd_files("[0-2]_jackson_0.wav")
    results = transcribe_files(transcriber, files, progress=False)
    assert [r.audio_path for r in results] == [str(f) for f in files]
    wave, sr = sf.read(str(files[0]), dtype="float32")
    assert transcriber.transcribe(wave, sample_rate=sr).text == results[0].text


# ---- long recordings -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ten_minutes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    """A 10-minute recording: tone bursts of 0.5-6 s between silences of 0.6-3 s, a faint noise
    floor, and a 50 s run of loud noise without any silence. Returns the path and the bursts."""
    rng = np.random.default_rng(0)
    wave = noise(600.0, SR, amp=1e-4, seed=7)
    bursts = []
    t = 1.0
    while t < 590.0:
        if 300.0 <= t < 350.0:
            t = 350.0 + rng.uniform(0.6, 3.0)
            continue
        length = min(rng.uniform(0.5, 6.0), 590.0 - t)
        burst = sine(rng.uniform(150, 900), length, SR, amp=rng.uniform(0.1, 0.5))
        start = int(t * SR)
        wave[start : start + len(burst)] += burst * np.hanning(len(burst)) ** 0.1
        bursts.append((t, t + length))
        t += length + rng.uniform(0.6, 3.0)
    wave[300 * SR : 350 * SR] += noise(50.0, SR, amp=0.2, seed=3)
    path = write_audio(tmp_path_factory.mktemp("long") / "ten_minutes.wav", wave, SR)
    return path, bursts


def test_ten_minute_file_is_chunked_and_transcribed(
    ten_minutes: tuple[Path, list[tuple[float, float]]], transcriber: Transcriber
) -> None:
    path, bursts = ten_minutes
    limit = transcriber.max_chunk_seconds
    spans = [(s, e) for s, e, _ in transcriber.chunks(path)]
    assert len(spans) > 60
    assert_ordered(spans, limit)
    assert spans[-1][1] <= 600.0
    # Every burst lies whole inside one chunk (give or take an analysis frame).
    for s, e in bursts:
        assert any(cs <= s + 0.05 and ce >= e - 0.05 for cs, ce in spans), (s, e)
    # The 50 s of noise without silence were cut into back-to-back chunks.
    noisy = [(s, e) for s, e in spans if s < 350.0 and e > 300.0]
    assert len(noisy) >= 3
    assert all(e0 == s1 for (_, e0), (s1, _) in zip(noisy, noisy[1:]))

    result = transcriber.transcribe(path, batch_size=16)
    assert result.duration == pytest.approx(600.0)
    # Every chunk gets text from the random model, so the segments are exactly the chunks.
    assert [(s.start, s.end) for s in result.segments] == spans
    assert result.text == " ".join(s.text for s in result.segments)


def test_blocks_do_not_change_the_chunks(monkeypatch: pytest.MonkeyPatch, transcriber: Transcriber) -> None:
    # Bursts straddling the 5 s block boundaries must come out as with one big block.
    wave = noise(40.0, SR, amp=1e-4)
    burst = sine(400, 2.2, SR, amp=0.3)
    for start in np.arange(1.0, 38.0, 3.3):
        wave[int(start * SR) : int(start * SR) + len(burst)] += burst
    one_block = [(s, e) for s, e, _ in transcriber.chunks(wave, sample_rate=SR)]
    monkeypatch.setattr(audio_module, "BLOCK_SECONDS", 5.0)
    small_blocks = [(s, e) for s, e, _ in transcriber.chunks(wave, sample_rate=SR)]
    assert len(one_block) == 12
    assert small_blocks == one_block


def test_silence_gives_no_segments(transcriber: Transcriber) -> None:
    for wave in (np.zeros(30 * SR, dtype=np.float32), noise(30.0, SR, amp=1e-5)):
        result = transcriber.transcribe(wave, sample_rate=SR)
        assert result.text == "" and result.segments == [] and result.duration == pytest.approx(30.0)


def test_chunk_limit_is_the_decode_option_not_the_training_limit() -> None:
    for max_duration, chunk in [(30.0, 20.0), (8.0, 3.5), (0.5, 12.0)]:
        model, config, vocab = tiny_model(train__max_duration=max_duration, decode__max_chunk_seconds=chunk)
        assert Transcriber(ModelBundle(model, config, vocab), "cpu").max_chunk_seconds == chunk
    bundle = ModelBundle(model, config, vocab)
    assert Transcriber(bundle, "cpu", max_chunk_seconds=4.0).max_chunk_seconds == 4.0
    with pytest.raises(ConfigError, match="max_chunk_seconds"):
        Transcriber(bundle, "cpu", max_chunk_seconds=0.5)


def test_iter_transcriptions_is_a_pure_generator(tmp_path: Path, transcriber: Transcriber) -> None:
    # Results arrive in order, one per input, each as soon as it is complete; a failure in the
    # middle does not disturb the others, and two interleaved generators do not share state.
    good = [write_audio(tmp_path / f"{i}.wav", sine(300 + 100 * i, 0.5 + 0.2 * i)) for i in range(3)]
    inputs = [good[0], tmp_path / "missing.wav", good[1], good[2]]
    first = transcriber.iter_transcriptions(inputs, batch_size=2)
    second = transcriber.iter_transcriptions(list(reversed(inputs)), batch_size=2)
    a, b = [], []
    for _ in inputs:
        a.append(next(first))
        b.append(next(second))
    assert [type(r).__name__ for r in a] == ["Transcription", "AudioError", "Transcription", "Transcription"]
    assert [r.audio_path if isinstance(r, Transcription) else None for r in a] == [
        str(good[0]), None, str(good[1]), str(good[2])
    ]
    assert [r.text if isinstance(r, Transcription) else str(r) for r in b[::-1]] == [
        r.text if isinstance(r, Transcription) else str(r) for r in a
    ]
    assert [r.text for r in a if isinstance(r, Transcription)] == transcriber.decode(
        [load_audio(p, SR)[0].numpy() for p in good]
    )


def test_continuous_sound_is_cut_to_the_chunk_limit(tiny_model_path: Path) -> None:
    short = load_model(tiny_model_path, device="cpu", max_chunk_seconds=2.0)
    spans = [(s, e) for s, e, _ in short.chunks(sine(300, 9.0) + noise(9.0, amp=0.05), sample_rate=SR)]
    assert len(spans) >= 5
    assert_ordered(spans, 2.0)
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(9.0)
    assert all(e0 == s1 for (_, e0), (s1, _) in zip(spans, spans[1:]))


# ---- export ----------------------------------------------------------------------------------


def test_export_round_trip(tmp_path: Path, audio_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, config, vocab = tiny_model(seed=3)
    optimizer = torch.optim.Adam(model.parameters())
    feats = torch.randn(2, 9, config.features.n_mels)
    model(feats, torch.tensor([9, 5]), torch.ones(2, 3, dtype=torch.long)).logits.sum().backward()
    optimizer.step()
    checkpoint = bundle_payload(model.eval(), config, vocab, kind="checkpoint")
    checkpoint.update(optimizer=optimizer.state_dict(), step=1, epoch=0, rng=rng_state())
    atomic_save(checkpoint, tmp_path / "last.pt")

    assert main(["export", str(tmp_path / "last.pt"), str(tmp_path / "model.pt")]) == 0
    assert "model.pt" in capsys.readouterr().out
    exported = load_file(tmp_path / "model.pt")
    assert exported["kind"] == "model" and "optimizer" not in exported and "rng" not in exported
    assert exported["vocab"] == list(vocab.tokens) and exported["config"] == config.to_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(exported["model"][key], value)

    original = load_model(tmp_path / "last.pt", device="cpu")
    reloaded = load_model(tmp_path / "model.pt", device="cpu")
    files = sorted(audio_tree.rglob("[abc].*"))
    for beam in (1, 3):
        assert [r.text for r in transcribe_files(original, files, beam_size=beam, progress=False)] == [
            r.text for r in transcribe_files(reloaded, files, beam_size=beam, progress=False)
        ]
    capsys.readouterr()
    assert main(["export", str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")]) == 1
    assert "missing.pt" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
