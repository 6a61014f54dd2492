"""The speechocean762 recipe: prepare.py's fixed speaker-disjoint dev split on a generated corpus, and
the whole recipe at toy size on a few utterances of the shared copy."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import REPO, SHARED_DATA, sine, write_audio

from asr_s2s.errors import AsrError
from asr_s2s.manifest import read_manifest

CORPUS = SHARED_DATA / "speechocean762"


def _recipe_module(name: str) -> ModuleType:
    """``recipes/speechocean762/NAME.py``, imported (the recipe folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"so762_{name}", REPO / f"recipes/speechocean762/{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


prepare = _recipe_module("prepare")
timeline = _recipe_module("timeline")


def fake_corpus(root: Path, speakers: list[str], split: str = "train", per_speaker: int = 2) -> None:
    """A corpus in speechocean762's layout: ``split/`` Kaldi tables, ``WAVE/SPEAKERnnnn/*.WAV``."""
    data = root / split
    data.mkdir(parents=True)
    lines: dict[str, list[str]] = {"wav.scp": [], "text": [], "utt2spk": [], "spk2gender": [], "spk2age": []}
    for n, spk in enumerate(speakers):
        lines["spk2gender"].append(f"{spk}\t{'fm'[n % 2]}")
        lines["spk2age"].append(f"{spk}\t{8 + 5 * (n % 4)}")
        for i in range(per_speaker):
            utt = f"{spk}{i:05d}"
            write_audio(root / f"WAVE/SPEAKER{spk}/{utt}.WAV", sine(200 + 10 * i, 0.2), 16000)
            lines["wav.scp"].append(f"{utt}\tWAVE/SPEAKER{spk}/{utt}.WAV")
            lines["text"].append(f"{utt}\tWORD{n} SAID {i}")
            lines["utt2spk"].append(f"{utt}\t{spk}")
    for name, rows in lines.items():
        (data / name).write_text("".join(r + "\n" for r in rows), encoding="utf-8")


def test_dev_split_is_the_fixed_speaker_list(tmp_path: Path) -> None:
    speakers = sorted(set(prepare.DEV_SPEAKERS) | {"1001", "1002", "1003"})
    fake_corpus(tmp_path / "corpus", speakers)
    fake_corpus(tmp_path / "corpus", ["7001", "7002"], split="test")
    stats = prepare.prepare(tmp_path / "corpus", tmp_path / "out")
    train = read_manifest(tmp_path / "out/train.jsonl")
    dev = read_manifest(tmp_path / "out/dev.jsonl")
    test = read_manifest(tmp_path / "out/test.jsonl")
    assert {u.speaker for u in dev} == set(prepare.DEV_SPEAKERS)
    assert {u.speaker for u in train} == {"1001", "1002", "1003"}
    assert {u.speaker for u in test} == {"7001", "7002"}
    assert len(dev) == 2 * len(prepare.DEV_SPEAKERS) and stats["dev"]["speakers"] == 12
    assert sum(stats["dev"]["gender"].values()) == 12 and sum(stats["dev"]["age"].values()) == 12
    assert all(u.audio_filepath.is_file() and u.duration == pytest.approx(0.2) for u in train + dev + test)
    assert json.loads((tmp_path / "out/splits.json").read_text())["test"]["utterances"] == 4


def test_missing_dev_speakers_and_shared_test_speakers_are_errors(tmp_path: Path) -> None:
    fake_corpus(tmp_path / "a", ["1001", "1002"])
    with pytest.raises(AsrError, match="dev speakers .* are not in utt2spk"):
        prepare.prepare(tmp_path / "a", tmp_path / "out")
    fake_corpus(tmp_path / "b", list(prepare.DEV_SPEAKERS) + ["1001"])
    fake_corpus(tmp_path / "b", ["1001"], split="test")
    with pytest.raises(AsrError, match="speakers also in train: 1001"):
        prepare.prepare(tmp_path / "b", tmp_path / "out")


@pytest.mark.skipif(not (CORPUS / "train/wav.scp").is_file(), reason="shared speechocean762 copy not present")
def test_dev_speakers_are_balanced_on_the_real_corpus() -> None:
    gender = dict(line.split() for line in (CORPUS / "train/spk2gender").read_text().splitlines())
    rows = (line.split() for line in (CORPUS / "train/spk2age").read_text().splitlines())
    age = {spk: int(years) for spk, years in rows}
    dev = prepare.DEV_SPEAKERS
    assert len(set(dev)) == 12 and set(dev) <= set(gender)
    women = sum(gender[s] == "f" for s in dev)
    assert abs(women / 12 - 67 / 125) < 0.1  # train has 67 women of 125
    children = sum(age[s] <= 12 for s in dev)
    total_children = sum(a <= 12 for a in age.values())
    assert abs(children / 12 - total_children / 125) < 0.1


@pytest.mark.skipif(not (CORPUS / "train/wav.scp").is_file(), reason="shared speechocean762 copy not present")
def test_tiny_recipe_runs_every_stage(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        OMP_NUM_THREADS="1",
        PYTHON=sys.executable,
    )
    exp, data = tmp_path / "exp", tmp_path / "data"
    done = subprocess.run(
        ["bash", "recipes/speechocean762/run.sh", "--corpus", str(CORPUS), "--config",
         "recipes/speechocean762/conf/tiny.yaml", "--exp", str(exp), "--data", str(data),
         "--prepare-args", "--limit 6"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    for stage in range(5):
        assert f"== stage {stage}:" in out
    assert "hypothesis:" in out and "reference:" in out and "dev WER" in out
    summary = json.loads((exp / "eval_dev/summary.json").read_text())
    assert summary["utterances"] == 6
    dev_speakers = {u.speaker for u in read_manifest(data / "dev.jsonl")}
    assert dev_speakers <= set(prepare.DEV_SPEAKERS)
    assert not dev_speakers & {u.speaker for u in read_manifest(data / "train.jsonl")}
    for name in ("training.png", "wer_by_length.png", "example.png"):
        assert (exp / "report" / name).stat().st_size > 1000
    assert (exp / "model.pt").is_file()


def test_timeline_reads_dev_scores_and_times_the_target(tmp_path: Path) -> None:
    import time

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tensorboard"))
    start = time.time()
    scores = [(100, 0.9, 0.5), (200, 0.5, 0.25), (300, 0.44, 0.21), (400, 0.40, 0.18), (500, 0.3, 0.1)]
    for i, (step, wer, cer) in enumerate(scores, start=1):
        writer.add_scalar("train/lr", 1.0, step - 50, walltime=start + 60 * i - 30)
        writer.add_scalar("dev/dev_wer", wer, step, walltime=start + 60 * i)
        writer.add_scalar("dev/dev_cer", cer, step, walltime=start + 60 * i)
    writer.close()
    points = timeline.timeline(tmp_path)
    assert [(p.epoch, p.step) for p in points] == [(1, 100), (2, 200), (3, 300), (4, 400), (5, 500)]
    assert [p.minutes for p in points] == pytest.approx([1, 2, 3, 4, 5], abs=0.05)
    hit = timeline.time_to_target(points, 0.45, 0.20)
    assert hit is not None and hit.epoch == 4  # epoch 3 meets the WER but not the CER
    assert timeline.time_to_target(points, 0.1, 0.1) is None
    assert timeline.main([str(tmp_path), "--json", str(tmp_path / "t.json")]) == 0
    assert json.loads((tmp_path / "t.json").read_text())["target"]["step"] == 400


def test_word_list_mixes_general_english_with_training_words(tmp_path: Path, monkeypatch) -> None:
    words = _recipe_module("word_list")
    monkeypatch.setattr(words, "general_english", lambda top: {"the": 0.75, "cat": 0.25})
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"audio_filepath": "a.wav", "duration": 1.0, "text": t}) + "\n"
            for t in ["THE Dog", "the"]
        )
    )
    out = tmp_path / "words.txt"
    words.main(["--out", str(out), "--manifest", str(manifest), "--manifest-weight", "0.5"])
    counts = {w: int(c) for w, c in (line.split() for line in out.read_text().splitlines())}
    # 0.5 * general + 0.5 * the manifest's own word frequencies (the 2/3, dog 1/3), in 1e9ths.
    assert counts == {"the": round((0.75 / 2 + 1 / 3) * 1e9), "cat": 125_000_000, "dog": round(1e9 / 6)}
