"""Scoring and manifest evaluation: corpus-level rates, report files, failures, CLI exit codes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jiwer
import numpy as np
import pytest
import torch
from conftest import build_manifest, sine, write_audio

from asr_s2s.checkpoint import load_bundle
from asr_s2s.cli import main
from asr_s2s.data import AsrDataset
from asr_s2s.errors import ManifestError
from asr_s2s.evaluate import Report, evaluate_manifest, score
from asr_s2s.features import LogMel
from asr_s2s.manifest import read_manifest
from asr_s2s.text import normalize
from asr_s2s.transcribe import Transcriber, load_model

SR = 16000


class Scripted(Transcriber):
    """A transcriber whose hypotheses are scripted by the length of the audio (samples at 16 kHz),
    and which keeps the features it was given."""

    def __init__(self, model_path: Path, script: dict[int, str]) -> None:
        super().__init__(load_bundle(model_path), "cpu", model_path=model_path)
        hop = self.config.features.hop_ms * SR // 1000
        self.script = {1 + samples // hop: text for samples, text in script.items()}  # by frames
        self.calls: list[int] = []
        self.seen: list[torch.Tensor] = []

    def decode_features(
        self, feats: torch.Tensor, lengths: torch.Tensor, beam_size: int | None = None
    ) -> list[str]:
        self.calls.append(len(lengths))
        self.seen += [f[:n] for f, n in zip(feats, lengths.tolist())]
        return [self.script[n] for n in lengths.tolist()]


def scripted_manifest(folder: Path, refs: list[str], extra: dict | None = None) -> tuple[Path, list[int]]:
    """A manifest of distinct-length utterances (0.3 s, 0.35 s, ...); returns it and their lengths."""
    seconds = [0.3 + 0.05 * i for i in range(len(refs))]
    path = build_manifest(folder, refs, seconds)
    if extra:
        records = [json.loads(line) | extra for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path, [int(round(s * SR)) for s in seconds]


REFS = ["One, two three FOUR.", "five", "Six seven"]
HYPS = ["one two three four", "nine", "six"]


@pytest.fixture
def scripted_report(tmp_path: Path, tiny_model_path: Path) -> tuple[Report, Scripted, Path]:
    manifest, lengths = scripted_manifest(tmp_path / "data", REFS, {"lang": "en"})
    transcriber = Scripted(tiny_model_path, dict(zip(lengths, HYPS)))
    report = evaluate_manifest(transcriber, manifest, tmp_path / "report", batch_size=2, progress=False)
    return report, transcriber, manifest


def test_corpus_rates_match_jiwer_and_are_not_means(scripted_report: tuple[Report, Scripted, Path]) -> None:
    report, transcriber, _ = scripted_report
    refs = [normalize(r) for r in REFS]
    assert report.wer == pytest.approx(jiwer.wer(refs, HYPS)) == pytest.approx(2 / 7)
    assert report.cer == pytest.approx(jiwer.cer(refs, HYPS))
    per_utt = [jiwer.wer(r, h) for r, h in zip(refs, HYPS)]
    assert report.wer != pytest.approx(sum(per_utt) / len(per_utt))
    s = report.score
    assert (s.substitutions, s.deletions, s.insertions, s.hits, s.ref_words) == (1, 1, 0, 5, 7)
    assert s.utterances == 3 and report.failed_utterances == 0
    assert transcriber.calls == [2, 1]  # batches of two, longest first


def test_report_files(scripted_report: tuple[Report, Scripted, Path]) -> None:
    report, _, manifest = scripted_report
    out = report.out_dir
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["per_utterance.jsonl", "alignment.txt", "summary.json", "predictions.jsonl"]
    )
    rows = [json.loads(line) for line in (out / "per_utterance.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["utt000", "utt001", "utt002"]
    assert [r["reference"] for r in rows] == ["one two three four", "five", "six seven"]
    assert [r["hypothesis"] for r in rows] == HYPS
    assert [r["wer"] for r in rows] == [0.0, 1.0, 0.5]
    assert [(r["substitutions"], r["deletions"], r["insertions"]) for r in rows] == [
        (0, 0, 0),
        (1, 0, 0),
        (0, 1, 0),
    ]
    alignment = (out / "alignment.txt").read_text()
    assert alignment.count("REF:") == 3 and "=== utt002 ===" in alignment and "SENTENCE" not in alignment
    summary = json.loads((out / "summary.json").read_text())
    assert summary["wer"] == pytest.approx(report.wer) and summary["failed_utterances"] == 0
    assert summary["utterances"] == 3 and summary["manifest"] == str(manifest)
    originals = [json.loads(line) for line in manifest.read_text().splitlines()]
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert predictions == [rec | {"pred_text": hyp} for rec, hyp in zip(originals, HYPS)]
    assert all(p["lang"] == "en" for p in predictions)
    table = report.table()
    for expected in ("WER", "28.57%", "CER", "1 / 1 / 0", "utterances", str(out / "summary.json")):
        assert expected in table


def test_bad_utterance_is_counted_as_deletions_not_fatal(
    tmp_path: Path, tiny_model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest, lengths = scripted_manifest(tmp_path / "data", ["one two", "three four five"])
    missing = tmp_path / "data" / "audio" / "gone.wav"
    with open(manifest, "a") as handle:
        handle.write(
            json.dumps({"audio_filepath": str(missing), "duration": 1.0, "text": "six", "id": "x"}) + "\n"
        )
    transcriber = Scripted(tiny_model_path, dict(zip(lengths, ["one two", "three four five"])))
    with caplog.at_level(logging.ERROR):
        report = evaluate_manifest(transcriber, manifest, tmp_path / "out", progress=False)
    assert report.failed_utterances == 1
    assert (report.score.deletions, report.score.ref_words) == (1, 6)
    assert report.wer == pytest.approx(1 / 6)
    assert str(missing) in caplog.text and "no such file" in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "out" / "per_utterance.jsonl").read_text().splitlines()]
    assert rows[2]["hypothesis"] == "" and rows[2]["wer"] == 1.0 and "no such file" in rows[2]["error"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["failed_utterances"] == 1
    assert "1 failed" in report.table()


def test_empty_reference_counts_insertions(tmp_path: Path, tiny_model_path: Path) -> None:
    manifest, lengths = scripted_manifest(tmp_path / "data", ["one", "..."])
    transcriber = Scripted(tiny_model_path, dict(zip(lengths, ["one", "two three"])))
    report = evaluate_manifest(transcriber, manifest, tmp_path / "out", progress=False)
    assert report.score.insertions == 2 and report.wer == pytest.approx(2.0)
    rows = [json.loads(line) for line in (tmp_path / "out" / "per_utterance.jsonl").read_text().splitlines()]
    assert rows[1]["wer"] is None and rows[1]["insertions"] == 2


def test_offsets_select_part_of_a_file(tmp_path: Path, tiny_model_path: Path) -> None:
    audio = write_audio(tmp_path / "long.wav", sine(300, 2.0))
    lines = [
        {"audio_filepath": "long.wav", "offset": 0.5, "duration": 0.25, "text": "one", "id": "a"},
        {"audio_filepath": "long.wav", "offset": 1.0, "duration": 0.5, "text": "two", "id": "b"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    transcriber = Scripted(tiny_model_path, {4000: "one", 8000: "six"})
    report = evaluate_manifest(transcriber, manifest, tmp_path / "out", progress=False)
    assert report.wer == pytest.approx(0.5) and audio.is_file()


def test_audio_extent_is_the_segment_training_reads(tmp_path: Path, tiny_model_path: Path) -> None:
    # A 2 s file whose second half is another tone: a line with offset 0 and a shorter duration
    # is the segment [0, duration], as in training (AsrDataset.load_features), not the whole file.
    write_audio(tmp_path / "long.wav", np.concatenate([sine(300, 1.0), sine(2000, 1.0)]))
    lines = [
        {"audio_filepath": "long.wav", "duration": 0.5, "text": "one", "id": "a"},
        {"audio_filepath": "long.wav", "offset": 0.25, "duration": 1.5, "text": "two", "id": "b"},
        {"audio_filepath": "long.wav", "offset": 1.25, "duration": 0.75, "text": "three", "id": "c"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    transcriber = Scripted(tiny_model_path, {8000: "one", 24000: "two", 12000: "three"})
    report = evaluate_manifest(transcriber, manifest, tmp_path / "out", batch_size=1, progress=False)
    assert report.wer == 0.0
    training = AsrDataset(read_manifest(manifest), transcriber.vocab, LogMel(transcriber.config.features))
    by_length = {len(f): f for f in transcriber.seen}
    for i in range(3):
        expected = training.load_features(i)
        torch.testing.assert_close(by_length[len(expected)], expected)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["audio_seconds"] == pytest.approx(0.5 + 1.5 + 0.75)


def test_parallel_audio_loading_gives_the_same_report(tmp_path: Path, tiny_model_path: Path) -> None:
    manifest = build_manifest(tmp_path / "data", ["one", "two", "three", "four"], [0.3, 0.5, 0.4, 0.6])
    transcriber = load_model(tiny_model_path, device="cpu")
    texts = []
    for workers in (0, 2):
        out = tmp_path / f"out{workers}"
        evaluate_manifest(transcriber, manifest, out, batch_size=2, num_workers=workers, progress=False)
        texts.append((out / "predictions.jsonl").read_text())
    assert texts[0] == texts[1]


def test_alignment_file_renders_jiwers_alignment(scripted_report: tuple[Report, Scripted, Path]) -> None:
    report, _, _ = scripted_report
    alignment = (report.out_dir / "alignment.txt").read_text()
    # jiwer's own rendering of the same pair, for the block's three lines.
    words = jiwer.process_words(["six seven"], ["six"])
    reference = jiwer.visualize_alignment(words, show_measures=False).splitlines()[2:5]
    block = alignment.split("=== utt002 ===\n\n")[1].splitlines()[:3]
    assert [line.rstrip() for line in block] == [line.rstrip() for line in reference]
    assert "=== SUMMARY ===" in alignment and "substitutions=1 deletions=1 insertions=0 hits=5" in alignment


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "no such manifest"),
        ("", "no utterances"),
        (
            '{"audio_filepath": "a.wav", "duration": 1.0, "text": "x"}\nnot json\n',
            r"m\.jsonl:2: invalid JSON",
        ),
    ],
)
def test_unreadable_manifest_raises(
    tmp_path: Path, tiny_model_path: Path, content: str | None, match: str
) -> None:
    manifest = tmp_path / "m.jsonl"
    if content is not None:
        manifest.write_text(content)
    with pytest.raises(ManifestError, match=match):
        evaluate_manifest(Scripted(tiny_model_path, {}), manifest, tmp_path / "out", progress=False)


def test_real_model_batching_does_not_change_hypotheses(tmp_path: Path, tiny_model_path: Path) -> None:
    manifest = build_manifest(
        tmp_path / "data", ["one", "two", "three", "four", "five"], [0.3, 0.5, 0.4, 0.7, 0.2]
    )
    transcriber = load_model(tiny_model_path, device="cpu")
    outputs = []
    for batch_size in (1, 3):
        out = tmp_path / f"out{batch_size}"
        evaluate_manifest(transcriber, manifest, out, beam_size=2, batch_size=batch_size, progress=False)
        outputs.append(
            [json.loads(line)["pred_text"] for line in (out / "predictions.jsonl").read_text().splitlines()]
        )
    assert outputs[0] == outputs[1]
    waves = [transcriber.chunks(tmp_path / "data" / "audio" / f"utt{i:03d}.wav") for i in range(5)]
    assert outputs[0] == transcriber.decode([next(w)[2] for w in waves], beam_size=2)


def test_cli_evaluate_exit_codes(
    tmp_path: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = build_manifest(tmp_path / "data", ["one two", "three"])
    args = ["evaluate", "--model", str(tiny_model_path), "--out", str(tmp_path / "out"), "--quiet"]
    assert main([*args, "--manifest", str(manifest), "--batch-size", "2", "--device", "cpu"]) == 0
    captured = capsys.readouterr().out
    assert "WER" in captured and "CER" in captured
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["utterances"] == 2
    assert main([*args, "--manifest", str(tmp_path / "missing.jsonl")]) == 1
    assert "missing.jsonl" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"audio_filepath": "x.wav"}\n')
    assert main([*args, "--manifest", str(tmp_path / "bad.jsonl")]) == 1
    assert "bad.jsonl:1" in capsys.readouterr().err
    assert main([*args, "--manifest", str(manifest), "--beam-size", "0"]) == 1
    bad_model = [
        "evaluate",
        "--model",
        str(tmp_path / "none.pt"),
        "--manifest",
        str(manifest),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(bad_model) == 1


def test_score_function() -> None:
    result = score(["Hello, World", "", "a b c"], ["hello world", "extra", "a x c d"])
    assert result.ref_words == 5 and result.utterances == 3
    assert (result.substitutions, result.deletions, result.insertions) == (1, 0, 2)
    assert result.wer == pytest.approx(3 / 5)
    assert score([""], [""]).wer == 0.0
    with pytest.raises(ValueError):
        score(["a"], [])


def test_score_uses_the_models_text_config() -> None:
    from asr_s2s.config import TextConfig

    refs, hyps = ["WELL-KNOWN DON\u2019T"], ["well known don't"]
    assert score(refs, hyps).wer == 0.0  # default: hyphens become spaces, the apostrophe variant is '
    kept = score(refs, hyps, TextConfig(hyphens="keep"))
    assert kept.wer == pytest.approx(jiwer.wer("well-known don't", "well known don't"))
