"""Error types survive pickling (worker processes send them back) with their message and parts."""

from __future__ import annotations

import pickle

import pytest

from asr_s2s.errors import AsrError, AudioError, CheckpointError, ConfigError, ManifestError


@pytest.mark.parametrize(
    "error",
    [
        AudioError("a/b.wav", "empty recording"),
        ManifestError("m.jsonl", "missing 'text'", line=3),
        ManifestError("m.jsonl", "not found"),
        CheckpointError("model.pt", "not a model file"),
        ConfigError("c.yaml: unknown key"),
        AsrError("plain"),
    ],
)
def test_errors_pickle_round_trip(error: AsrError) -> None:
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)
    assert vars(again) == vars(error)
