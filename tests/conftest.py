"""Shared fixtures: generated audio, tiny manifests and configs, and the shared real-data paths.

Everything generated here is small (a fraction of a second of audio per file) so that tests stay
fast on a two-core machine. Real data is read in place from ``../shared/data``; never copy it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FSDD_DIR = SHARED_DATA / "fsdd" / "recordings"
LIBRISPEECH_FLAC = (
    SHARED_DATA / "librispeech-sample/LibriSpeech/dev-clean/2412/153948/2412-153948-0000.flac"
)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    # The test machine has two cores shared with other jobs: one intra-op thread per process avoids
    # oversubscription. Only applied when a test module already imported torch.
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def sine(freq: float, seconds: float, sr: int = 16000, amp: float = 0.5, phase: float = 0.0) -> np.ndarray:
    """A float32 sine wave."""
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def noise(seconds: float, sr: int = 16000, amp: float = 0.1, seed: int = 0) -> np.ndarray:
    """Float32 white noise, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return (amp * rng.standard_normal(int(round(seconds * sr)))).astype(np.float32)


def write_audio(path: Path, wave: np.ndarray, sr: int = 16000, subtype: str | None = None) -> Path:
    """Write ``(samples,)`` or ``(samples, channels)`` audio; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sr, subtype=subtype)
    return path


def build_manifest(
    folder: Path,
    texts: Sequence[str],
    seconds: Sequence[float] | float = 0.4,
    sr: int = 16000,
    name: str = "manifest.jsonl",
    relative: bool = True,
    prefix: str = "utt",
) -> Path:
    """Write one noisy two-tone WAV per text (distinct per utterance) and a manifest of them.

    Files (and so ids) are ``{prefix}000``, ``{prefix}001``...: use another prefix for a second
    manifest in the same folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    durations = [seconds] * len(texts) if isinstance(seconds, int | float) else list(seconds)
    lines = []
    for i, (text, dur) in enumerate(zip(texts, durations, strict=True)):
        wave = sine(200 + 150 * i, dur, sr, amp=0.3) + sine(1800 - 100 * i, dur, sr, amp=0.1)
        wave = wave + noise(dur, sr, amp=0.01, seed=i)
        audio = write_audio(folder / "audio" / f"{prefix}{i:03d}.wav", wave, sr)
        n = len(wave)
        lines.append(
            {
                "audio_filepath": str(audio.relative_to(folder)) if relative else str(audio),
                "duration": n / sr,
                "text": text,
            }
        )
    path = folder / name
    path.write_text("".join(json.dumps(rec) + "\n" for rec in lines), encoding="utf-8")
    return path


@pytest.fixture
def tiny_manifest(tmp_path: Path) -> Callable[..., Path]:
    """``tiny_manifest(texts, seconds=0.4, name=...)`` -> manifest path under ``tmp_path/data``."""

    def make(texts: Sequence[str], seconds: Sequence[float] | float = 0.4, **kwargs) -> Path:
        return build_manifest(tmp_path / "data", texts, seconds, **kwargs)

    return make


def tiny_config(**overrides):
    """A Config with a very small model (1-layer 32-unit LSTMs) for fast tests; ``section__name=value``."""
    from asr_s2s.config import Config

    config = Config()
    m, t = config.model, config.train
    m.encoder_hidden, m.encoder_layers, m.decoder_hidden, m.decoder_layers = 32, 1, 32, 1
    m.embedding_dim, m.stack_frames = 16, 3
    config.features.n_mels = 20
    t.max_frames, t.epochs, t.warmup_steps, t.log_every = 200, 1, 1, 1
    t.checkpoint_every, t.amp = 1000, False
    for key, value in overrides.items():
        section, name = key.split("__")
        if not hasattr(getattr(config, section), name):
            raise AttributeError(f"tiny_config: no option {section}.{name}")
        setattr(getattr(config, section), name, value)
    return config


def fsdd_files(pattern: str = "*.wav") -> list[Path]:
    """Real FSDD recordings (sorted), or a skip when the shared data is absent."""
    if not FSDD_DIR.is_dir():
        pytest.skip(f"shared FSDD data not found at {FSDD_DIR}")
    files = sorted(FSDD_DIR.glob(pattern))
    if not files:
        pytest.skip(f"no FSDD files match {pattern}")
    return files


@pytest.fixture
def librispeech_flac() -> Path:
    if not LIBRISPEECH_FLAC.is_file():
        pytest.skip(f"shared LibriSpeech sample not found at {LIBRISPEECH_FLAC}")
    return LIBRISPEECH_FLAC


DIGIT_WORDS = "zero one two three four five six seven eight nine"


def random_feats(lengths: list[int], n_mels: int, seed: int = 0):
    """A padded batch of random log-mels ``(batch, max(lengths), n_mels)`` and its ``(batch,)`` lengths."""
    import torch

    from asr_s2s.data import pad_features

    gen = torch.Generator().manual_seed(seed)
    return pad_features([torch.randn(n, n_mels, generator=gen) for n in lengths])


def random_tokens(batch: int, steps: int, vocab_size: int, seed: int = 0):
    """Random character ids ``(batch, steps)``, none of them a special id (pad, sos, eos, unk)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab_size, (batch, steps), generator=gen)


def tiny_model(seed: int = 0, **overrides):
    """``(Seq2Seq, Config, Vocabulary)``: a random-init :func:`tiny_config` model over the digit words."""
    import torch

    from asr_s2s.model import Seq2Seq
    from asr_s2s.text import Vocabulary

    config = tiny_config(**overrides)
    vocab = Vocabulary.build([DIGIT_WORDS])
    torch.manual_seed(seed)
    model = Seq2Seq(config.model, config.features.n_mels, len(vocab)).eval()
    return model, config, vocab


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny model bundle written by ``checkpoint.save_model`` (shared; do not modify)."""
    from asr_s2s.checkpoint import save_model

    model, config, vocab = tiny_model()
    path = tmp_path_factory.mktemp("tiny_model") / "model.pt"
    save_model(path, model, config, vocab)
    return path


@pytest.fixture(scope="module")
def audio_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Audio in nested folders and formats, plus files that must be ignored."""
    root = tmp_path_factory.mktemp("tree") / "in"
    write_audio(root / "a.wav", sine(300, 1.0))
    write_audio(root / "sub" / "b.flac", np.stack([sine(500, 1.2, 8000), sine(600, 1.2, 8000)], 1), 8000)
    write_audio(root / "sub" / "deeper" / "c.ogg", sine(700, 0.9, 22050), 22050)
    write_audio(root / ".hidden" / "d.wav", sine(300, 0.5))
    write_audio(root / "sub" / ".e.wav", sine(300, 0.5))
    (root / "notes.txt").write_text("not audio")
    return root
