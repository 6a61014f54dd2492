"""Tests for the data-preparation recipes: recipes/digits/prepare.py and recipes/librispeech/prepare.py."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import re
import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_s2s.download import DownloadError, verify_files
from asr_s2s.errors import AsrError, AudioError
from asr_s2s.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]
SHARED_FSDD = REPO.parent / "shared/data/fsdd/recordings"
SHARED_LIBRISPEECH = REPO.parent / "shared/data/librispeech-sample"


def _load(relpath: str, name: str) -> ModuleType:
    """Import a recipe script by path (recipes are not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / relpath)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: dataclasses look their module up in sys.modules.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


digits = _load("recipes/digits/prepare.py", "recipes_digits_prepare")
libri = _load("recipes/librispeech/prepare.py", "recipes_librispeech_prepare")

SMALL = {"train": 24, "dev": 8, "test": 8}
JUNK = ["README.md", "notes_0.wav", "3_alice_x.wav"]
# FSDD's convention for the test set (0-4), then dev (5-9) and train (the rest).
INDEX_RANGES = {"test": range(0, 5), "dev": range(5, 10), "train": range(10, 10_000)}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def fake_fsdd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An FSDD-like folder of 8 kHz sine-wave recordings, plus files that must be skipped."""
    root = tmp_path_factory.mktemp("fsdd")
    for speaker in ("alice", "bob"):
        for digit in range(10):
            for index in (0, 1, 2, 5, 6, 10, 11, 12):
                n = 1200 + 100 * index
                t = np.arange(n) / 8000
                tone = 0.3 * np.sin(2 * np.pi * (300 + 50 * digit) * t)
                sf.write(root / f"{digit}_{speaker}_{index}.wav", (tone * 32767).astype(np.int16), 8000)
    for name in JUNK:
        (root / name).write_bytes(b"not a recording")
    return root


@pytest.fixture(scope="module")
def corpora(fake_fsdd: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    """The small corpus built three times: with seed 0 in one process and in two, with seed 1."""
    built = {}
    for label, seed, jobs in (("a", 0, 1), ("b", 0, 2), ("c", 1, 1)):
        out = tmp_path_factory.mktemp(f"digits_{label}")
        built[label] = (out, digits.build_corpus(fake_fsdd, out, SMALL, max_digits=4, seed=seed, jobs=jobs))
    return built


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _check_corpus(out: Path, summary: object, counts: dict[str, int], max_digits: int) -> None:
    """Split disjointness, manifests, audio format and transcripts of a built corpus."""
    used: dict[str, set[Path]] = {}
    all_ids: set[str] = set()
    for split, n in counts.items():
        utts = read_manifest(out / f"{split}.jsonl")
        assert len(utts) == n == summary.utterances[split]
        sources = summary.sources[split]
        assert set(sources) == {u.id for u in utts}
        used[split] = {rec.path for recs in sources.values() for rec in recs}
        for utt in utts:
            recs = sources[utt.id]
            assert all(rec.index in INDEX_RANGES[split] for rec in recs)
            assert {rec.speaker for rec in recs} == {utt.speaker}
            words = utt.text.split()
            assert words == [digits.DIGIT_WORDS[rec.digit] for rec in recs]
            assert 1 <= len(words) <= max_digits
            assert re.fullmatch(rf"{utt.speaker}-{digits.CHAPTERS[split]}-\d{{4}}", utt.id)
            assert utt.audio_filepath.is_file()
            assert utt.audio_filepath.parent == out.resolve() / "LibriSpeech" / split / utt.speaker / str(
                digits.CHAPTERS[split]
            )
            info = sf.info(str(utt.audio_filepath))
            assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 16000, 1)
            assert utt.duration == pytest.approx(info.frames / 16000, abs=1e-4)
            # Edge silence (>= 0.2 s in all) and gaps surround the speech.
            assert utt.duration > 0.2 + sum(sf.info(str(rec.path)).duration for rec in recs)
        assert not all_ids & {u.id for u in utts}
        all_ids |= {u.id for u in utts}
    splits = list(used)
    for i, first in enumerate(splits):
        for second in splits[i + 1 :]:
            assert not used[first] & used[second], f"{first} and {second} share source recordings"


def test_scan_groups_by_index_and_skips_foreign_files(fake_fsdd: Path) -> None:
    by_split, skipped = digits.scan_fsdd(fake_fsdd)
    assert sorted(p.name for p in skipped) == sorted(JUNK)
    assert {rec.index for rec in by_split["test"]} == {0, 1, 2}
    assert {rec.index for rec in by_split["dev"]} == {5, 6}
    assert {rec.index for rec in by_split["train"]} == {10, 11, 12}
    assert by_split["train"] == sorted(by_split["train"], key=lambda rec: rec.path)


def test_generated_corpus_is_consistent(corpora: dict) -> None:
    out, summary = corpora["a"]
    _check_corpus(out, summary, SMALL, max_digits=4)
    assert sorted(p.name for p in summary.skipped) == sorted(JUNK)


def test_same_seed_is_byte_identical_other_seed_differs(corpora: dict) -> None:
    tree_a, tree_b, tree_c = (_tree(corpora[label][0]) for label in "abc")
    assert any(name.endswith(".flac") for name in tree_a)
    assert tree_a == tree_b
    assert tree_a["train.jsonl"] != tree_c["train.jsonl"]
    shared_flacs = [n for n in tree_a if n.endswith(".flac") and n in tree_c]
    assert any(tree_a[n] != tree_c[n] for n in shared_flacs)


def test_transcripts_match_manifest_and_librispeech_walker(corpora: dict) -> None:
    out, _ = corpora["a"]
    for split in SMALL:
        utts = read_manifest(out / f"{split}.jsonl")
        lines = {}
        for trans in (out / "LibriSpeech" / split).rglob("*.trans.txt"):
            for line in trans.read_text().splitlines():
                utt_id, text = line.split(" ", 1)
                lines[utt_id] = text
        assert lines == {u.id: u.text.upper() for u in utts}
        # The corpus is in LibriSpeech layout, so the LibriSpeech walker reads it back unchanged.
        report = libri.scan_subset(out / "LibriSpeech", split)
        assert [(u.id, u.text, u.duration) for u in report.utterances] == [
            (u.id, u.text, pytest.approx(u.duration, abs=1e-4)) for u in utts
        ]


def test_rebuilding_smaller_removes_stale_output(fake_fsdd: Path, tmp_path: Path) -> None:
    digits.build_corpus(fake_fsdd, tmp_path, {"dev": 6}, seed=3)
    digits.build_corpus(fake_fsdd, tmp_path, {"dev": 2}, seed=3)
    assert len(list((tmp_path / "LibriSpeech" / "dev").rglob("*.flac"))) == 2


def test_split_without_recordings_is_an_error(tmp_path: Path) -> None:
    for digit in range(3):
        sf.write(tmp_path / f"{digit}_carol_20.wav", np.full(800, 1000, dtype=np.int16), 8000)
    with pytest.raises(AsrError, match="no recordings for the test split"):
        digits.build_corpus(tmp_path, tmp_path / "out", {"train": 2, "test": 2})
    summary = digits.build_corpus(tmp_path, tmp_path / "out", {"train": 2, "dev": 0, "test": 0})
    assert summary.utterances == {"train": 2}


@pytest.mark.parametrize("jobs", [1, 2])
def test_unreadable_recording_is_an_error_naming_it(tmp_path: Path, jobs: int) -> None:
    bad = tmp_path / "fsdd" / "0_carol_10.wav"
    bad.parent.mkdir()
    bad.write_bytes(b"RIFF, but not really")
    with pytest.raises(AudioError, match=f"{re.escape(str(bad))}: cannot read audio"):
        digits.build_corpus(tmp_path / "fsdd", tmp_path / "out", {"train": 3}, jobs=jobs)


def test_bad_options_are_errors(fake_fsdd: Path, tmp_path: Path) -> None:
    with pytest.raises(AsrError, match="min_digits"):
        digits.build_corpus(fake_fsdd, tmp_path, SMALL, min_digits=3, max_digits=2)
    with pytest.raises(AsrError, match="unknown split"):
        digits.build_corpus(fake_fsdd, tmp_path, {"eval": 3})
    with pytest.raises(AsrError, match="not found"):
        digits.build_corpus(tmp_path / "nowhere", tmp_path, SMALL)
    with pytest.raises(AsrError, match="at least one job"):
        digits.build_corpus(fake_fsdd, tmp_path, SMALL, jobs=0)


def test_cli_builds_and_prints_summary(
    fake_fsdd: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--fsdd-dir", str(fake_fsdd), "--out", str(tmp_path), "--num-train", "3", "--num-dev", "2"]
    assert digits.main([*argv, "--num-test", "1", "--min-digits", "2", "--max-digits", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"train:\s+3 utterances", out) and re.search(r"test:\s+1 utterances", out)
    assert "skipped 3 file(s)" in out
    assert all(len(u.text.split()) == 2 for u in read_manifest(tmp_path / "train.jsonl"))


@pytest.mark.parametrize("factor", [0.85, 1.1])
def test_change_speed_scales_duration_and_pitch(factor: float) -> None:
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    fast = digits.change_speed(tone, factor)
    assert len(fast) == pytest.approx(16000 / factor, abs=2)
    spectrum = np.abs(np.fft.rfft(fast * np.hanning(len(fast))))
    peak_hz = np.argmax(spectrum) * 16000 / len(fast)
    assert peak_hz == pytest.approx(440 * factor, abs=2)


def test_train_speed_changes_train_only(fake_fsdd: Path, tmp_path: Path, corpora: dict) -> None:
    plain_out, plain = corpora["a"]
    out = tmp_path / "speed"
    fast = digits.build_corpus(fake_fsdd, out, SMALL, max_digits=4, train_speed=(0.8, 1.2))
    assert _tree(out / "LibriSpeech" / "dev") == _tree(plain_out / "LibriSpeech" / "dev")
    assert _tree(out / "LibriSpeech" / "test") == _tree(plain_out / "LibriSpeech" / "test")
    # Same recordings and transcripts, other durations.
    assert fast.sources["train"] == plain.sources["train"]
    before = {u.id: u.duration for u in read_manifest(plain_out / "train.jsonl")}
    after = {u.id: u.duration for u in read_manifest(out / "train.jsonl")}
    assert before.keys() == after.keys() and before != after
    with pytest.raises(AsrError, match="training speed range"):
        digits.build_corpus(fake_fsdd, out, SMALL, train_speed=(1.2, 0.8))


def test_extra_kaldi_digit_utterances_join_train_only(fake_fsdd: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "so"
    data = corpus / "train"
    data.mkdir(parents=True)
    texts = {"u1": "ZERO THREE", "u2": "WE CALL IT BEAR", "u3": "NINE"}
    for utt in texts:
        _flac(corpus / "WAVE" / f"{utt}.flac", 0.4)
    (data / "wav.scp").write_text("".join(f"{u}\tWAVE/{u}.flac\n" for u in texts))
    (data / "text").write_text("".join(f"{u}\t{t}\n" for u, t in texts.items()))
    (data / "utt2spk").write_text("u1 0001\nu2 0002\nu3 0003\n")
    extra = digits.kaldi_utterances(data)
    expected = [("u1", "zero three", "0001"), ("u3", "nine", "0003")]
    assert [(u.id, u.text, u.speaker) for u in extra] == expected
    counts = {"train": 5, "dev": 2, "test": 2}
    summary = digits.build_corpus(fake_fsdd, tmp_path / "out", counts, extra_train=extra, extra_copies=3)
    train = read_manifest(tmp_path / "out" / "train.jsonl")
    added = [u for u in train if u.speaker.startswith(digits.EXTRA_SPEAKER_PREFIX)]
    assert len(train) == 5 + 6 and summary.utterances["train"] == 11
    assert sorted(u.id for u in added) == [f"x0001-0-000{n}" for n in range(3)] + [
        f"x0003-0-000{n}" for n in range(3)
    ]
    assert {u.text for u in added if u.speaker == "x0001"} == {"zero three"}
    copies = [sf.read(u.audio_filepath)[0] for u in added if u.speaker == "x0001"]
    # Each copy: the 0.4 s recording between its own edge silences, with its own noise.
    assert all(len(c) > 0.4 * 16000 + 0.2 * 16000 for c in copies)
    assert not np.array_equal(copies[0][:3000], copies[1][:3000])
    for split in ("dev", "test"):
        assert not any(u.speaker.startswith("x") for u in read_manifest(tmp_path / "out" / f"{split}.jsonl"))
    report = libri.scan_subset(tmp_path / "out" / "LibriSpeech", "train")
    assert sorted(u.id for u in report.utterances) == sorted(u.id for u in train)
    with pytest.raises(AsrError, match="no utterance whose transcript is only digit words"):
        (data / "text").write_text("u2 WE CALL IT BEAR\n")
        digits.kaldi_utterances(data)


def test_extra_kaldi_all_sentences_normalized(tmp_path: Path) -> None:
    corpus = tmp_path / "so"
    data = corpus / "train"
    data.mkdir(parents=True)
    texts = {"u1": "ZERO THREE", "u2": "WE CALL IT \u2018BEAR\u2019, OK?", "u3": "IT'S NINE", "u4": "..."}
    for utt in texts:
        _flac(corpus / "WAVE" / f"{utt}.flac", 0.4)
    (data / "wav.scp").write_text("".join(f"{u}\tWAVE/{u}.flac\n" for u in texts))
    (data / "text").write_text("".join(f"{u}\t{t}\n" for u, t in texts.items()))
    every = digits.kaldi_utterances(data, digits_only=False)
    # The model's own text normalization (asr_s2s.text.normalize); a transcript that normalizes to
    # nothing is left out.
    assert [(u.id, u.text) for u in every] == [
        ("u1", "zero three"),
        ("u2", "we call it bear ok"),
        ("u3", "it's nine"),
    ]
    assert [u.id for u in digits.kaldi_utterances(data)] == ["u1"]


def test_band_limit_removes_what_fsdd_cannot_hold() -> None:
    t = np.arange(16000) / 16000
    low = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    high = np.sin(2 * np.pi * 6000 * t).astype(np.float32)
    out = digits.band_limit(low + high)
    assert out.shape == low.shape
    spectrum = np.abs(np.fft.rfft(out[1000:-1000] * np.hanning(14000)))
    bins = np.fft.rfftfreq(14000, 1 / 16000)
    at = lambda hz: spectrum[np.argmin(np.abs(bins - hz))]  # noqa: E731
    # The 1 kHz tone passes (FSDD's band), the 6 kHz one is gone (above its 4 kHz Nyquist).
    assert at(6000) < 1e-3 * at(1000)
    assert np.allclose(out[1000:-1000], low[1000:-1000], atol=0.02)


def test_extra_copies_get_their_own_speed(fake_fsdd: Path, tmp_path: Path) -> None:
    src = tmp_path / "src.flac"
    _flac(src, 1.0)
    extra = [digits.Utterance("u1", src, 1.0, "one", speaker="s")]
    counts = {"train": 2, "dev": 1, "test": 1}
    plain = digits.build_corpus(fake_fsdd, tmp_path / "a", counts, extra_train=extra, extra_copies=4)
    slow = digits.build_corpus(
        fake_fsdd, tmp_path / "b", counts, extra_train=extra, extra_copies=4, train_speed=(0.5, 0.55)
    )
    assert plain.utterances["train"] == slow.utterances["train"] == 6

    def lengths(out: Path) -> list[float]:
        return [u.duration for u in read_manifest(out / "train.jsonl") if u.speaker == "xs"]

    # 1 s of audio between 0.2-0.5 s of edge silence; played at 0.50-0.55x: 1.8-2 s of it.
    assert all(1.2 <= d <= 1.5 for d in lengths(tmp_path / "a"))
    assert all(1.8 + 0.2 <= d <= 2.0 + 0.5 for d in lengths(tmp_path / "b"))


@pytest.fixture
def fsdd_release(fake_fsdd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A generated FSDD release archive laid out like GitHub's, its checksum list (installed as the
    recipe's) and a tampered copy of the archive with one recording changed."""
    top = "free-spoken-digit-dataset-1.0.10"
    wavs = sorted(p for p in fake_fsdd.glob("*.wav") if digits._FSDD_NAME.fullmatch(p.name))
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in wavs))
    monkeypatch.setattr(digits, "FSDD_SHA256SUMS", sums)

    def archive(path: Path, tamper: str | None = None) -> Path:
        with tarfile.open(path, "w:gz") as tar:
            readme = tarfile.TarInfo(f"{top}/README.md")
            readme.size = 5
            tar.addfile(readme, io.BytesIO(b"FSDD\n"))
            for wav in wavs:
                data = wav.read_bytes()
                if wav.name == tamper:
                    data = data[:-2] + bytes([data[-2] ^ 1, data[-1]])
                info = tarfile.TarInfo(f"{top}/recordings/{wav.name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path

    return {
        "good": archive(tmp_path / "good.tar.gz"),
        "tampered": archive(tmp_path / "tampered.tar.gz", tamper="3_bob_11.wav"),
        "sums": sums,
    }


def _fake_fetch(monkeypatch: pytest.MonkeyPatch, served: Path | None) -> list[str]:
    """Replace the download with a copy of ``served`` (None: any download fails the test)."""
    calls: list[str] = []

    def fake(url: str, dest: Path, filename: str) -> Path:
        assert served is not None, "downloaded although the archive was in --download-dir"
        calls.append(url)
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(served, Path(dest) / filename)
        return Path(dest) / filename

    monkeypatch.setattr(digits, "fetch", fake)
    return calls


def test_download_verifies_every_recording(
    fsdd_release: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_fetch(monkeypatch, fsdd_release["good"])
    out = tmp_path / "corpus"
    assert digits.main(["--out", str(out), "--num-train", "4", "--num-dev", "2", "--num-test", "2"]) == 0
    assert calls == [digits.FSDD_URL]
    assert (out / "download" / digits.FSDD_ARCHIVE).is_file()
    assert len(read_manifest(out / "train.jsonl")) == 4
    # A second run finds the extracted copy, verifies it again and downloads nothing.
    _fake_fetch(monkeypatch, None)
    recordings = digits.fetch_fsdd(out / "download")
    assert len(list(recordings.glob("*.wav"))) == len(digits.read_checksums(fsdd_release["sums"]))


def test_tampered_archive_is_refused_naming_the_file(
    fsdd_release: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    _fake_fetch(monkeypatch, fsdd_release["tampered"])
    assert digits.main(["--out", str(tmp_path / "corpus"), "--num-train", "2"]) == 1
    err = capsys.readouterr().err
    assert "3_bob_11.wav: sha256 mismatch" in err and "refusing to use" in err
    assert not (tmp_path / "corpus" / "train.jsonl").exists()
    download = tmp_path / "corpus" / "download"
    # Nothing unverified is left to be picked up later: the next run extracts and refuses again.
    assert not (download / "free-spoken-digit-dataset-1.0.10").exists()
    with pytest.raises(DownloadError, match="3_bob_11.wav: sha256 mismatch"):
        digits.fetch_fsdd(download)


def test_archive_put_in_download_dir_is_verified_not_fetched(
    fsdd_release: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_fetch(monkeypatch, None)
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder, source in ((good, "good"), (bad, "tampered")):
        folder.mkdir()
        shutil.copy(fsdd_release[source], folder / digits.FSDD_ARCHIVE)
    assert digits.fetch_fsdd(good) == good / "free-spoken-digit-dataset-1.0.10" / "recordings"
    with pytest.raises(DownloadError, match=r"3_bob_11\.wav: sha256 mismatch"):
        digits.fetch_fsdd(bad)


def test_missing_or_unlisted_recording_is_refused(
    fsdd_release: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_fetch(monkeypatch, None)
    sums = fsdd_release["sums"]
    lines = sums.read_text().splitlines(keepends=True)
    shutil.copy(fsdd_release["good"], tmp_path / digits.FSDD_ARCHIVE)
    # A recording the archive lacks (listed first in name order: 0_alice_0.wav).
    sums.write_text("0" * 64 + "  0_alice_00.wav\n" + "".join(lines))
    with pytest.raises(DownloadError, match=r"0_alice_00\.wav: missing"):
        digits.fetch_fsdd(tmp_path)
    # A recording the list lacks would be used unverified.
    sums.write_text("".join(line for line in lines if "9_bob_12.wav" not in line))
    with pytest.raises(DownloadError, match=r"9_bob_12\.wav: not in SHA256SUMS"):
        digits.fetch_fsdd(tmp_path)


def test_recipe_carries_the_fsdd_checksum_list() -> None:
    sums = digits.read_checksums(digits.FSDD_SHA256SUMS)
    assert len(sums) == 3000
    speakers = {name.split("_")[1] for name in sums}
    assert speakers == {"george", "jackson", "lucas", "nicolas", "theo", "yweweler"}
    shared = REPO.parent / "shared/data/fsdd/SHA256SUMS-v1.0.10"
    if shared.is_file():
        assert digits.FSDD_SHA256SUMS.read_bytes() == shared.read_bytes()
    if SHARED_FSDD.is_dir():
        # The shared copy is four of the six speakers; every one of its files matches the list.
        present = {name: digest for name, digest in sums.items() if (SHARED_FSDD / name).is_file()}
        assert len(present) == 2000
        verify_files(SHARED_FSDD, present)


@pytest.mark.skipif(not SHARED_FSDD.is_dir(), reason="shared FSDD recordings not available")
def test_real_fsdd_small_corpus(tmp_path: Path) -> None:
    counts = {"train": 12, "dev": 6, "test": 6}
    first = digits.build_corpus(SHARED_FSDD, tmp_path / "a", counts, seed=7)
    assert first.skipped == []
    _check_corpus(tmp_path / "a", first, counts, max_digits=7)
    digits.build_corpus(SHARED_FSDD, tmp_path / "b", counts, seed=7, jobs=2)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")


# --- LibriSpeech ---------------------------------------------------------------------------------


def _flac(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * 16000), dtype=np.int16), 16000, format="FLAC", subtype="PCM_16")


@pytest.fixture
def fake_librispeech(tmp_path: Path) -> Path:
    """A dev-clean tree with one problem of each kind, in speaker folders that sort differently as text."""
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "100" / "200"
    for n, seconds in ((0, 1.0), (1, 1.5), (2, 0.5)):
        _flac(chapter / f"100-200-{n:04d}.flac", seconds)
    (chapter / "100-200.trans.txt").write_text(
        "100-200-0001 SECOND  ONE'S TEXT\n"
        "100-200-0000 FIRST TEXT\n"
        "100-200-0003 NO AUDIO FOR THIS\n"
        "100-200-0004\n"
        "999-1-0000 WRONG CHAPTER\n"
    )
    other = tmp_path / "LibriSpeech" / "dev-clean" / "19" / "7"
    _flac(other / "19-7-0000.flac", 2.0)
    (other / "19-7.trans.txt").write_text("19-7-0000 HELLO WORLD\n")
    return tmp_path


@pytest.mark.skipif(not SHARED_LIBRISPEECH.is_dir(), reason="shared LibriSpeech sample not available")
@pytest.mark.parametrize("root", [SHARED_LIBRISPEECH, SHARED_LIBRISPEECH / "LibriSpeech"])
def test_librispeech_real_utterance(root: Path, tmp_path: Path) -> None:
    reports = libri.prepare(root, ["dev-clean"], tmp_path)
    assert len(reports) == 1 and not reports[0].missing_audio and not reports[0].malformed
    (utt,) = read_manifest(tmp_path / "dev-clean.jsonl")
    trans = SHARED_LIBRISPEECH / "LibriSpeech/dev-clean/2412/153948/2412-153948.trans.txt"
    assert utt.id == "2412-153948-0000"
    assert utt.speaker == "2412"
    assert utt.duration == pytest.approx(11.66, abs=0.01)
    assert utt.text == trans.read_text().split(" ", 1)[1].strip().lower()
    assert utt.text.startswith("if the reader will excuse me")
    assert utt.audio_filepath.samefile(trans.parent / "2412-153948-0000.flac")


def test_librispeech_edge_cases(fake_librispeech: Path, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    (report,) = libri.prepare(fake_librispeech, ["dev-clean"], out)
    utts = read_manifest(out / "dev-clean.jsonl")
    assert [u.id for u in utts] == ["100-200-0000", "100-200-0001", "19-7-0000"]
    assert [u.text for u in utts] == ["first text", "second one's text", "hello world"]
    assert [u.duration for u in utts] == [1.0, 1.5, 2.0]
    assert [u.speaker for u in utts] == ["100", "100", "19"]
    assert report.missing_audio == ["100-200-0003"]
    assert [Path(p).name for p in report.missing_transcript] == ["100-200-0002.flac"]
    trans = fake_librispeech / "LibriSpeech/dev-clean/100/200/100-200.trans.txt"
    assert len(report.malformed) == 2
    assert report.malformed[0].startswith(f"{trans}:4:") and "no transcript" in report.malformed[0]
    assert report.malformed[1].startswith(f"{trans}:5:") and "999-1-0000" in report.malformed[1]


def test_librispeech_cli_reports_problems(
    fake_librispeech: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--root", str(fake_librispeech / "LibriSpeech"), "--subsets", "dev-clean", "--out", str(tmp_path)]
    assert libri.main(argv) == 0
    out = capsys.readouterr().out
    assert "dev-clean: 3 utterances" in out
    assert "1 missing audio" in out and "100-200-0003" in out
    assert "1 missing transcript" in out and "100-200-0002.flac" in out
    assert "2 malformed transcript lines" in out and "100-200.trans.txt:4:" in out


def test_librispeech_errors(fake_librispeech: Path, tmp_path: Path) -> None:
    with pytest.raises(AsrError, match="subset folder not found"):
        libri.prepare(fake_librispeech, ["test-other"], tmp_path)
    (fake_librispeech / "LibriSpeech" / "empty").mkdir()
    with pytest.raises(AsrError, match="no utterances"):
        libri.prepare(fake_librispeech, ["empty"], tmp_path)
    with pytest.raises(AsrError, match="unknown subset"):
        libri.download_subsets(["train-clean-999"], tmp_path)
    with pytest.raises(SystemExit):
        libri.main(["--subsets", "dev-clean", "--out", str(tmp_path)])


def test_librispeech_download_table_and_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    standard = ["dev-clean", "dev-other", "test-clean", "test-other"]
    standard += ["train-clean-100", "train-clean-360", "train-other-500"]
    assert sorted(libri.SUBSET_MD5) == sorted(standard)
    assert all(re.fullmatch(r"[0-9a-f]{32}", md5) for md5 in libri.SUBSET_MD5.values())
    downloads, extracts = [], []

    def fake_download(url: str, dest: Path, md5: str) -> Path:
        downloads.append((url, md5))
        return Path(dest) / url.rsplit("/", 1)[1]

    def fake_extract(archive: Path, dest: Path) -> Path:
        extracts.append(archive.name)
        return Path(dest)

    monkeypatch.setattr(libri, "download", fake_download)
    monkeypatch.setattr(libri, "extract", fake_extract)
    assert libri.download_subsets(["dev-clean", "test-clean"], tmp_path) == tmp_path
    mirror = "https://www.openslr.org/resources/12"
    assert downloads == [
        (f"{mirror}/dev-clean.tar.gz", "42e2234ba48799c1f50f24a7926300a1"),
        (f"{mirror}/test-clean.tar.gz", "32fa31d27d2e1cad72775fee3f4849a9"),
    ]
    assert extracts == ["dev-clean.tar.gz", "test-clean.tar.gz"]
    # An extracted subset is neither downloaded nor extracted again, even with its archive gone.
    monkeypatch.setattr(libri, "is_extracted", lambda archive, dest: archive == "dev-clean.tar.gz")
    libri.download_subsets(["dev-clean"], tmp_path)
    assert len(downloads) == 2 and len(extracts) == 2
