"""Manifests read on demand, datasets, the feature-cache policy, normalization statistics from a
sample, padding collate and the length-bucketed, frame-capped batch sampler.

Memory per training process does not grow with the corpus: a :class:`LazyManifest` keeps 16 bytes
per utterance (line offset and duration) and parses a line when its utterance is read; features are
computed in DataLoader workers unless the corpus is small enough to cache (:func:`use_feature_cache`);
the sampler needs only the manifest's durations.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, overload

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from asr_s2s.audio import load_audio
from asr_s2s.augment import Augmenter
from asr_s2s.config import FeatureConfig
from asr_s2s.errors import AsrError, AudioError, ManifestError, TrainingError
from asr_s2s.features import LogMel, RunningStats, pad_features
from asr_s2s.manifest import Utterance, iter_manifest_offsets, parse_line
from asr_s2s.text import Vocabulary

log = logging.getLogger(__name__)

# Manifest durations are rounded, or estimated from compressed headers: audio this much shorter
# (seconds, or this fraction of the duration) is accepted. A larger shortfall means a truncated file
# or a line pointing at the wrong file, whose transcript would not match the audio.
DURATION_SLACK = 0.1
# Utterances per transfer from a feature-caching worker process (AsrDataset.precompute), and per
# partial sum from a statistics worker (normalization_stats).
_PRECOMPUTE_CHUNK = 64
# Float16 log-mels at 100 frames/s: bytes of feature cache per hour of audio and mel bin.
_CACHE_BYTES_PER_HOUR_AND_BIN = 2 * 100 * 3600


class LazyManifest(Sequence[Utterance]):
    """The utterances of a manifest, parsed again from the file each time one is read.

    The whole file is validated once, as :func:`asr_s2s.manifest.iter_manifest` does (``on_error``
    the same); afterwards only each good line's byte offset and duration stay in memory (16 bytes
    per utterance, numpy arrays that forked DataLoader workers share without copying), where a list
    of :class:`Utterance` objects takes about 1 kB each. Slicing gives a lazy view.
    """

    def __init__(
        self, path: str | Path, on_error: Callable[[ManifestError], None] | None = None
    ) -> None:
        self.path = Path(path)
        self._base_dir = self.path.resolve().parent
        offsets: list[int] = []
        durations: list[float] = []
        for offset, utt in iter_manifest_offsets(self.path, on_error):
            offsets.append(offset)
            durations.append(utt.duration)
        if not offsets:
            raise ManifestError(self.path, "manifest has no utterances")
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.durations = np.asarray(durations, dtype=np.float64)
        self._handle: tuple[int, BinaryIO] | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    @overload
    def __getitem__(self, index: int) -> Utterance: ...

    @overload
    def __getitem__(self, index: slice) -> LazyManifest: ...

    def __getitem__(self, index: int | slice) -> Utterance | LazyManifest:
        if isinstance(index, slice):
            view = object.__new__(LazyManifest)
            view.path, view._base_dir, view._handle = self.path, self._base_dir, None
            view.offsets, view.durations = self.offsets[index], self.durations[index]
            return view
        offset = int(self.offsets[index])  # IndexError past the end ends iteration
        handle = self._file()
        handle.seek(offset)
        raw = handle.readline()
        if offset == 0:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            return parse_line(raw.decode("utf-8"), self._base_dir, self.path)
        except (ManifestError, UnicodeDecodeError):
            raise ManifestError(self.path, "changed since it was read (restart the command)") from None

    def _file(self) -> BinaryIO:
        # One open file per process: a handle inherited through fork would share its position.
        if self._handle is None or self._handle[0] != os.getpid():
            try:
                self._handle = (os.getpid(), open(self.path, "rb"))
            except OSError as err:
                raise ManifestError(self.path, f"cannot read ({err.strerror or err})") from None
        return self._handle[1]

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_handle"] = None
        return state

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle[0] == os.getpid():
            handle[1].close()

    @property
    def hours(self) -> float:
        """Total duration of the utterances, in hours."""
        return float(self.durations.sum()) / 3600.0


def durations_of(utterances: Sequence[Utterance]) -> np.ndarray:
    """Durations in seconds ``(utterances,)``, without parsing a :class:`LazyManifest` again."""
    if isinstance(utterances, LazyManifest):
        return utterances.durations
    return np.asarray([u.duration for u in utterances], dtype=np.float64)


def use_feature_cache(setting: str, hours: float, max_hours: float, n_mels: int) -> bool:
    """Whether to keep the features in memory (``train.cache_features``: ``true``, ``false`` or
    ``auto``: when the utterances total at most ``max_hours``, ``train.cache_max_hours``).

    A cached hour costs 57.6 MB per process at 80 mels (float16, 100 frames/s), on every rank.
    """
    if setting == "auto":
        cache = hours <= max_hours
        size_gb = hours * _CACHE_BYTES_PER_HOUR_AND_BIN * n_mels / 1e9
        log.info(
            "train.cache_features=auto: %.1f h of audio, %s (%.1f GB per process; limit %g h)",
            hours,
            "caching the features in memory" if cache else "computing the features on the fly",
            size_gb,
            max_hours,
        )
        return cache
    return setting == "true"


@dataclass
class Example:
    """One loaded utterance: ``feats`` ``(frames, n_mels)``, ``tokens`` ``(chars,)``; or an error."""

    index: int
    id: str
    feats: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    error: str | None = None


@dataclass
class Batch:
    """Padded batch: ``feats`` ``(batch, time, n_mels)``, ``tokens`` ``(batch, chars)`` padded with pad id."""

    ids: list[str]
    indices: list[int]
    feats: torch.Tensor
    feat_lens: torch.Tensor
    tokens: torch.Tensor
    token_lens: torch.Tensor
    errors: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def pin_memory(self) -> Batch:
        """A copy in page-locked memory (DataLoader ``pin_memory``), for asynchronous GPU copies."""
        return Batch(
            self.ids,
            self.indices,
            self.feats.pin_memory(),
            self.feat_lens.pin_memory(),
            self.tokens.pin_memory(),
            self.token_lens.pin_memory(),
            self.errors,
        )

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.ids,
            self.indices,
            self.feats.to(device, non_blocking=True),
            self.feat_lens.to(device),
            self.tokens.to(device, non_blocking=True),
            self.token_lens.to(device),
            self.errors,
        )


class AsrDataset(Dataset[Example]):
    """Utterances -> features and character ids; unreadable audio yields an :class:`Example` with ``error``.

    With :meth:`precompute` the features are decoded once and kept in memory as float16. With
    :meth:`set_augment` (training only, uncached) each waveform is perturbed before its features,
    drawn from the epoch of :meth:`set_epoch` and the utterance's index.
    """

    def __init__(self, utterances: Sequence[Utterance], vocab: Vocabulary, extractor: LogMel) -> None:
        self.utterances = utterances if isinstance(utterances, LazyManifest) else list(utterances)
        self.vocab = vocab
        self.extractor = extractor
        self._cache: list[torch.Tensor | None] | None = None
        self._cache_errors: dict[int, str] = {}
        self.augment: Augmenter | None = None
        self.epoch = 0

    def set_augment(self, augment: Augmenter | None) -> None:
        """Augment the waveforms (asr_s2s.augment). New draws every epoch need uncached features; attach
        it after the normalization statistics, which should describe the clean features."""
        if augment is not None and self._cache is not None:
            raise ValueError("waveform augmentation needs uncached features")
        self.augment = augment

    def set_epoch(self, epoch: int) -> None:
        """The epoch that the augmentation draws from. Call it before each epoch's DataLoader iterator
        is created: worker processes receive their copy of the dataset then."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def cached(self) -> bool:
        """Whether :meth:`precompute` holds the features in memory."""
        return self._cache is not None

    def load_features(self, index: int) -> torch.Tensor:
        """Log-mel ``(frames, n_mels)`` of one utterance; raises :class:`AsrError` for bad audio,
        including audio clearly shorter than the manifest's duration."""
        utt = self.utterances[index]
        sample_rate = self.extractor.cfg.sample_rate
        wave, _ = load_audio(
            utt.audio_filepath,
            sample_rate,
            utt.offset,
            utt.duration,  # as NeMo: a segment [offset, offset + duration], also when offset is 0
        )
        seconds = len(wave) / sample_rate
        if seconds < utt.duration - max(DURATION_SLACK, DURATION_SLACK * utt.duration):
            where = f" after offset {utt.offset:g} s" if utt.offset else ""
            raise AudioError(
                utt.audio_filepath,
                f"only {seconds:.2f} s of audio{where}, but the manifest says {utt.duration:g} s "
                "(truncated, or the wrong file?)",
            )
        if self.augment is not None:
            return self.augment(wave, self.epoch, index)
        return self.extractor(wave)

    def __getitem__(self, index: int) -> Example:
        utt = self.utterances[index]
        if self._cache is not None:
            feats = self._cache[index]
            if feats is None:
                return Example(index, utt.id, error=self._cache_errors.get(index, "unreadable"))
            feats = feats.float()
        else:
            try:
                feats = self.load_features(index)
            except AsrError as err:
                return Example(index, utt.id, error=str(err))
        tokens = torch.tensor(self.vocab.encode(utt.text), dtype=torch.long)
        return Example(index, utt.id, feats, tokens)

    def precompute(self, num_workers: int = 0, progress: bool = False) -> None:
        """Decode every utterance once and keep its features in memory (float16).

        With ``num_workers`` > 0, worker processes decode and extract chunks of utterances.
        """
        from tqdm import tqdm

        if self.augment is not None:
            raise ValueError("an augmented dataset cannot cache its features")
        cache: list[torch.Tensor | None] = [None] * len(self)
        loader = DataLoader(
            _Uncached(self),
            batch_size=_PRECOMPUTE_CHUNK,
            num_workers=num_workers,
            collate_fn=_FeatureChunk.join,
        )
        with tqdm(total=len(self), desc="features", disable=not progress or None, leave=False) as bar:
            for chunk in loader:
                self._cache_errors.update(chunk.errors)
                for index, feats in zip(chunk.indices, torch.split(chunk.feats, chunk.lengths)):
                    # A copy, so the cache does not pin the whole chunk (in shared memory, from a worker).
                    cache[index] = feats.clone()
                bar.update(len(chunk.indices) + len(chunk.errors))
        self._cache = cache


@dataclass
class _FeatureChunk:
    """Several utterances' float16 features end to end ``(sum of frames, n_mels)``: one transfer from a worker
    process instead of one per utterance, which would cost more than the extraction saves."""

    indices: list[int]
    lengths: list[int]
    feats: torch.Tensor
    errors: dict[int, str]

    @staticmethod
    def join(examples: Sequence[Example]) -> _FeatureChunk:
        good = [e for e in examples if e.feats is not None]
        return _FeatureChunk(
            [e.index for e in good],
            [e.feats.shape[0] for e in good],
            torch.cat([e.feats.half() for e in good]) if good else torch.zeros(0, 0, dtype=torch.half),
            {e.index: e.error or "unreadable" for e in examples if e.feats is None},
        )


class _Uncached(Dataset[Example]):
    def __init__(self, dataset: AsrDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Example:
        try:
            return Example(index, self.dataset.utterances[index].id, self.dataset.load_features(index))
        except AsrError as err:
            return Example(index, self.dataset.utterances[index].id, error=str(err))


@dataclass
class _PartialStats:
    """A chunk's feature sums (``count``, ``total``, ``total_sq``), from a statistics worker."""

    stats: RunningStats
    examples: int
    readable: int

    @staticmethod
    def of(examples: Sequence[Example]) -> _PartialStats:
        good = [e.feats for e in examples if e.feats is not None]
        stats = RunningStats(good[0].shape[1] if good else 0)
        for feats in good:
            stats.update(feats)
        return _PartialStats(stats, len(examples), len(good))


def sample_indices(count: int, limit: int, seed: int) -> np.ndarray:
    """``limit`` distinct indices of ``range(count)`` drawn from ``seed``, sorted; all when ``limit``
    is 0 or at least ``count``."""
    if limit <= 0 or limit >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def normalization_stats(
    dataset: AsrDataset, max_utterances: int, seed: int, num_workers: int = 0, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and std ``(n_mels,)`` over the frames of a random sample of ``max_utterances``
    utterances (all when 0), decoded in ``num_workers`` DataLoader workers.

    Unreadable utterances are left out; none readable is a :class:`TrainingError`. A few thousand
    utterances (hours of audio, millions of frames) fix the 80 means and deviations to well within
    what the model notices, at a cost that does not grow with the corpus. Waveform augmentation
    (:meth:`AsrDataset.set_augment`) is left out: the statistics describe the clean features.
    """
    indices = sample_indices(len(dataset), max_utterances, seed)
    cached = dataset._cache is not None
    # Statistics of the clean features: the waveform augmentation is detached while they are read
    # (workers copy the dataset when the loader starts, so they see it detached too).
    augment, dataset.augment = dataset.augment, None
    try:
        return _sample_stats(dataset, indices, 0 if cached else num_workers, progress)
    finally:
        dataset.augment = augment


def _sample_stats(
    dataset: AsrDataset, indices: np.ndarray, num_workers: int, progress: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    from tqdm import tqdm

    loader = DataLoader(
        Subset(dataset, indices.tolist()),
        batch_size=_PRECOMPUTE_CHUNK,
        num_workers=num_workers,
        collate_fn=_PartialStats.of,
    )
    total = RunningStats(dataset.extractor.cfg.n_mels)
    with tqdm(total=len(indices), desc="statistics", disable=not progress or None, leave=False) as bar:
        for part in loader:
            if part.readable:
                total.merge(part.stats)
            bar.update(part.examples)
    if total.count == 0:
        raise TrainingError(f"none of the {len(indices)} sampled training utterances could be read")
    return total.result()


def manifest_stats(
    manifest: str | Path, features: FeatureConfig, max_utterances: int, seed: int, num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """:func:`normalization_stats` of a manifest's utterances (``asr-s2s stats``); also returns the
    number of utterances sampled. Malformed manifest lines are skipped, as training skips them."""
    utterances = LazyManifest(manifest, on_error=lambda err: log.warning("skipping manifest line: %s", err))
    dataset = AsrDataset(utterances, Vocabulary.build([]), LogMel(features))
    mean, std = normalization_stats(dataset, max_utterances, seed, num_workers)
    return mean, std, len(sample_indices(len(dataset), max_utterances, seed))


def collate(examples: Sequence[Example], pad_id: int = Vocabulary.pad_id) -> Batch:
    """Pad a list of examples; those with errors are left out and listed in ``Batch.errors``."""
    good = [e for e in examples if e.error is None]
    errors = [(e.id, e.error) for e in examples if e.error is not None]
    if not good:
        empty = torch.zeros(0, 0, dtype=torch.long)
        return Batch(
            [],
            [],
            torch.zeros(0, 0, 0),
            torch.zeros(0, dtype=torch.long),
            empty,
            torch.zeros(0, dtype=torch.long),
            errors,
        )
    feats, feat_lens = pad_features([e.feats for e in good])
    token_lens = torch.tensor([len(e.tokens) for e in good], dtype=torch.long)
    tokens = torch.full((len(good), max(1, int(token_lens.max()))), pad_id, dtype=torch.long)
    for i, e in enumerate(good):
        tokens[i, : len(e.tokens)] = e.tokens
    return Batch([e.id for e in good], [e.index for e in good], feats, feat_lens, tokens, token_lens, errors)


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar-length utterances whose padded size stays under ``max_frames``
    (an utterance longer than that, but within ``max_utt_frames``, is a batch by itself).

    Each epoch the lengths are jittered, sorted into batches and the batch order shuffled, all from
    ``seed + epoch`` (or kept shortest first, for a curriculum). Under distributed training every
    rank gets the same number of batches (the list is padded by repeating the last batch) and its own
    share of them, and at each step the ranks' batches are neighbours in length. ``start_batch``
    skips the first batches of the current epoch, to resume mid-epoch.
    """

    def __init__(
        self,
        frames: Sequence[int],
        max_frames: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        max_utt_frames: int | None = None,
    ) -> None:
        self.frames = np.asarray(frames, dtype=np.int64)
        self.max_frames = max_frames
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        # Utterances over ``max_utt_frames`` (default: ``max_frames``) are skipped; one between the
        # two limits gets a batch of its own (e.g. dev scoring passes a huge ``max_utt_frames``).
        limit = max_utt_frames if max_utt_frames is not None else max_frames
        self.too_long = [i for i, f in enumerate(self.frames) if f > limit]
        if self.too_long:
            log.warning("skipping %d utterances longer than the limit", len(self.too_long))
        self._allowed = np.setdiff1d(np.arange(len(self.frames)), self.too_long)
        self.shortest_first = False

    def set_epoch(self, epoch: int, shortest_first: bool = False) -> None:
        """Select the epoch; ``shortest_first`` orders its batches by length (a curriculum)."""
        self.epoch = epoch
        self.shortest_first = shortest_first

    def _all_batches(self) -> list[list[int]]:
        indices = self._allowed
        if len(indices) == 0:
            return []
        rng = np.random.default_rng(self.seed + 1000003 * self.epoch)
        keys = self.frames[indices].astype(np.float64)
        if self.shuffle:
            keys = keys * rng.uniform(0.9, 1.1, size=len(keys))
        order = indices[np.argsort(keys, kind="stable")]
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for idx in order.tolist():
            longest_if = max(longest, int(self.frames[idx]))
            if current and longest_if * (len(current) + 1) > self.max_frames:
                batches.append(current)
                current, longest_if = [], int(self.frames[idx])
            current.append(idx)
            longest = longest_if
        if current:
            batches.append(current)
        # Under distributed training the ranks take turns through the list, and each step waits for
        # the slowest rank, whose time follows its batch's longest utterance (the recurrence is
        # sequential). So the length-sorted batches are grouped world_size at a time and whole groups
        # are shuffled: at every step all ranks get batches of about the same length. The last group
        # is filled up with its neighbours in length, so that a step never has a batch twice.
        size = self.world_size
        missing = -len(batches) % size
        if missing:
            last = len(batches) - (size - missing)
            fill = batches[max(0, last - missing) : last]
            batches += (fill + batches * size)[:missing]
        groups = [batches[i : i + size] for i in range(0, len(batches), size)]
        if self.shuffle and not self.shortest_first:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        return [batch for group in groups for batch in group]

    def batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch, before ``start_batch`` is applied."""
        return self._all_batches()[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()[self.start_batch :]

    def __len__(self) -> int:
        return max(0, len(self.batches()) - self.start_batch)


def num_frames(duration: float, hop_ms: float) -> int:
    """Feature frames of an utterance of ``duration`` seconds (exact for a whole number of samples)."""
    # The epsilon absorbs float error: 2.01 * 1000 / 10 is 200.99999999999997, not 201.
    return 1 + int(duration * 1000.0 / hop_ms + 1e-6)
