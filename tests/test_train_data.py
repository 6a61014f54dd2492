"""Tests for asr_s2s.train_data: manifests to datasets, vocabulary, statistics, sampler and loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from asr_s2s.distributed import Process
from asr_s2s.errors import ManifestError, TrainingError
from asr_s2s.features import LogMel
from asr_s2s.train_data import BadUtterances, build_training_data, feature_stats

TEXTS = ["one two", "three", "four five", "six", "seven eight"]


def _build(config, train: Path, dev: Path, strict: bool = False, **kwargs):
    return build_training_data(config, train, dev, Process(), BadUtterances(strict), **kwargs)


def test_builds_vocabulary_datasets_and_a_loader_over_every_utterance(tiny_manifest) -> None:
    train = tiny_manifest(TEXTS, [0.3, 0.4, 0.5, 0.3, 0.6], name="train.jsonl")
    dev = tiny_manifest(["nine", "zero one", "two"], 0.3, name="dev.jsonl", prefix="dev")
    config = tiny_config(train__dev_max_utts=2, train__max_frames=150)
    data = _build(config, train, dev)
    assert set(data.vocab.tokens) >= set("".join(TEXTS))
    assert len(data.train_set) == len(TEXTS)
    assert [u.text for u in data.dev_set.utterances] == ["nine", "zero one"]
    assert data.unknown_char_utterances == 1  # "zero one": no training text has a 'z'
    ids = [utt_id for batch in data.loader for utt_id in batch.ids]
    assert sorted(ids) == sorted(u.id for u in data.train_set.utterances)
    for batch in data.loader:  # the frame cap holds for the padded batch
        assert batch.feats.shape[0] * batch.feats.shape[1] <= 150


def test_given_vocabulary_is_kept(tiny_manifest) -> None:
    from asr_s2s.text import Vocabulary

    train = tiny_manifest(TEXTS, 0.3)
    vocab = Vocabulary.build(["abc"])
    data = _build(tiny_config(), train, train, vocab=vocab)
    assert data.vocab is vocab and data.unknown_char_utterances == 2 * len(TEXTS)  # train and dev


def test_malformed_lines_counted_or_fatal_with_strict(tiny_manifest) -> None:
    train = tiny_manifest(TEXTS, 0.3)
    with open(train, "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    data = _build(tiny_config(), train, train)
    assert data.skipped_lines == 2 and len(data.train_set) == len(TEXTS)  # once per manifest
    with pytest.raises(ManifestError):
        _build(tiny_config(), train, train, strict=True)


def test_unreadable_audio_is_recorded_once_or_fatal_with_strict(tiny_manifest) -> None:
    train = tiny_manifest(TEXTS, 0.3)
    first = json.loads(train.read_text().splitlines()[0])
    (train.parent / first["audio_filepath"]).write_bytes(b"not audio")
    bad = BadUtterances(strict=False)
    build_training_data(tiny_config(), train, train, Process(), bad)
    assert bad.ids == {"utt000"} and len(bad) == 1  # the same file in both manifests: counted once
    with pytest.raises(TrainingError, match="utt000"):
        build_training_data(tiny_config(), train, train, Process(), BadUtterances(strict=True))


def test_feature_stats_match_the_concatenated_features(tiny_manifest) -> None:
    train = tiny_manifest(TEXTS, [0.3, 0.4, 0.5, 0.3, 0.6])
    config = tiny_config(train__cache_features=False)
    data = _build(config, train, train)
    mean, std = feature_stats(data.train_set, config)
    extractor = LogMel(config.features)
    from asr_s2s.audio import load_audio

    frames = torch.cat(
        [extractor(load_audio(u.audio_filepath, 16000)[0]) for u in data.train_set.utterances]
    ).double()
    torch.testing.assert_close(mean, frames.mean(0).float(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(std, frames.std(0, unbiased=False).float(), atol=1e-3, rtol=1e-3)


def test_feature_stats_of_no_readable_audio_is_an_error(tiny_manifest) -> None:
    train = tiny_manifest(["one"], 0.3)
    first = json.loads(train.read_text())
    (train.parent / first["audio_filepath"]).write_bytes(b"")
    data = _build(tiny_config(train__cache_features=False), train, train)
    with pytest.raises(TrainingError, match="none of the 1 sampled training utterances"):
        feature_stats(data.train_set, tiny_config())


def test_two_ranks_share_the_batches_without_overlap(tiny_manifest) -> None:
    train = tiny_manifest(TEXTS * 2, 0.3)
    config = tiny_config(train__max_frames=70)
    seen = []
    for rank in (0, 1):
        data = build_training_data(config, train, train, Process(rank, 2, rank), BadUtterances(False))
        seen.append([i for batch in data.sampler for i in batch])
    assert len(seen[0]) == len(seen[1]) and not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) == set(range(len(TEXTS) * 2))
