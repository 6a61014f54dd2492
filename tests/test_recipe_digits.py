"""The digits recipe end to end at toy size: prepare -> train -> evaluate -> transcribe -> report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FSDD_DIR, REPO

pytestmark = pytest.mark.skipif(not FSDD_DIR.is_dir(), reason="shared FSDD recordings not present")


def test_tiny_recipe_runs_every_stage(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               FSDD_DIR=str(FSDD_DIR), OMP_NUM_THREADS="1", NPROC="1")
    exp, data = tmp_path / "exp", tmp_path / "data"
    done = subprocess.run(
        ["bash", "recipes/digits/run.sh", "--config", "recipes/digits/conf/tiny.yaml", "--exp", str(exp),
         "--data", str(data), "--prepare-args",
         "--num-train 48 --num-dev 8 --num-test 8 --num-test-seen 6 --max-digits 2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    for stage in range(5):
        assert f"== stage {stage}:" in out
    assert "hypothesis:" in out and "reference:" in out
    summary = json.loads((exp / "eval_test" / "summary.json").read_text())
    assert summary["utterances"] == 8 and 0.0 <= summary["wer"]
    assert json.loads((exp / "eval_seen" / "summary.json").read_text())["utterances"] == 6
    # Trained on three speakers; the fourth is the unseen-speaker test.
    def speakers(split: str) -> set[str]:
        return {json.loads(line)["speaker"] for line in (data / f"{split}.jsonl").read_text().splitlines()}

    assert speakers("test") == {"nicolas"}
    assert speakers("train") == speakers("test_seen") == {"george", "jackson", "yweweler"}
    assert "unseen speaker nicolas" in out and "seen speakers, unheard recordings" in out
    for name in ("training.png", "wer_by_length.png", "example.png"):
        assert (exp / "report" / name).stat().st_size > 1000
    assert (exp / "model.pt").is_file() and (exp / "last.pt").is_file()


def test_tiny_length_study_compares_the_modes(tmp_path: Path) -> None:
    """study_length.sh at toy size: one model per attention mode, then the WER-by-length table."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               FSDD_DIR=str(FSDD_DIR), OMP_NUM_THREADS="1", PYTHON=sys.executable)
    exp, data = tmp_path / "exp", tmp_path / "data"
    done = subprocess.run(
        ["bash", "recipes/digits/study_length.sh", "--config", "recipes/digits/conf/tiny.yaml",
         "--exp", str(exp), "--data", str(data), "--max-digits", "3",
         "--prepare-args", "--num-train 24 --num-dev 6 --num-test 9", "--", "--set", "train.epochs=1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = json.loads((exp / "wer_by_length.json").read_text())
    assert set(table["parameters"]) == {"none", "location", "dot"}
    assert table["parameters"]["location"] > table["parameters"]["dot"] > table["parameters"]["none"]
    for mode in ("none", "location", "dot"):
        rows = table["wer_by_length"][mode]
        assert set(rows) <= {"1", "2", "3"} and sum(r["utterances"] for r in rows.values()) == 9
    assert "| digits | utterances |" in (exp / "wer_by_length.md").read_text()
    assert (exp / "wer_by_length.png").stat().st_size > 1000


def test_loso_report_tabulates_folds_and_plots(tmp_path: Path) -> None:
    """loso_report.py on hand-written fold summaries: per-fold rows, the mean and max, the plot."""
    exp = tmp_path / "loso"
    for spk, unseen, seen in (("ann", 0.30, 0.05), ("bo", 0.10, 0.01)):
        for name, wer in (("eval_unseen", unseen), ("eval_seen", seen)):
            (exp / spk / name).mkdir(parents=True)
            (exp / spk / name / "summary.json").write_text(json.dumps({"wer": wer}))
    (exp / "bo" / "train_seconds").write_text("42\n")
    (exp / "unscored").mkdir()
    done = subprocess.run(
        [sys.executable, "recipes/digits/loso_report.py", str(exp), "--plot", str(tmp_path / "p.png")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((exp / "loso.json").read_text())
    assert set(result["folds"]) == {"ann", "bo"}
    assert result["unseen_wer_mean"] == pytest.approx(20.0)
    assert result["unseen_wer_max"] == pytest.approx(30.0)
    assert result["seen_wer_mean"] == pytest.approx(3.0)
    assert "| bo | 10.00 | 1.00 | 42 |" in done.stdout and "| **mean** | **20.00** | 3.00 | |" in done.stdout
    assert (tmp_path / "p.png").stat().st_size > 1000
    # A loso.json kept from an earlier run (its folders gone) reads back to the same table.
    kept = tmp_path / "kept.json"
    shutil.copy(exp / "loso.json", kept)
    again = subprocess.run(
        [sys.executable, "recipes/digits/loso_report.py", str(kept), str(exp), "--labels", "old,new"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("| **mean** | **20.00** | 3.00 | |") == 2
    assert kept.read_text() == (exp / "loso.json").read_text()


def test_best_config_fits_its_pretrained_model() -> None:
    """conf/best.yaml starts from conf/so762_pretrain.yaml's model: the same front end and network
    (what train.init_from checks), at the default's sample rate."""
    from asr_s2s.checkpoint import FRONT_END_FIELDS
    from asr_s2s.config import load_config

    best = load_config(REPO / "recipes/digits/conf/best.yaml")
    pretrain = load_config(REPO / "recipes/digits/conf/so762_pretrain.yaml")
    for name in FRONT_END_FIELDS:
        section, key = name.split(".")
        assert getattr(getattr(best, section), key) == getattr(getattr(pretrain, section), key), name
    assert best.model == pretrain.model
    assert best.train.init_from == "exp/so762_pre8k/model.pt"
    default = load_config(REPO / "recipes/digits/conf/default.yaml")
    assert best.features.sample_rate == default.features.sample_rate


def test_best_config_without_its_pretrained_model_is_one_clear_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    missing = tmp_path / "pre" / "model.pt"
    args = ["train", "--config", str(REPO / "recipes/digits/conf/best.yaml"), "--train", str(manifest),
            "--dev", str(manifest), "--out", str(tmp_path / "exp"), "--set", f"train.init_from={missing}"]
    command = [sys.executable, "-m", "asr_s2s", *args]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert f"{missing}: no such file" in proc.stderr and "Traceback" not in proc.stderr
