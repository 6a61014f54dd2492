"""Checkpoint and model-bundle files: one file each, written atomically, validated on load
(which files a training run writes, and when: :mod:`asr_s2s.checkpointer`)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr_s2s.config import Config
from asr_s2s.errors import AsrError, CheckpointError
from asr_s2s.fileio import atomic_write
from asr_s2s.model import Seq2Seq
from asr_s2s.text import Vocabulary

FORMAT_VERSION = 1
KINDS = ("checkpoint", "model")


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically: a crash leaves the previous file intact, never a partial one."""
    try:
        with atomic_write(path, "wb") as handle:
            torch.save(obj, handle)
    except OSError as err:
        raise CheckpointError(path, f"cannot write ({err.strerror or err})") from None


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint or model file; raises :class:`CheckpointError` naming the problem."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such file")
    if not path.is_file():
        raise CheckpointError(path, "not a file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt archives
        if "Unsupported global" in str(err):  # a valid archive of arbitrary objects (e.g. a pickled module)
            raise CheckpointError(
                path, "not an asr-s2s model or checkpoint (holds Python objects that are not loaded)"
            ) from None
        reason = "truncated or corrupt file" if path.stat().st_size else "empty file (0 bytes)"
        raise CheckpointError(
            path, f"not a readable asr-s2s model ({reason}: {type(err).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("kind") not in KINDS:
        raise CheckpointError(path, "not an asr-s2s model or checkpoint")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            path, f"format version {version} is not supported (this asr-s2s reads version {FORMAT_VERSION})"
        )
    return payload


@dataclass
class ModelBundle:
    """A ready model with everything needed to run it."""

    model: Seq2Seq
    config: Config
    vocab: Vocabulary


def bundle_payload(model: Seq2Seq, config: Config, vocab: Vocabulary, kind: str = "model") -> dict[str, Any]:
    """Weights, configs, vocabulary and normalization statistics (inside the weights) as plain data."""
    return {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "vocab": list(vocab.tokens),
        "n_mels": model.n_mels,
        "ctc": model.ctc_head is not None,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def bundle_from_payload(payload: dict[str, Any], path: str | Path = "<model>") -> ModelBundle:
    """Rebuild the model from a payload read by :func:`load_file`."""
    try:
        config = Config.from_dict(payload["config"], str(path), strict=False)
        vocab = Vocabulary(tuple(payload["vocab"]), config.text)
        model = Seq2Seq(config.model, int(payload["n_mels"]), len(vocab), ctc=bool(payload.get("ctc")))
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, ValueError, RuntimeError, AsrError) as err:
        raise CheckpointError(path, f"inconsistent model file ({_first_reason(err)})") from None
    model.eval()
    return ModelBundle(model, config, vocab)


def _first_reason(err: Exception) -> str:
    """The informative line of ``err``, shortened: load_state_dict's first line is only a heading
    ("Error(s) in loading state_dict for ...:")."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    detail = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    return detail[:200] + "..." if len(detail) > 200 else detail


# What the weights' input depends on: a model trained on other features would read garbage.
FRONT_END_FIELDS = (
    "features.sample_rate",
    "features.n_mels",
    "features.win_ms",
    "features.hop_ms",
    "features.n_fft",
    "features.log_floor",
    "model.normalization",
    "model.stack_frames",
)


def read_pretrained(path: str | Path, config: Config) -> dict[str, Any]:
    """The model or checkpoint ``path`` to start a training from (``train.init_from``); a
    :class:`CheckpointError` when its front end (:data:`FRONT_END_FIELDS`) differs from ``config``'s."""
    payload = load_file(path)
    stored = Config.from_dict(payload["config"], str(path), strict=False)
    differ = []
    for name in FRONT_END_FIELDS:
        section, key = name.split(".")
        ours, theirs = getattr(getattr(config, section), key), getattr(getattr(stored, section), key)
        if ours != theirs:
            differ.append(f"{name} is {ours!r} here, {theirs!r} there")
    if differ:
        reason = "cannot initialize from a model of another front end: " + "; ".join(differ)
        raise CheckpointError(path, reason)
    return payload


def init_weights(model: Seq2Seq, payload: dict[str, Any], path: str | Path) -> None:
    """Load the weights of :func:`read_pretrained`'s ``payload`` (its normalization statistics
    included) into ``model``; a :class:`CheckpointError` when they do not fit its shapes."""
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        reason = f"its weights do not fit this config's model ({_first_reason(err)})"
        raise CheckpointError(path, reason) from None


def save_model(path: str | Path, model: Seq2Seq, config: Config, vocab: Vocabulary) -> None:
    """Write a one-file model bundle (no optimizer state)."""
    atomic_save(bundle_payload(model, config, vocab), path)


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
    """Load a model bundle or a training checkpoint as a ready-to-run model."""
    bundle = bundle_from_payload(load_file(path), path)
    bundle.model.to(device)
    return bundle


def rng_state() -> dict[str, Any]:
    """The RNG states of Python, NumPy and torch (CPU and CUDA), as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    # torch.load returns lists where random.setstate needs tuples.
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


def average_state_dicts(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the model weights of several checkpoints or bundles."""
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        weights = load_file(path)["model"]
        for key, value in weights.items():
            if key in total:
                total[key] += value.double()
            else:
                total[key] = value.double().clone()
    first = load_file(paths[0])["model"]
    return {k: (v / len(paths)).to(first[k].dtype) for k, v in total.items()}


def average_models(paths: list[Path], output: str | Path) -> None:
    """Write a model bundle whose weights are the mean of those of ``paths`` (epochs of one run).

    The files must share the vocabulary and the model configuration; the first one's configs are
    stored. Refused with a :class:`CheckpointError` naming the file that differs.
    """
    if not paths:
        raise CheckpointError(output, "no models to average")
    first = load_bundle(paths[0])
    for path in paths[1:]:
        other = bundle_from_payload(load_file(path), path)
        if other.vocab.tokens != first.vocab.tokens or other.config.model != first.config.model:
            raise CheckpointError(path, f"another model than {paths[0]} (vocabulary or model config differ)")
    first.model.load_state_dict(average_state_dicts(list(paths)))
    save_model(output, first.model, first.config, first.vocab)


def export_model(checkpoint: str | Path, output: str | Path) -> None:
    """Write the model bundle of a training checkpoint (weights, configs, vocabulary; no optimizer)."""
    bundle = load_bundle(checkpoint)
    save_model(output, bundle.model, bundle.config, bundle.vocab)
