"""Tests for asr_s2s.metrics_logger: JSONL records, TensorBoard scalars, disabled ranks, write errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asr_s2s.errors import TrainingError
from asr_s2s.metrics_logger import MetricsLogger


def test_records_are_appended_as_json_lines_and_mirrored_to_tensorboard(tmp_path: Path) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    logger = MetricsLogger(tmp_path)
    records = [
        {"kind": "train", "step": 1, "epoch": 0, "lr": 0.5, "ce": 2.0},
        {"kind": "train", "step": 2, "epoch": 0, "lr": 0.25, "ce": 1.5},
        {"kind": "dev", "step": 2, "epoch": 1, "dev_wer": 0.4, "note": "text is not a scalar"},
    ]
    for record in records:
        logger.log(record)
    logger.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["dev/dev_wer", "train/ce", "train/lr"]
    assert [(e.step, e.value) for e in acc.Scalars("train/lr")] == [(1, 0.5), (2, 0.25)]


def test_disabled_logger_writes_nothing(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, enabled=False)
    logger.log({"kind": "train", "step": 1, "epoch": 0, "ce": 1.0})
    logger.close()
    assert list(tmp_path.iterdir()) == []


def test_unwritable_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").mkdir()  # a folder where the file should be
    with pytest.raises(TrainingError, match="metrics.jsonl: cannot write"):
        MetricsLogger(tmp_path).log({"kind": "train", "step": 1, "epoch": 0})
