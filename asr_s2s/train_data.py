"""The data side of training: manifests, vocabulary, datasets, normalization statistics, sampler, loader.

:func:`build_training_data` turns a config and two manifests into a :class:`TrainingData` that the
:class:`asr_s2s.train.Trainer` consumes; :func:`make_dataset` is the one place that builds an
:class:`~asr_s2s.data.AsrDataset` for training and dev scoring, and :func:`feature_stats` the one
place that computes the model's normalization statistics.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from asr_s2s.augment import Augmenter
from asr_s2s.config import Config
from asr_s2s.data import (
    AsrDataset,
    BucketBatchSampler,
    LazyManifest,
    collate,
    durations_of,
    normalization_stats,
    num_frames,
    use_feature_cache,
)
from asr_s2s.distributed import Process, from_main
from asr_s2s.errors import ManifestError, TrainingError
from asr_s2s.features import LogMel, read_stats
from asr_s2s.manifest import Utterance
from asr_s2s.text import Vocabulary

log = logging.getLogger(__name__)


class BadUtterances:
    """Unreadable utterances met so far: fatal with ``strict``, else warned about (the first 10) and
    counted once each."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.ids: set[str] = set()

    def add(self, utt_id: str, error: str) -> None:
        """Record that ``utt_id`` could not be read; raises :class:`TrainingError` when strict."""
        if self.strict:
            raise TrainingError(f"unreadable utterance {utt_id}: {error}")
        if utt_id not in self.ids:
            self.ids.add(utt_id)
            if len(self.ids) <= 10:
                log.warning("skipping utterance %s: %s", utt_id, error)

    def add_cache_errors(self, dataset: AsrDataset) -> None:
        """Record the utterances that :meth:`AsrDataset.precompute` could not read."""
        for index, error in dataset._cache_errors.items():
            self.add(dataset.utterances[index].id, error)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class TrainingData:
    """Everything the training loop reads: the vocabulary, both datasets, the training sampler and
    loader, and the counts of what was skipped while reading the manifests."""

    vocab: Vocabulary
    extractor: LogMel
    train_set: AsrDataset
    dev_set: AsrDataset
    sampler: BucketBatchSampler
    loader: DataLoader
    skipped_lines: int
    unknown_char_utterances: int


def read_training_manifest(path: str | Path, strict: bool) -> tuple[LazyManifest, int]:
    """Utterances of a manifest (read on access: 16 bytes each in memory); malformed lines are fatal
    with ``strict``, else warned and counted."""
    bad: list[ManifestError] = []

    def on_error(err: ManifestError) -> None:
        if strict:
            raise err
        bad.append(err)
        if len(bad) <= 10:
            log.warning("skipping manifest line: %s", err)

    utts = LazyManifest(path, on_error=on_error)
    if len(bad) > 10:
        log.warning("skipped %d malformed lines in %s in all", len(bad), path)
    return utts, len(bad)


def note_unknown_chars(vocab: Vocabulary, utterances: Iterable[Utterance]) -> int:
    """Warn about texts with characters outside the vocabulary (they become <unk>); returns their number."""
    chars: Counter[str] = Counter()
    count = 0
    for utt in utterances:
        unknown = vocab.unknown_chars(utt.text)
        if unknown:
            count += 1
            chars.update(unknown)
    if count:
        listed = " ".join(repr(c) for c, _ in chars.most_common(20))
        log.warning("%d texts have characters outside the vocabulary, read as <unk>: %s", count, listed)
    return count


def make_dataset(
    utterances: Sequence[Utterance], vocab: Vocabulary, extractor: LogMel, config: Config
) -> AsrDataset:
    """The dataset of training or dev utterances (features computed as :class:`AsrDataset` does)."""
    return AsrDataset(utterances, vocab, extractor)


def feature_stats(
    dataset: AsrDataset, config: Config, dist: Process | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and standard deviation ``(n_mels,)`` for the model's input normalization: read
    from ``train.stats_file`` when set, else computed from ``train.stats_utterances`` random
    utterances of ``dataset`` (unreadable ones left out) in ``train.num_workers`` workers. Under
    DDP rank 0 alone computes them and sends them to the others."""
    t = config.train

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        if t.stats_file:
            return read_stats(t.stats_file, config.features.n_mels)
        augment = dataset.augment
        dataset.set_augment(None)  # the statistics describe the clean features
        try:
            return normalization_stats(dataset, t.stats_utterances, t.seed, t.num_workers)
        finally:
            dataset.set_augment(augment)

    return from_main(compute, dist or Process())


def make_sampler(dataset: AsrDataset, config: Config, dist: Process) -> BucketBatchSampler:
    """This rank's length-bucketed batches of ``dataset`` (durations from the manifest)."""
    t, hop_ms = config.train, config.features.hop_ms
    return BucketBatchSampler(
        [num_frames(d, hop_ms) for d in durations_of(dataset.utterances)],
        t.max_frames,
        seed=t.seed,
        rank=dist.rank,
        world_size=dist.world,
        max_utt_frames=num_frames(t.max_duration, hop_ms),
    )


def make_loader(
    dataset: AsrDataset, sampler: BucketBatchSampler, config: Config, pin_memory: bool = False
) -> DataLoader:
    """Padded :class:`~asr_s2s.data.Batch` es of ``dataset`` in ``sampler``'s order; uncached
    features are computed in ``train.num_workers`` worker processes (``pin_memory`` for a GPU)."""
    t = config.train
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=0 if dataset.cached else t.num_workers,
        pin_memory=pin_memory,
        # A private generator keeps the loader from drawing on the global RNG (exact resume).
        generator=torch.Generator().manual_seed(t.seed),
    )


def build_training_data(
    config: Config,
    train_manifest: str | Path,
    dev_manifest: str | Path,
    dist: Process,
    bad: BadUtterances,
    vocab: Vocabulary | None = None,
    progress: bool = False,
    pin_memory: bool = False,
) -> TrainingData:
    """Read both manifests and build the datasets, the sampler and the loader.

    ``vocab`` (a resumed run's) is used when given, else built from the training texts. When
    ``train.cache_features`` says so (``auto``: both manifests total at most
    ``train.cache_max_hours``), the features of both sets are computed now; utterances that fail are
    recorded in ``bad``. ``train.dev_max_utts`` keeps the first utterances of the dev manifest.
    """
    t = config.train
    strict = bad.strict
    extractor = LogMel(config.features)
    train_utts, bad_train = read_training_manifest(train_manifest, strict)
    dev_utts, bad_dev = read_training_manifest(dev_manifest, strict)
    if t.dev_max_utts:
        dev_utts = dev_utts[: t.dev_max_utts]
    # A vocabulary built from the training texts holds all their characters: only the dev texts (and,
    # with a given vocabulary, the training texts) can have unknown ones. Each pass parses every line.
    checked = chain(train_utts, dev_utts) if vocab is not None else dev_utts
    if vocab is None:
        vocab = Vocabulary.build((u.text for u in train_utts), config.text)
    train_set = make_dataset(train_utts, vocab, extractor, config)
    dev_set = make_dataset(dev_utts, vocab, extractor, config)
    unknown = note_unknown_chars(vocab, checked)
    hours = float(durations_of(train_utts).sum() + durations_of(dev_utts).sum()) / 3600
    if use_feature_cache(t.cache_features, hours, t.cache_max_hours, config.features.n_mels):
        if config.augment.waveform:
            log.info(
                "augment: new perturbations every epoch, so the training features are computed on the "
                "fly in train.num_workers=%d workers; only the dev features are cached",
                t.num_workers,
            )
        else:
            train_set.precompute(t.num_workers, progress)
        dev_set.precompute(t.num_workers, progress)
    if config.augment.waveform:
        train_set.set_augment(Augmenter(config.augment, extractor, t.seed))
    bad.add_cache_errors(train_set)
    bad.add_cache_errors(dev_set)
    sampler = make_sampler(train_set, config, dist)
    loader = make_loader(train_set, sampler, config, pin_memory)
    return TrainingData(vocab, extractor, train_set, dev_set, sampler, loader, bad_train + bad_dev, unknown)
