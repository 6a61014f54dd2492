"""Tests for asr_s2s.data: datasets, collate, padding invariance and the bucketed batch sampler."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import sine, write_audio
from torch.utils.data import DataLoader

from asr_s2s import data as data_module
from asr_s2s.audio import load_audio
from asr_s2s.config import FeatureConfig, ModelConfig
from asr_s2s.data import AsrDataset, BucketBatchSampler, Example, collate, num_frames, pad_features
from asr_s2s.features import LogMel
from asr_s2s.manifest import read_manifest
from asr_s2s.model import Seq2Seq
from asr_s2s.text import Vocabulary

FEATS = FeatureConfig(n_mels=20)


def _dataset(manifest: Path) -> AsrDataset:
    utts = read_manifest(manifest)
    return AsrDataset(utts, Vocabulary.build(u.text for u in utts), LogMel(FEATS))


# ---- collate ---------------------------------------------------------------------------------------


def _example(index: int, frames: int, tokens: list[int], error: str | None = None) -> Example:
    if error is not None:
        return Example(index, f"u{index}", error=error)
    feats = torch.arange(frames * 3, dtype=torch.float32).reshape(frames, 3) + 100 * index
    return Example(index, f"u{index}", feats, torch.tensor(tokens, dtype=torch.long))


def test_collate_pads_features_and_tokens() -> None:
    examples = [_example(0, 4, [5, 6, 7]), _example(1, 7, [8]), _example(2, 2, [9, 9, 9, 9, 10])]
    batch = collate(examples)
    assert batch.ids == ["u0", "u1", "u2"] and batch.indices == [0, 1, 2] and len(batch) == 3
    assert batch.feats.shape == (3, 7, 3)
    assert batch.feat_lens.tolist() == [4, 7, 2]
    assert batch.tokens.shape == (3, 5) and batch.token_lens.tolist() == [3, 1, 5]
    for i, e in enumerate(examples):
        n, m = e.feats.shape[0], len(e.tokens)
        assert torch.equal(batch.feats[i, :n], e.feats)
        assert torch.all(batch.feats[i, n:] == 0)
        assert torch.equal(batch.tokens[i, :m], e.tokens)
        assert torch.all(batch.tokens[i, m:] == Vocabulary.pad_id)
    assert batch.errors == []


def test_collate_leaves_out_errors() -> None:
    batch = collate([_example(0, 4, [5]), _example(1, 0, [], error="x.wav: broken"), _example(2, 3, [6, 7])])
    assert batch.ids == ["u0", "u2"] and batch.indices == [0, 2]
    assert batch.errors == [("u1", "x.wav: broken")]
    assert batch.feats.shape[0] == 2
    empty = collate([_example(1, 0, [], error="bad")])
    assert len(empty) == 0 and empty.errors == [("u1", "bad")]


def test_collate_empty_transcript_keeps_one_token_column() -> None:
    batch = collate([_example(0, 3, [])])
    assert batch.tokens.shape == (1, 1) and batch.token_lens.tolist() == [0]


def test_pad_features_values() -> None:
    a, b = torch.ones(2, 4), torch.full((5, 4), 2.0)
    out, lens = pad_features([a, b])
    assert out.shape == (2, 5, 4) and lens.tolist() == [2, 5]
    assert out[0, :2].eq(1).all() and out[0, 2:].eq(0).all() and out[1].eq(2).all()


# ---- padding invariance ----------------------------------------------------------------------------


def test_features_alone_equal_rows_in_padded_batch(tiny_manifest) -> None:
    manifest = tiny_manifest(["one", "two two", "three"], seconds=[0.31, 0.52, 0.17])
    dataset = _dataset(manifest)
    batch = collate([dataset[i] for i in range(3)])
    for i in range(3):
        alone = dataset[i].feats
        wave, _ = load_audio(dataset.utterances[i].audio_filepath, 16000)
        assert alone.shape[0] == LogMel(FEATS).num_frames(len(wave)) == int(batch.feat_lens[i])
        assert torch.equal(batch.feats[i, : alone.shape[0]], alone)
        assert torch.equal(alone, LogMel(FEATS)(wave))


def _model(**changes) -> Seq2Seq:
    cfg = ModelConfig(
        encoder_hidden=16, encoder_layers=2, decoder_hidden=24, decoder_layers=2, embedding_dim=8, **changes
    )
    torch.manual_seed(0)
    model = Seq2Seq(cfg, n_mels=20, vocab_size=12).eval()
    model.set_normalization(torch.randn(20), torch.rand(20) + 0.5)
    return model


@pytest.mark.parametrize(
    "changes",
    [{}, {"reverse_input": True}, {"bidirectional": False, "stack_frames": 1}, {"stack_frames": 4}],
    ids=["bi-stack3", "reversed", "uni-nostack", "stack4"],
)
def test_encoder_output_alone_equals_slice_of_padded_batch(changes: dict) -> None:
    model = _model(**changes)
    lengths = [37, 50, 12, 49]
    gen = torch.Generator().manual_seed(1)
    singles = [torch.randn(n, 20, generator=gen) * 2 - 3 for n in lengths]
    feats, lens = pad_features(singles)
    for i, n in enumerate(lengths):
        feats[i, n:] = 1e3  # garbage padding must not leak in
    with torch.no_grad():
        batched = model.encode(feats, lens)
        for i, single in enumerate(singles):
            alone = model.encode(single[None], torch.tensor([len(single)]))
            n = int(alone.lengths[0])
            assert int(batched.lengths[i]) == n == -(-len(single) // model.cfg.stack_frames)
            torch.testing.assert_close(batched.outputs[i, :n], alone.outputs[0], atol=1e-5, rtol=0)
            assert torch.all(batched.outputs[i, n:] == 0)
            for state_b, state_a in zip(batched.final, alone.final):
                torch.testing.assert_close(state_b[:, i], state_a[:, 0], atol=1e-5, rtol=0)


# ---- BucketBatchSampler ----------------------------------------------------------------------------


def _frames(n: int = 200, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(20, 400, size=n).tolist()


@pytest.mark.parametrize("max_frames", [400, 1000, 3000])
def test_sampler_respects_max_frames_and_covers_all(max_frames: int) -> None:
    frames = _frames()
    sampler = BucketBatchSampler(frames, max_frames, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        for b in batches:
            assert len(b) >= 1
            assert len(b) * max(frames[i] for i in b) <= max_frames or len(b) == 1
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(frames)))  # every index exactly once


def test_sampler_batches_group_similar_lengths() -> None:
    frames = _frames(300)
    sampler = BucketBatchSampler(frames, 2000, seed=0)
    batches = list(sampler)
    padded = sum(len(b) * max(frames[i] for i in b) for b in batches)
    assert padded < 1.3 * sum(frames)  # random batching would waste far more
    assert len(batches) < len(frames) / 3


def test_sampler_deterministic_per_seed_and_epoch() -> None:
    frames = _frames()
    a, b = BucketBatchSampler(frames, 1000, seed=5), BucketBatchSampler(frames, 1000, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)  # a new order each epoch
    c = BucketBatchSampler(frames, 1000, seed=6)
    c.set_epoch(2)
    assert list(a) != list(c)


def test_sampler_without_shuffle_is_sorted_and_epoch_independent() -> None:
    frames = _frames(50)
    sampler = BucketBatchSampler(frames, 1000, shuffle=False)
    first = list(sampler)
    flat = [i for b in first for i in b]
    assert [frames[i] for i in flat] == sorted(frames)
    sampler.set_epoch(4)
    assert list(sampler) == first


def test_sampler_skips_and_reports_too_long() -> None:
    frames = [100, 5000, 200, 301, 300]
    sampler = BucketBatchSampler(frames, 1000, seed=0, max_utt_frames=300)
    assert sampler.too_long == [1, 3]
    flat = sorted(i for b in sampler for i in b)
    assert flat == [0, 2, 4]
    # Without max_utt_frames the batch cap is the limit.
    assert BucketBatchSampler(frames, 1000).too_long == [1]
    assert BucketBatchSampler(frames, 250).too_long == [1, 3, 4]


def test_sampler_utterance_longer_than_cap_gets_its_own_batch() -> None:
    # Dev scoring passes a huge max_utt_frames: nothing may be skipped; the long ones go alone.
    frames = [100, 5000, 200, 301, 300, 90]
    sampler = BucketBatchSampler(frames, 250, shuffle=False, max_utt_frames=10**9)
    assert sampler.too_long == []
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) * max(frames[i] for i in b) <= 250 or len(b) == 1
    assert [1] in batches and [3] in batches and [4] in batches


def test_sampler_shortest_first_for_curriculum() -> None:
    frames = _frames(200)
    sampler = BucketBatchSampler(frames, 1000, seed=1)
    sampler.set_epoch(0, shortest_first=True)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(200))
    # Sorted by jittered length (x0.9..1.1): each batch is no longer than the next allows.
    for a, b in zip(batches, batches[1:]):
        assert max(frames[i] for i in a) * 0.9 <= min(frames[i] for i in b) * 1.1
    assert batches[0] != batches[-1] and max(frames[i] for i in batches[0]) < 100
    # Later epochs are shuffled again.
    sampler.set_epoch(1)
    longest = [max(frames[i] for i in b) for b in sampler]
    assert longest != sorted(longest)
    assert sorted(i for b in sampler for i in b) == list(range(200))


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("n", [1, 7, 100])
def test_sampler_distributed_sharding(world_size: int, n: int) -> None:
    frames = _frames(n, seed=n)
    for epoch in (0, 1):
        per_rank = []
        for rank in range(world_size):
            sampler = BucketBatchSampler(frames, 600, seed=9, rank=rank, world_size=world_size)
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
        counts = {len(b) for b in per_rank}
        assert len(counts) == 1 and counts.pop() >= 1  # same number of steps on every rank
        covered = {i for batches in per_rank for b in batches for i in b}
        assert covered == set(range(n))
        single = BucketBatchSampler(frames, 600, seed=9)
        single.set_epoch(epoch)
        total = len(list(single))
        assert len(per_rank[0]) == -(-total // world_size)
        # At every step the ranks hold different batches that are neighbours in length: within
        # world_size - 1 places of each other in the length-sorted order.
        ordered = BucketBatchSampler(frames, 600, seed=9)
        ordered.set_epoch(epoch, shortest_first=True)
        place = {tuple(b): i for i, b in enumerate(ordered)}
        for k in range(len(per_rank[0])):
            places = [place[tuple(batches[k])] for batches in per_rank]
            assert max(places) - min(places) <= world_size - 1
            if total >= world_size:
                assert len(set(places)) == world_size


def test_sampler_start_batch_resumes_mid_epoch() -> None:
    frames = _frames()
    sampler = BucketBatchSampler(frames, 1000, seed=2)
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.start_batch = 5
    assert list(sampler) == full[5:]
    assert len(sampler) == len(full) - 5
    resumed = BucketBatchSampler(frames, 1000, seed=2)
    resumed.set_epoch(1)
    resumed.start_batch = 5
    assert list(resumed) == full[5:]
    sampler.start_batch = len(full) + 3
    assert list(sampler) == [] and len(sampler) == 0


def test_sampler_empty_input() -> None:
    sampler = BucketBatchSampler([5000], 1000)
    assert list(sampler) == [] and len(sampler) == 0


def test_num_frames_matches_features() -> None:
    extractor = LogMel(FEATS)
    for samples in [1, 159, 160, 4800, 32160, 32480, 64320, 128480, 16000 * 7 + 3]:
        # Manifests store the duration rounded to 0.1 ms.
        for duration in (samples / 16000, round(samples / 16000, 4)):
            assert num_frames(duration, 10.0) == extractor.num_frames(samples), (samples, duration)


# ---- datasets and loaders ------------------------------------------------------------------------


def test_dataset_items(tiny_manifest) -> None:
    manifest = tiny_manifest(["hello world", "it's"], seconds=[0.3, 0.2])
    dataset = _dataset(manifest)
    assert len(dataset) == 2
    ex = dataset[1]
    assert ex.index == 1 and ex.id == "utt001" and ex.error is None
    assert ex.feats.shape == (1 + 3200 // 160, 20) and ex.feats.dtype == torch.float32
    assert dataset.vocab.decode(ex.tokens.tolist()) == "it's"


def test_segments_with_offset_read_only_their_window(tmp_path: Path) -> None:
    wave = np.concatenate([sine(300, 0.5), sine(2000, 0.5)])
    write_audio(tmp_path / "long.wav", wave, 16000, "FLOAT")
    lines = [
        {"audio_filepath": "long.wav", "duration": 0.5, "text": "a", "offset": 0.0, "id": "first"},
        {"audio_filepath": "long.wav", "duration": 0.5, "text": "b", "offset": 0.5, "id": "second"},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    dataset = _dataset(tmp_path / "m.jsonl")
    extractor = LogMel(FEATS)
    torch.testing.assert_close(dataset[0].feats, extractor(torch.from_numpy(wave[:8000])))
    torch.testing.assert_close(dataset[1].feats, extractor(torch.from_numpy(wave[8000:])))


def test_unreadable_audio_gives_error_examples(tiny_manifest) -> None:
    manifest = tiny_manifest(["good", "gone", "junk"])
    data = manifest.parent
    (data / "audio" / "utt001.wav").unlink()
    (data / "audio" / "utt002.wav").write_text("not audio")
    dataset = _dataset(manifest)
    assert dataset[0].error is None
    for i, name in ((1, "utt001.wav"), (2, "utt002.wav")):
        ex = dataset[i]
        assert ex.feats is None and ex.tokens is None
        assert name in ex.error
    batch = collate([dataset[i] for i in range(3)])
    assert batch.ids == ["utt000"] and [e[0] for e in batch.errors] == ["utt001", "utt002"]
    # Same through the cache, filled by worker processes.
    dataset.precompute(num_workers=2)
    assert dataset[0].error is None and "utt001.wav" in dataset[1].error and "utt002.wav" in dataset[2].error


@pytest.mark.parametrize("workers", [0, 2])
def test_precompute_equals_uncached_within_float16(tiny_manifest, workers: int, monkeypatch) -> None:
    manifest = tiny_manifest(["a", "b", "c", "d"], seconds=[0.2, 0.35, 0.1, 0.27])
    uncached = _dataset(manifest)
    cached = _dataset(manifest)
    monkeypatch.setattr(data_module, "_PRECOMPUTE_CHUNK", 3)  # two chunks: 3 utterances, then 1
    cached.precompute(num_workers=workers)
    for i in range(len(uncached)):
        ref, got = uncached[i], cached[i]
        assert got.feats.dtype == torch.float32 and got.feats.shape == ref.feats.shape
        torch.testing.assert_close(got.feats, ref.feats, atol=0, rtol=2**-11)
        assert torch.equal(got.feats, ref.feats.half().float())
        assert torch.equal(got.tokens, ref.tokens)


def test_dataset_pickles(tiny_manifest) -> None:
    dataset = _dataset(tiny_manifest(["abc", "cab"]))
    again = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(again[1].feats, dataset[1].feats)
    assert torch.equal(again[1].tokens, dataset[1].tokens)


def test_dataloader_with_two_workers(tiny_manifest) -> None:
    texts = [f"utt {i}" for i in range(8)]
    dataset = _dataset(tiny_manifest(texts, seconds=[0.1 + 0.03 * i for i in range(8)]))
    frames = [num_frames(u.duration, FEATS.hop_ms) for u in dataset.utterances]
    sampler = BucketBatchSampler(frames, 60, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=2)
    seen = []
    for batch in loader:
        assert int(batch.feat_lens.max()) * len(batch) <= 60
        for i, idx in enumerate(batch.indices):
            n = int(batch.feat_lens[i])
            assert torch.equal(batch.feats[i, :n], dataset[idx].feats)
        seen += batch.indices
    assert sorted(seen) == list(range(8))


# ---- corpus-size independence: lazy manifests, cache policy, sampled statistics ------------------


def test_lazy_manifest_reads_what_read_manifest_reads(tmp_path: Path) -> None:
    lines = [
        json.dumps({"audio_filepath": "a/x.wav", "duration": 1.5, "text": "héllo", "speaker": "s1"}),
        "",
        "{not json",
        json.dumps(
            {"audio_filepath": "/abs/y.flac", "duration": 2.25, "text": "b", "offset": 0.5, "id": "y"}
        ),
        json.dumps({"audio_filepath": "z.wav", "duration": 0.1, "text": ""}),
    ]
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode("utf-8") + b"\n")
    errors: list[str] = []
    lazy = data_module.LazyManifest(path, on_error=lambda e: errors.append(str(e)))
    assert errors == [
        f"{path}:3: invalid JSON (Expecting property name enclosed in double quotes at column 2)"
    ]
    expected = read_manifest(path, on_error=lambda e: None)
    assert len(lazy) == 3 and list(lazy) == expected
    assert lazy[-1] == expected[-1] and list(lazy[1:]) == expected[1:]
    np.testing.assert_array_equal(lazy.durations, [1.5, 2.25, 0.1])
    np.testing.assert_array_equal(data_module.durations_of(expected), lazy.durations)
    assert lazy.hours == pytest.approx(3.85 / 3600)
    assert lazy.offsets.nbytes + lazy.durations.nbytes == 16 * len(lazy)
    assert list(pickle.loads(pickle.dumps(lazy))) == expected
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(data_module.ManifestError, match="no utterances"):
        data_module.LazyManifest(tmp_path / "empty.jsonl")


def test_lazy_manifest_in_dataloader_workers(tiny_manifest) -> None:
    manifest = tiny_manifest([f"utt {i}" for i in range(6)], seconds=[0.1 + 0.02 * i for i in range(6)])
    eager = _dataset(manifest)
    lazy = AsrDataset(data_module.LazyManifest(manifest), eager.vocab, eager.extractor)
    assert isinstance(lazy.utterances, data_module.LazyManifest)
    loader = DataLoader(lazy, batch_size=2, collate_fn=collate, num_workers=2)
    seen = []
    for batch in loader:
        for i, idx in enumerate(batch.indices):
            n = int(batch.feat_lens[i])
            assert torch.equal(batch.feats[i, :n], eager[idx].feats)
        seen += batch.indices
    assert seen == list(range(6))


def test_batches_and_shards_come_from_durations_without_opening_audio(tmp_path: Path, monkeypatch) -> None:
    """The sampler and the datasets are built from a manifest whose audio does not exist; only a batch
    that is read opens its own files."""
    rng = np.random.default_rng(0)
    path = tmp_path / "m.jsonl"
    with open(path, "w") as handle:
        for i, d in enumerate(rng.uniform(1, 16, 500)):
            handle.write(
                json.dumps({"audio_filepath": f"missing/{i}.flac", "duration": d, "text": "a b"}) + "\n"
            )
    opened: list[str] = []
    monkeypatch.setattr(data_module, "load_audio", lambda p, *a, **k: opened.append(str(p)) or 1 / 0)
    utts = data_module.LazyManifest(path)
    dataset = AsrDataset(utts, Vocabulary.build(["a b"]), LogMel(FEATS))
    frames = [num_frames(d, FEATS.hop_ms) for d in data_module.durations_of(dataset.utterances)]
    shards = [BucketBatchSampler(frames, 4000, seed=1, rank=r, world_size=4) for r in range(4)]
    for s in shards:
        s.set_epoch(3)
    batches = [s.batches() for s in shards]
    assert opened == []
    assert len({len(b) for b in batches}) == 1
    assert {i for b in batches for batch in b for i in batch} == set(range(500))
    # A rank reads only the utterances of its own batches.
    with pytest.raises(ZeroDivisionError):
        dataset.load_features(batches[2][0][0])
    assert opened == [str(tmp_path / "missing" / f"{batches[2][0][0]}.flac")]


@pytest.mark.parametrize(
    ("setting", "hours", "expected"),
    [
        ("auto", 9.9, True),
        ("auto", 10.0, True),
        ("auto", 10.1, False),
        ("true", 500.0, True),
        ("false", 0.1, False),
    ],
)
def test_feature_cache_policy(setting: str, hours: float, expected: bool) -> None:
    assert data_module.use_feature_cache(setting, hours, max_hours=10.0, n_mels=80) is expected


def test_sample_indices() -> None:
    picked = data_module.sample_indices(1000, 50, seed=3)
    assert len(picked) == len(set(picked.tolist())) == 50 and list(picked) == sorted(picked)
    assert picked.min() >= 0 and picked.max() < 1000
    np.testing.assert_array_equal(picked, data_module.sample_indices(1000, 50, seed=3))
    assert not np.array_equal(picked, data_module.sample_indices(1000, 50, seed=4))
    np.testing.assert_array_equal(data_module.sample_indices(7, 0, seed=3), np.arange(7))
    np.testing.assert_array_equal(data_module.sample_indices(7, 9, seed=3), np.arange(7))


@pytest.mark.parametrize("workers", [0, 2])
def test_normalization_stats_of_a_sample_match_numpy(tiny_manifest, workers: int, monkeypatch) -> None:
    manifest = tiny_manifest([f"u{i}" for i in range(7)], seconds=[0.1 + 0.03 * i for i in range(7)])
    dataset = _dataset(manifest)
    monkeypatch.setattr(data_module, "_PRECOMPUTE_CHUNK", 2)  # several partial sums to merge
    for limit in (0, 4):
        picked = data_module.sample_indices(len(dataset), limit, seed=5)
        frames = np.concatenate([dataset[int(i)].feats.numpy() for i in picked]).astype(np.float64)
        mean, std = data_module.normalization_stats(dataset, limit, seed=5, num_workers=workers)
        np.testing.assert_allclose(mean.numpy(), frames.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(std.numpy(), frames.std(0), rtol=1e-4, atol=1e-5)
    # A sample of 4 of 7 utterances differs from the whole set.
    assert not torch.allclose(
        data_module.normalization_stats(dataset, 4, seed=5)[0],
        data_module.normalization_stats(dataset, 0, 5)[0],
    )


def test_normalization_stats_skip_unreadable_and_fail_when_none_read(tiny_manifest) -> None:
    manifest = tiny_manifest(["a", "b", "c"])
    dataset = _dataset(manifest)
    good = dataset[2].feats.double()
    for i in (0, 1):
        Path(dataset.utterances[i].audio_filepath).write_bytes(b"not audio")
    mean, std = data_module.normalization_stats(dataset, 0, seed=0)
    torch.testing.assert_close(mean, good.mean(0).float())
    Path(dataset.utterances[2].audio_filepath).write_bytes(b"")
    with pytest.raises(data_module.TrainingError, match="none of the 3 sampled training utterances"):
        data_module.normalization_stats(dataset, 0, seed=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batch_pins_memory_for_the_gpu() -> None:
    batch = collate([_example(0, 5, [4, 5]), _example(1, 3, [6])])
    pinned = batch.pin_memory()
    assert pinned.feats.is_pinned() and pinned.tokens.is_pinned()
    on_gpu = pinned.to("cuda")
    assert torch.equal(on_gpu.feats.cpu(), batch.feats) and on_gpu.feats.device.type == "cuda"


def test_lazy_manifest_changed_after_indexing_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    lines = [json.dumps({"audio_filepath": f"{i}.wav", "duration": 1.0, "text": "x" * 20}) for i in range(3)]
    path.write_text("\n".join(lines) + "\n")
    lazy = data_module.LazyManifest(path)
    path.write_text('{"audio_filepath": "0.wav", "duration": 1.0, "text": "a long line cut here')
    with pytest.raises(data_module.ManifestError, match="changed since it was read"):
        lazy[0]  # a new process (a worker) would open the new file as well
    with pytest.raises(IndexError):
        lazy[3]


def test_normalization_stats_leave_the_augmentation_out(tiny_manifest) -> None:
    dataset = _dataset(tiny_manifest(["a", "b", "c"]))
    clean = data_module.normalization_stats(dataset, 0, seed=0)
    shifted = lambda wave, epoch, index: dataset.extractor(wave) + 100.0  # noqa: E731
    dataset.augment = shifted
    for workers in (0, 2):
        got = data_module.normalization_stats(dataset, 0, seed=0, num_workers=workers)
        torch.testing.assert_close(got[0], clean[0])
    assert dataset.augment is shifted and float(dataset[0].feats.mean()) > 50  # restored afterwards
