"""Tests for asr_s2s.checkpointer: last.pt round trip, best-k bookkeeping, the final model and averaging."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, tiny_model

from asr_s2s.checkpoint import average_state_dicts, load_file, save_model
from asr_s2s.checkpointer import Checkpointer, resumed_config
from asr_s2s.distributed import Process
from asr_s2s.errors import CheckpointError


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)["model"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k].to(a[k].dtype)) for k in a)


def test_save_last_and_load_last_round_trip(tmp_path: Path) -> None:
    model, config, vocab = tiny_model()
    ckpt = Checkpointer(tmp_path, Process())
    assert ckpt.load_last() is None
    ckpt.save_last(model, config, vocab, {"step": 7, "epoch": 1, "note": [1, 2]})
    payload = ckpt.load_last()
    assert payload["step"] == 7 and payload["note"] == [1, 2] and payload["kind"] == "checkpoint"
    assert _same(payload["model"], model.state_dict()) and len(payload["rng_per_rank"]) == 1
    assert not list(tmp_path.glob("*.tmp*"))  # no temporary file left behind


def test_load_last_refuses_a_model_bundle(tmp_path: Path) -> None:
    model, config, vocab = tiny_model()
    save_model(tmp_path / "last.pt", model, config, vocab)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        Checkpointer(tmp_path, Process()).load_last()


def test_restore_rng_takes_this_ranks_state(tmp_path: Path) -> None:
    model, config, vocab = tiny_model()
    Checkpointer(tmp_path, Process()).save_last(model, config, vocab, {"step": 0})
    expected = (random.random(), torch.rand(3))
    payload = load_file(tmp_path / "last.pt")
    other = dict(payload["rng_per_rank"][0], torch=torch.manual_seed(123).get_state())
    payload["rng_per_rank"] = [other, payload["rng_per_rank"][0]]
    Checkpointer(tmp_path, Process(1, 2, 1)).restore_rng(payload)  # rank 1 gets the saved state
    again = (random.random(), torch.rand(3))
    assert again[0] == expected[0] and torch.equal(again[1], expected[1])


def test_resumed_config_keeps_the_stored_options_but_the_resumable_ones() -> None:
    stored = tiny_config(train__epochs=2, train__lr=1e-3)
    requested = tiny_config(train__epochs=5, train__lr=9e-3)
    merged = resumed_config(requested, stored)
    assert merged.train.epochs == 5 and merged.train.lr == 1e-3


def test_keep_best_ranks_by_wer_then_loss_and_deletes_the_dropped(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path, Process(), keep_best=2)
    models = [tiny_model(seed=s) for s in range(4)]
    scores = [(0.5, 1.0), (0.3, 2.0), (0.3, 1.5), (0.6, 0.1)]
    best: list[dict] = []
    for epoch, ((model, config, vocab), (wer, loss)) in enumerate(zip(models, scores), 1):
        best = ckpt.keep_best(best, epoch, {"dev_wer": wer, "dev_loss": loss}, model, config, vocab)
    assert [b["epoch"] for b in best] == [3, 2]
    assert sorted(p.name for p in (tmp_path / "epochs").iterdir()) == ["epoch-002.pt", "epoch-003.pt"]
    assert _same(_weights(tmp_path / "best.pt"), models[2][0].state_dict())


@pytest.mark.parametrize("average_is_better", [True, False])
def test_write_final_uses_the_average_only_when_it_scores_no_worse(
    tmp_path: Path, average_is_better: bool
) -> None:
    ckpt = Checkpointer(tmp_path, Process(), keep_best=2)
    (m1, config, vocab), (m2, _, _) = tiny_model(seed=1), tiny_model(seed=2)
    best = ckpt.keep_best([], 1, {"dev_wer": 0.2, "dev_loss": 1.0}, m1, config, vocab)
    best = ckpt.keep_best(best, 2, {"dev_wer": 0.3, "dev_loss": 1.0}, m2, config, vocab)
    own = {k: v.clone() for k, v in m2.state_dict().items()}
    expected_average = average_state_dicts([tmp_path / b["path"] for b in best])
    seen: list[dict[str, torch.Tensor]] = []

    def evaluate() -> dict[str, float]:
        seen.append({k: v.clone() for k, v in m2.state_dict().items()})
        return {"dev_wer": 0.1 if average_is_better else 0.4, "dev_loss": 1.0}

    path, averaged = ckpt.write_final(best, m2, config, vocab, evaluate)
    assert _same(seen[0], expected_average)  # the average is what got scored
    assert averaged == {"n": 2, "dev_wer": 0.1 if average_is_better else 0.4, "dev_loss": 1.0}
    reference = expected_average if average_is_better else _weights(tmp_path / "best.pt")
    assert _same(_weights(path), reference)
    assert _same(m2.state_dict(), own)  # the model keeps its own weights


def test_write_final_without_averaging_copies_best(tmp_path: Path) -> None:
    model, config, vocab = tiny_model()
    ckpt = Checkpointer(tmp_path, Process(), keep_best=1)
    best = ckpt.keep_best([], 1, {"dev_wer": 0.2, "dev_loss": 1.0}, model, config, vocab)
    path, averaged = ckpt.write_final(best, model, config, vocab, lambda: pytest.fail("no dev pass needed"))
    assert averaged is None and path.read_bytes() == (tmp_path / "best.pt").read_bytes()
