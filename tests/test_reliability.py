"""Reliability (issue #7): bad audio, bad manifests, training faults, failing output folders, bad model
files, very long input and fuzzed loaders. Every user error ends in one line naming the file and the
reason (a traceback only with ``--debug``); ``docs/errors.md`` lists what each bad input shows."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REPO, build_manifest, noise, sine, tiny_config, tiny_model, write_audio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import asr_s2s.fileio as fileio
import asr_s2s.train as train_module
from asr_s2s.audio import load_audio
from asr_s2s.checkpoint import FORMAT_VERSION, bundle_payload, load_file, save_model
from asr_s2s.cli import main
from asr_s2s.errors import AudioError, CheckpointError, ManifestError, TrainingError
from asr_s2s.manifest import Utterance, iter_manifest, parse_line, read_manifest, write_manifest
from asr_s2s.model import Seq2Seq
from asr_s2s.train import Trainer, train
from asr_s2s.transcribe import Transcriber, Transcription, load_model

SR = 16000
TEXTS = ["one two", "three", "four five six", "seven", "eight nine", "zero one", "two", "three four"]
SECONDS = [0.3 + 0.05 * i for i in range(len(TEXTS))]
# The model sizes of conftest.tiny_config, as --set overrides for the command line.
TINY_SETS = [
    "model.encoder_hidden=32",
    "model.encoder_layers=1",
    "model.decoder_hidden=32",
    "model.decoder_layers=1",
    "model.embedding_dim=16",
    "features.n_mels=20",
    "train.max_frames=120",
    "train.warmup_steps=1",
    "train.amp=false",
]


@pytest.fixture(scope="module")
def transcriber(tiny_model_path: Path) -> Transcriber:
    return load_model(tiny_model_path, device="cpu")


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    """(train manifest, dev manifest): 8 generated utterances, and 3 of them as dev."""
    train_manifest = build_manifest(tmp_path / "data", TEXTS, SECONDS)
    dev = train_manifest.parent / "dev.jsonl"
    dev.write_text("".join(train_manifest.read_text().splitlines(keepends=True)[:3]))
    return train_manifest, dev


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single line the command printed to stderr (and nothing that looks like a traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def train_args(train_manifest: Path, dev: Path, out: Path, *sets: str) -> list[str]:
    args = ["--quiet", "train", "--train", str(train_manifest), "--dev", str(dev), "--out", str(out)]
    for item in [*TINY_SETS, *sets]:
        args += ["--set", item]
    return [*args, "--device", "cpu"]


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@contextlib.contextmanager
def training_process(args: list[str], **popen: Any) -> Iterator[subprocess.Popen]:
    """``python -m asr_s2s`` with ``args`` in a child process, killed if the test ends before it does."""
    proc = subprocess.Popen([sys.executable, "-m", "asr_s2s", *args], cwd=REPO, env=child_env(), **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait_for_checkpoint(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training ended (code {proc.returncode}) before writing {path}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {path} after {timeout} s")
        time.sleep(0.02)


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".*.tmp"))


# ---- 1. bad audio ----------------------------------------------------------------------------------

SUPPORTED = [
    # (name, subtype, channels, sample rate)
    ("u8.wav", "PCM_U8", 1, SR),
    ("s24.wav", "PCM_24", 1, SR),
    ("s24.flac", "PCM_24", 1, SR),
    ("float.wav", "FLOAT", 1, SR),
    ("stereo.flac", "PCM_16", 2, SR),
    ("six.wav", "PCM_16", 6, SR),
    *((f"rate{rate}.wav", "PCM_16", 1, rate) for rate in (8000, 11025, 22050, 32000, 44100, 48000)),
]


def write_supported(folder: Path, name: str, subtype: str, channels: int, rate: int) -> tuple[Path, int]:
    wave = sine(440, 0.4, rate, amp=0.4) + noise(0.4, rate, amp=0.02)
    data = np.stack([wave * (1 - 0.1 * c) for c in range(channels)], axis=1) if channels > 1 else wave
    return write_audio(folder / name, data, rate, subtype), len(wave)


@pytest.mark.parametrize(("name", "subtype", "channels", "rate"), SUPPORTED)
def test_supported_formats_load_as_mono_at_the_model_rate(
    tmp_path: Path, transcriber: Transcriber, name: str, subtype: str, channels: int, rate: int
) -> None:
    path, frames = write_supported(tmp_path, name, subtype, channels, rate)
    wave, sr = load_audio(path, SR)
    assert sr == SR and wave.ndim == 1 and len(wave) == math.ceil(frames * SR / rate)
    assert torch.isfinite(wave).all() and 0.2 < float(wave.abs().max()) < 0.6
    result = transcriber.transcribe(path)
    assert isinstance(result, Transcription) and result.duration == pytest.approx(0.4, abs=1e-3)


def test_supported_formats_through_the_command_line(
    tmp_path: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    for name, subtype, channels, rate in SUPPORTED:
        write_supported(folder, name, subtype, channels, rate)
    code = main(["--quiet", "transcribe", "--model", str(tiny_model_path), "--format", "jsonl", str(folder)])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert sorted(Path(r["audio_path"]).name for r in rows) == sorted(s[0] for s in SUPPORTED)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(folder: Path, suffix: str) -> Path:
    good = write_audio(folder / f"good{suffix}", sine(300, 0.5) + noise(0.5, amp=0.05), SR)
    data = good.read_bytes()
    path = folder / f"truncated{suffix}"
    path.write_bytes(data[: len(data) // 2])
    return path


def _bad_samples(folder: Path, value: float) -> Path:
    wave = sine(300, 0.5)
    wave[1234] = value
    return write_audio(folder / f"bad{value}.wav", wave, SR, "FLOAT")


# name -> (make the file in a folder, the reason in the error or None when the file works)
AUDIO_CASES: dict[str, tuple[Callable[[Path], Path], str | None]] = {
    "missing": (lambda d: d / "missing.wav", "no such file"),
    "zero bytes": (lambda d: _write(d / "empty.wav", b""), "empty file (0 bytes)"),
    "text named .wav": (
        lambda d: _write(d / "text.wav", b"just some text\n" * 20),
        "cannot decode audio (Format not recognised.)",
    ),
    "wav header only": (
        lambda d: _write(
            d / "header.wav", write_audio(d / "valid.wav", sine(300, 0.5), SR).read_bytes()[:44]
        ),
        "no audio samples",
    ),
    # libsndfile decodes the part of a truncated WAV that is there.
    "truncated wav": (lambda d: _truncated(d, ".wav"), None),
    # A FLAC stream cut mid-frame loses sync: an error, not a silently shortened result.
    "truncated flac": (lambda d: _truncated(d, ".flac"), "cannot decode audio (flac decoder lost sync.)"),
    "nan samples": (lambda d: _bad_samples(d, float("nan")), "contains NaN or infinite samples"),
    "inf samples": (lambda d: _bad_samples(d, float("inf")), "contains NaN or infinite samples"),
    "odd sample rate": (
        lambda d: write_audio(d / "odd.wav", sine(300, 0.5, 16001), 16001),
        "unsupported sample rate 16001 Hz (too costly to resample to 16000 Hz); convert the file to 16000 Hz",
    ),
    "silence": (lambda d: write_audio(d / "silence.wav", np.zeros(SR, np.float32), SR), None),
    "ten samples": (lambda d: write_audio(d / "ten.wav", sine(300, 10 / SR), SR), None),
    "one sample at 8 kHz": (lambda d: write_audio(d / "one.wav", np.full(1, 0.5, np.float32), 8000), None),
}


@pytest.mark.parametrize("case", list(AUDIO_CASES))
def test_bad_audio_through_load_audio_the_api_and_the_command_line(
    case: str,
    tmp_path: Path,
    tiny_model_path: Path,
    transcriber: Transcriber,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make, reason = AUDIO_CASES[case]
    path = make(tmp_path)
    command = ["--quiet", "transcribe", "--model", str(tiny_model_path), str(path)]
    if reason is None:
        wave, _ = load_audio(path, SR)
        assert len(wave) > 0 and torch.isfinite(wave).all()
        assert isinstance(transcriber.transcribe(path).text, str)
        assert main(command) == 0
        assert capsys.readouterr().err == ""
        return
    with pytest.raises(AudioError) as info:
        load_audio(path, SR)
    assert str(info.value).startswith(f"{path}: {reason}") and "\n" not in str(info.value)
    with pytest.raises(AudioError, match="^" + re.escape(str(path))):
        transcriber.transcribe(path)
    assert main(command) == 1
    assert one_error_line(capsys).startswith(f"asr-s2s: error: {path}: {reason}")
    with pytest.raises(AudioError):  # --debug lets the exception (and its traceback) through
        main(["--debug", *command])


def test_odd_sample_rate_waveform_is_refused(transcriber: Transcriber) -> None:
    with pytest.raises(AudioError, match="<waveform>: unsupported sample rate 44101 Hz"):
        transcriber.transcribe(np.zeros(4410, np.float32), sample_rate=44101)
    assert isinstance(transcriber.transcribe(np.zeros(4410, np.float32), sample_rate=37800), Transcription)


# ---- 2. bad manifests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"audio_filepath": "a.wav", "duration": ' + "9" * 5000 + ', "text": "x"}', "invalid JSON"),
        ("[" * 100_000, "invalid JSON (nested too deeply)"),
        ('{"audio_filepath": "a.wav", "duration": ' + "9" * 400 + ', "text": "x"}', "must be finite"),
        ('{"audio_filepath": "a.wav", "duration": 1e300, "text": "x"}', "'duration' of 1e+300 seconds"),
        ('{"audio_filepath": "a.wav", "duration": 1, "text": "\\ud800"}', "'text' holds an unpaired"),
        ('{"audio_filepath": "\\udfff.wav", "duration": 1, "text": "x"}', "'audio_filepath' holds"),
    ],
)
def test_lines_that_used_to_escape_as_other_errors(line: str, reason: str) -> None:
    with pytest.raises(ManifestError, match=r"^m\.jsonl:3: ") as info:
        parse_line(line, Path("/data"), "m.jsonl", 3)
    assert reason in str(info.value) and "\n" not in str(info.value)


def _messy_manifests(tmp_path: Path) -> tuple[Path, Path, list[str], str]:
    """A training manifest with every kind of bad line and utterance, a dev set with foreign characters;
    also the ids of the unreadable utterances and the line of the first one."""
    train_manifest = build_manifest(tmp_path / "data", TEXTS, SECONDS)
    audio = train_manifest.parent / "audio"
    lines = train_manifest.read_text().splitlines()
    record = json.loads(lines[0])
    bad_lines = [
        "{this line is broken",
        json.dumps({"duration": 1.0, "text": "one"}),
        json.dumps({**record, "audio_filepath": "", "id": "empty-path"}),
        json.dumps({**record, "duration": -1.0, "id": "negative"}),
        json.dumps({**record, "duration": "long", "id": "string-duration"}),
        json.dumps(record),  # a duplicate of the first line's id
    ]
    wrong_duration = json.dumps({**record, "duration": 2.0, "id": "too-long"})  # the file has 0.3 s
    truncated = audio / "truncated.wav"
    truncated.write_bytes((audio / "utt007.wav").read_bytes()[:3000])
    short = write_audio(audio / "ten.wav", sine(300, 10 / SR), SR)
    good_extra = [
        json.dumps({**json.loads(lines[7]), "audio_filepath": "audio/truncated.wav", "id": "truncated"}),
        json.dumps({"audio_filepath": str(short), "duration": 10 / SR, "text": "one", "id": "ten-samples"}),
    ]
    body = "\n".join([*lines, *bad_lines, wrong_duration, *good_extra]) + "\n"
    train_manifest.write_bytes(body.encode() + b'{"text": "caf\xe9"}\n')
    dev = train_manifest.parent / "dev.jsonl"
    dev.write_text(
        "".join(f"{line}\n" for line in lines[:2]) + json.dumps({**record, "id": "d", "text": "ça 42!"})
    )
    return train_manifest, dev, ["too-long", "truncated"], wrong_duration


def test_training_skips_bad_lines_and_utterances_and_summarizes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    train_manifest, dev, unreadable, wrong_duration = _messy_manifests(tmp_path)
    config = tiny_config(train__epochs=1, train__max_frames=150)
    with caplog.at_level("WARNING"):
        result = train(config, train_manifest, dev, tmp_path / "exp", progress=False)
    assert result.skipped_lines == 7  # six bad lines and the non-UTF-8 one
    assert result.skipped_utterances == len(unreadable)
    assert result.unknown_char_utterances == 1  # 'ç', '4', '2' are not in the digit words
    assert result.steps > 0 and (tmp_path / "exp" / "model.pt").is_file()
    log = caplog.text
    assert f"{train_manifest}:9: invalid JSON" in log and "not valid UTF-8" in log
    assert "duplicate id 'utt000'" in log and "'duration' must be positive" in log
    assert "the manifest says 2 s" in log and "outside the vocabulary" in log and "'ç'" in log
    summary = caplog.messages[-3:]
    assert summary == [
        "skipped 7 malformed manifest lines",
        "1 texts had characters outside the vocabulary (read as <unk>)",
        "skipped 2 unreadable utterances during training",
    ]

    # --strict: the first bad line is fatal, with one line on stderr and exit status 1.
    strict = [*train_args(train_manifest, dev, tmp_path / "strict", "train.epochs=1"), "--strict"]
    assert main(strict) == 1
    assert one_error_line(capsys) == (
        f"asr-s2s: error: {train_manifest}:9: invalid JSON "
        "(Expecting property name enclosed in double quotes at column 2)"
    )
    # Without the bad lines, --strict stops at the first unreadable utterance.
    good_lines = train_manifest.read_text(errors="replace").splitlines()[:8]
    train_manifest.write_text("\n".join([*good_lines, wrong_duration]) + "\n")
    assert main(strict) == 1
    audio = train_manifest.parent / "audio" / "utt000.wav"
    assert one_error_line(capsys) == (
        f"asr-s2s: error: unreadable utterance too-long: {audio}: only 0.30 s of audio, "
        "but the manifest says 2 s (truncated, or the wrong file?)"
    )


def test_empty_and_missing_manifests_on_the_command_line(
    tmp_path: Path, corpus: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    train_manifest, dev = corpus
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(train_args(empty, dev, tmp_path / "exp")) == 1
    assert one_error_line(capsys) == f"asr-s2s: error: {empty}: manifest has no utterances"
    assert main(train_args(train_manifest, tmp_path / "nope.jsonl", tmp_path / "exp")) == 1
    assert one_error_line(capsys) == f"asr-s2s: error: {tmp_path / 'nope.jsonl'}: no such manifest file"
    for audio in (train_manifest.parent / "audio").iterdir():
        audio.write_text("not audio")
    assert main(train_args(train_manifest, dev, tmp_path / "exp")) == 1
    assert one_error_line(capsys) == "asr-s2s: error: none of the 8 sampled training utterances could be read"


def test_evaluate_accepts_characters_outside_the_vocabulary(
    tmp_path: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = build_manifest(tmp_path / "data", ["Ça coûte 42 €!", "one two"])
    args = ["--quiet", "evaluate", "--model", str(tiny_model_path), "--manifest", str(manifest)]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["utterances"] == 2 and summary["failed_utterances"] == 0 and summary["ref_words"] == 5


# ---- 3. training faults ----------------------------------------------------------------------------


def test_non_finite_losses_are_skipped_then_fatal_in_a_row(
    corpus: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    train_manifest, dev = corpus
    real = train_module.cross_entropy
    calls: list[int] = []
    poisoned = {2, 3}  # training losses (not dev losses: those run without gradients)

    def nan_sometimes(logits: torch.Tensor, labels: torch.Tensor, *args: object) -> torch.Tensor:
        loss = real(logits, labels, *args)
        if torch.is_grad_enabled():
            calls.append(1)
            if len(calls) in poisoned:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train_module, "cross_entropy", nan_sometimes)
    config = tiny_config(train__epochs=1, train__max_frames=120, train__max_bad_steps=3)
    result = train(config, train_manifest, dev, tmp_path / "exp", progress=False)
    assert result.skipped_steps == 2 and result.steps == len(calls)
    assert all(torch.isfinite(v).all() for v in load_file(tmp_path / "exp" / "last.pt")["model"].values())

    poisoned.update(range(1, 1000))
    with pytest.raises(TrainingError, match="3 steps in a row had a non-finite loss"):
        train(config, train_manifest, dev, tmp_path / "exp2", progress=False)
    assert main(train_args(train_manifest, dev, tmp_path / "exp3", "train.max_bad_steps=3")) == 1
    assert one_error_line(capsys) == (
        "asr-s2s: error: 3 steps in a row had a non-finite loss or gradient; lower train.lr or check the data"
    )


def _oom_when(monkeypatch: pytest.MonkeyPatch, too_big: Callable[[torch.Tensor], bool]) -> list[int]:
    """Make the model's training forward raise OutOfMemoryError for batches where ``too_big(feat_lens)``."""
    real = Seq2Seq.forward
    sizes: list[int] = []

    def forward(self: Seq2Seq, feats: torch.Tensor, feat_lens: torch.Tensor, *args: object, **kwargs: object):
        if self.training:
            sizes.append(len(feat_lens))
            if too_big(feat_lens):
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, feats, feat_lens, *args, **kwargs)

    monkeypatch.setattr(Seq2Seq, "forward", forward)
    return sizes


def test_out_of_memory_splits_the_batch_and_keeps_the_gradients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from asr_s2s.data import collate

    # Texts of equal length: the mean of the pieces' per-token losses is the whole batch's.
    manifest = build_manifest(
        tmp_path / "data", ["one two", "two one", "six two", "one six"], [0.3, 0.35, 0.4, 0.5]
    )
    config = tiny_config(train__spec_augment=False, model__encoder_dropout=0.0, model__decoder_dropout=0.0)
    trainer = Trainer(config, manifest, manifest, tmp_path / "exp", progress=False)
    batch = collate([trainer.train_set[i] for i in range(4)])
    longest = int(batch.feat_lens.max())

    def gradients(pieces: slice = slice(0, 4)) -> dict[str, torch.Tensor]:
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.model.train()
        sub = collate([trainer.train_set[i] for i in range(4)][pieces])
        trainer._forward_backward(sub)
        return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}

    expected, expected_3 = gradients(), gradients(slice(0, 3))
    # Too big: more than two utterances, or the longest with another one. The first half (two
    # short ones) fits and has done its backward pass when the second half fails.
    sizes = _oom_when(
        monkeypatch, lambda lens: len(lens) > 2 or (len(lens) == 2 and int(lens.max()) == longest)
    )
    with caplog.at_level("WARNING"):
        split = gradients()
    assert sizes == [4, 2, 2, 2, 1, 1] and trainer.oom_skipped == 0
    for name, grad in expected.items():
        torch.testing.assert_close(split[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert "out of memory on a batch of 4 utterances; splitting it" in caplog.messages

    # The longest utterance does not fit even alone: it is left out of the step, the rest learn.
    _oom_when(monkeypatch, lambda lens: int(lens.max()) == longest)
    skipped = gradients()
    assert trainer.oom_skipped == 1
    assert "out of memory on utterance utt003 alone; left out of the step" in caplog.messages
    for name, grad in expected_3.items():
        torch.testing.assert_close(skipped[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_out_of_memory_during_fit_is_counted_and_training_finishes(
    corpus: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    train_manifest, dev = corpus
    longest = 1 + int(max(SECONDS) * 100)  # frames of the longest utterance
    _oom_when(monkeypatch, lambda lens: len(lens) > 2 or int(lens.max()) == longest)
    config = tiny_config(train__epochs=2, train__max_frames=300)
    with caplog.at_level("WARNING"):
        result = train(config, train_manifest, dev, tmp_path / "exp", progress=False)
    assert result.oom_skipped == 2  # the longest utterance, once per epoch
    assert result.skipped_steps == 0 and result.steps > 0
    assert any("splitting it" in m for m in caplog.messages)
    assert "left 2 utterances out of their steps: out of memory even alone" in caplog.messages
    assert (tmp_path / "exp" / "model.pt").is_file()


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_130_then_resume_continues(
    corpus: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_manifest, dev = corpus
    out = tmp_path / "exp"
    args = train_args(train_manifest, dev, out, "train.epochs=200", "train.checkpoint_every=1")
    with training_process(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        wait_for_checkpoint(out / "last.pt", proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    ours = [line for line in stderr.splitlines() if line.startswith("asr-s2s:")]
    assert len(ours) == 1 and ours[0].startswith("asr-s2s: stopped: training interrupted at step ")
    state = load_file(out / "last.pt")
    assert ours[0].endswith(f"step {state['step']}; checkpoint {out / 'last.pt'}")
    assert not temp_files(out)

    # --resume continues from that step (two more, then the usual dev scoring and model.pt).
    more = state["step"] + 2
    resume = [*args, "--set", f"train.max_steps={more}", "--resume"]
    assert main(resume) == 0
    assert load_file(out / "last.pt")["step"] == more and (out / "model.pt").is_file()


@pytest.mark.slow
def test_kill_9_leaves_a_loadable_checkpoint_and_resume_matches_an_uninterrupted_run(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    train_manifest, dev = corpus
    sets = [
        "train.epochs=3",
        "train.checkpoint_every=3",
        "train.spec_augment=true",
        "model.encoder_dropout=0.2",
    ]
    assert main(train_args(train_manifest, dev, tmp_path / "full", *sets)) == 0
    full = load_file(tmp_path / "full" / "last.pt")

    out = tmp_path / "killed"
    args = train_args(train_manifest, dev, out, *sets)
    with training_process(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        wait_for_checkpoint(out / "last.pt", proc)
        time.sleep(0.05)  # into the steps after the checkpoint, which the resumed run repeats
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait(timeout=60)
    killed = load_file(out / "last.pt")  # never a partial file: a checkpoint is renamed into place
    assert 3 <= killed["step"] < full["step"], "the run should have been killed mid-training"

    assert main([*args, "--resume"]) == 0
    resumed = load_file(out / "last.pt")
    assert resumed["step"] == full["step"] and resumed["history"] == full["history"]
    for key, value in full["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    final, reference = (
        load_file(out / "model.pt")["model"],
        load_file(tmp_path / "full" / "model.pt")["model"],
    )
    assert all(torch.equal(final[key], value) for key, value in reference.items())


# ---- 4. output problems ----------------------------------------------------------------------------


def _no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _pt_bytes(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*.pt"))}


def test_disk_full_during_training_names_the_file_and_keeps_the_checkpoints(
    corpus: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    train_manifest, dev = corpus
    out = tmp_path / "exp"
    args = train_args(train_manifest, dev, out, "train.epochs=2", "train.checkpoint_every=1")
    assert main([*args, "--set", "train.max_steps=3"]) == 0
    before = _pt_bytes(out)
    assert {p.name for p in before} >= {"last.pt", "best.pt", "model.pt"}

    # The disk fills up while the next checkpoint is written (at the file's fsync).
    monkeypatch.setattr(fileio.os, "fsync", _no_space)
    assert main([*args, "--set", "train.max_steps=5", "--resume"]) == 1
    assert (
        one_error_line(capsys) == f"asr-s2s: error: {out / 'last.pt'}: cannot write (No space left on device)"
    )
    assert _pt_bytes(out) == before and not temp_files(out)


@pytest.mark.parametrize("fault", ["fsync", "mkstemp"])
def test_failed_atomic_writes_raise_project_errors_and_keep_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    model, config, vocab = tiny_model()
    model_path, manifest_path = tmp_path / "model.pt", tmp_path / "m.jsonl"
    save_model(model_path, model, config, vocab)
    utts = [Utterance("a", tmp_path / "a.wav", 1.0, "one")]
    write_manifest(manifest_path, utts)
    before = model_path.read_bytes(), manifest_path.read_bytes()
    if fault == "fsync":  # disk full
        monkeypatch.setattr(fileio.os, "fsync", _no_space)
        reason = "cannot write (No space left on device)"
    else:  # a read-only folder (simulated: tests may run as root, whom permissions do not stop)
        monkeypatch.setattr(
            fileio.tempfile, "mkstemp", lambda *a, **k: _raise(OSError(errno.EROFS, os.strerror(errno.EROFS)))
        )
        reason = "cannot write (Read-only file system)"
    with pytest.raises(CheckpointError, match="^" + re.escape(f"{model_path}: {reason}")):
        save_model(model_path, model, config, vocab)
    with pytest.raises(ManifestError, match="^" + re.escape(f"{manifest_path}: {reason}")):
        write_manifest(manifest_path, utts * 2)
    assert (model_path.read_bytes(), manifest_path.read_bytes()) == before
    assert not temp_files(tmp_path)


def _raise(err: Exception) -> None:
    raise err


def test_output_paths_blocked_by_a_file(
    tmp_path: Path, corpus: tuple[Path, Path], tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Works as root too: a regular file where a folder should be stops everyone.
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    audio = write_audio(tmp_path / "a.wav", sine(300, 0.3), SR)
    base = ["--quiet", "transcribe", "--model", str(tiny_model_path), str(audio)]
    assert main([*base, "--output-dir", str(blocker)]) == 1
    assert one_error_line(capsys) == f"asr-s2s: error: {blocker}: cannot write (File exists)"
    assert main(["export", str(tiny_model_path), str(blocker / "model.pt")]) == 1
    assert one_error_line(capsys).startswith(f"asr-s2s: error: {blocker / 'model.pt'}: cannot write (")
    train_manifest, dev = corpus
    assert main(train_args(train_manifest, dev, blocker)) == 1
    assert one_error_line(capsys) == f"asr-s2s: error: {blocker}: File exists"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(
    tmp_path: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert main(["export", str(tiny_model_path), str(folder / "model.pt")]) == 1
        assert (
            one_error_line(capsys)
            == f"asr-s2s: error: {folder / 'model.pt'}: cannot write (Permission denied)"
        )
    finally:
        folder.chmod(0o755)


# ---- 5. bad model files ----------------------------------------------------------------------------


def _torch_file(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _payload(**changes: object) -> bytes:
    model, config, vocab = tiny_model()
    return _torch_file({**bundle_payload(model, config, vocab), **changes})


MODEL_CASES: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "truncated": (lambda good: good.read_bytes()[: good.stat().st_size // 2], "truncated or corrupt file"),
    "random bytes": (lambda good: np.random.default_rng(0).bytes(5000), "truncated or corrupt file"),
    "text file": (lambda good: b"this is not a model\n" * 50, "truncated or corrupt file"),
    "empty": (lambda good: b"", "empty file (0 bytes)"),
    "random dict": (
        lambda good: _torch_file({"weights": torch.randn(4, 4), "epoch": 3}),
        "not an asr-s2s model",
    ),
    "future format": (
        lambda good: _payload(format_version=FORMAT_VERSION + 1),
        f"format version {FORMAT_VERSION + 1} is not supported (this asr-s2s reads version {FORMAT_VERSION})",
    ),
    "garbage vocabulary": (lambda good: _payload(vocab=5), "inconsistent model file"),
    "weights of another shape": (
        lambda good: _payload(model={k: v.reshape(-1)[:1] for k, v in load_file(good)["model"].items()}),
        "inconsistent model file (size mismatch for",
    ),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_files(
    case: str, tmp_path: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, reason = MODEL_CASES[case]
    path = tmp_path / "model.pt"
    path.write_bytes(make(tiny_model_path))
    with pytest.raises(CheckpointError) as info:
        load_model(path, device="cpu")
    assert (
        str(info.value).startswith(f"{path}: ") and reason in str(info.value) and "\n" not in str(info.value)
    )

    audio = write_audio(tmp_path / "a.wav", sine(300, 0.3), SR)
    manifest = build_manifest(tmp_path / "data", ["one"])
    for command in (
        ["transcribe", "--model", str(path), str(audio)],
        ["evaluate", "--model", str(path), "--manifest", str(manifest), "--out", str(tmp_path / "out")],
    ):
        assert main(["--quiet", *command]) == 1
        line = one_error_line(capsys)
        assert line.startswith(f"asr-s2s: error: {path}: ") and reason in line


def test_resume_from_a_model_bundle_is_a_clear_error(
    corpus: tuple[Path, Path], tmp_path: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_manifest, dev = corpus
    out = tmp_path / "exp"
    out.mkdir()
    (out / "last.pt").write_bytes(tiny_model_path.read_bytes())
    assert main([*train_args(train_manifest, dev, out), "--resume"]) == 1
    assert one_error_line(capsys) == (
        f"asr-s2s: error: {out / 'last.pt'}: a model bundle, not a training checkpoint: cannot resume"
    )


# ---- 6. long input ---------------------------------------------------------------------------------

RSS_LIMIT_KB = 2 * 1024 * 1024


def _write_hour(path: Path, rate: int = 8000) -> None:
    """One hour of talk-like audio (bursts of tones and noise between pauses), written a minute at a time."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", rate, 1, "PCM_16") as handle:
        for minute in range(60):
            parts = []
            while sum(len(p) for p in parts) < 60 * rate:
                burst = float(rng.uniform(0.5, 6.0 if minute % 10 else 40.0))  # some too long for one chunk
                t = np.arange(int(burst * rate)) / rate
                parts.append((0.3 * np.sin(2 * np.pi * rng.uniform(150, 900) * t)).astype(np.float32))
                parts.append(noise(float(rng.uniform(0.3, 1.0)), rate, amp=0.002, seed=minute))
            handle.write(np.concatenate(parts)[: 60 * rate])


@pytest.mark.slow
def test_one_hour_recording_keeps_peak_memory_under_2_gb(tmp_path: Path, tiny_model_path: Path) -> None:
    long = tmp_path / "hour.wav"
    _write_hour(long)
    out = tmp_path / "out"
    # A small parent (no torch) runs the command and reports the peak RSS of its only child.
    measure = (
        "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    )
    command = [sys.executable, "-m", "asr_s2s", "--quiet", "transcribe", "--model", str(tiny_model_path)]
    done = subprocess.run(
        [sys.executable, "-c", measure, *command, "--format", "json", "--output-dir", str(out), str(long)],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    peak_kb = int(done.stdout.split()[-1])
    assert peak_kb < RSS_LIMIT_KB, f"peak RSS {peak_kb / 1024:.0f} MB"
    result = json.loads((out / "hour.json").read_text())
    assert result["duration"] == pytest.approx(3600.0)
    ends = [s["end"] for s in result["segments"]]
    assert len(ends) > 500 and ends == sorted(ends) and ends[-1] > 3590


# ---- 7. fuzzing ------------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
KEYS = ["audio_filepath", "duration", "text", "offset", "id", "speaker"]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**320)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _loose_json(value: object) -> str:
    return json.dumps(value, allow_nan=True)  # NaN/Infinity too: Python's json reads them back


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), JSON_VALUES, max_size=7))
def test_fuzz_parse_line_records(record: dict) -> None:
    try:
        utt = parse_line(_loose_json(record), Path("/data"))
    except ManifestError as err:
        assert "\n" not in str(err)
        return
    assert utt.duration > 0 and math.isfinite(utt.duration) and utt.id


@FUZZ
@given(st.text(max_size=200) | JSON_VALUES.map(_loose_json))
def test_fuzz_parse_line_text(line: str) -> None:
    try:
        parse_line(line, Path("/data"))
    except ManifestError:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=80) | JSON_VALUES.map(lambda v: _loose_json(v).encode()), max_size=6))
def test_fuzz_iter_manifest_files(tmp_path: Path, lines: list[bytes]) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines))
    errors: list[ManifestError] = []
    utts = list(iter_manifest(path, on_error=errors.append))
    assert all(isinstance(u, Utterance) for u in utts) and all(isinstance(e, ManifestError) for e in errors)
    try:
        read_manifest(path)
    except ManifestError:
        pass


def _wav_header() -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(64, np.int16), SR, format="WAV", subtype="PCM_16")
    return buffer.getvalue()[:44]


def _flac_file() -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, sine(300, 0.3), SR, format="FLAC")
    return buffer.getvalue()


WAV_HEADER, FLAC_FILE = _wav_header(), _flac_file()
EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4)


def _edit(data: bytes, edits: list[tuple[int, int]], limit: int) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        if out:
            out[position % min(limit, len(out))] = value
    return bytes(out)


def _load_or_audio_error(path: Path) -> None:
    for rate in (None, SR):
        try:
            wave, _ = load_audio(path, rate)
        except AudioError as err:
            assert err.path == str(path) and "\n" not in str(err)
        else:
            assert len(wave) > 0 and torch.isfinite(wave).all()


@FUZZ
@given(st.binary(max_size=3000), st.sampled_from([".wav", ".flac"]))
def test_fuzz_load_audio_random_bytes(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    _load_or_audio_error(path)


@FUZZ
@given(st.binary(max_size=3000), EDITS)
# Found by CI: a header that makes soundfile treat the file as unseekable (it raised ValueError).
@example(body=b"", edits=[(64, 64)])
def test_fuzz_load_audio_wav_header_then_random_bytes(tmp_path: Path, body: bytes, edits: list) -> None:
    path = tmp_path / "fuzz.wav"
    path.write_bytes(_edit(WAV_HEADER, edits, 44) + body)  # edits to the header: odd rates, sizes, formats
    _load_or_audio_error(path)


@FUZZ
@given(st.integers(0, len(FLAC_FILE)), EDITS, st.binary(max_size=200))
def test_fuzz_load_audio_damaged_flac(tmp_path: Path, keep: int, edits: list, tail: bytes) -> None:
    path = tmp_path / "fuzz.flac"
    path.write_bytes(_edit(FLAC_FILE[:keep], edits, len(FLAC_FILE)) + tail)
    _load_or_audio_error(path)
