"""Tests for benchmarks/bench_peer.py (the SpeechBrain comparison) and its row in run_all.py: the
peer network's size matches the package's, and the row is skipped, saying why, without the peer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import benchlib  # noqa: E402
import run_all  # noqa: E402

from asr_s2s.model import Seq2Seq  # noqa: E402


def test_run_all_skips_a_missing_peer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(run_all.NEEDS, "peer", "no_such_module_for_asr_s2s_tests")
    reason = run_all.skip_reason("peer")
    assert reason is not None and "no_such_module_for_asr_s2s_tests" in reason and ".[bench]" in reason
    assert run_all.skip_reason("training") is None
    text = run_all.summary(["peer"], tmp_path, ((0.0,) * 3, (0.0,) * 3), {"peer": reason})
    assert f"({reason})" in text and "failed" not in text


@pytest.mark.parametrize("size", ["digits", "librispeech"])
def test_peer_network_matches_the_package_size(size: str) -> None:
    pytest.importorskip("speechbrain")
    import bench_peer

    config = benchlib.digits_config()[0] if size == "digits" else benchlib.librispeech_config()[0]
    config.model.attention = "location"
    vocab = 30
    ours = Seq2Seq(config.model, config.features.n_mels, vocab, ctc=True)
    brain = bench_peer.peer_brain(config, vocab, ours, "cpu")
    peer = brain.modules.model
    assert abs(
        bench_peer.count(peer) - bench_peer.count(ours)
    ) <= bench_peer.PARAM_TOLERANCE * bench_peer.count(peer)
    # Same encoder shape: SpeechBrain's LSTM is the package's nn.LSTM, parameter for parameter.
    assert bench_peer.count(peer.enc) == bench_peer.count(ours.encoder)
    # The recipe's forward and objectives run on a package batch and give a finite loss.
    from asr_s2s.data import Batch

    if size == "digits":
        feats = torch.randn(2, 40, config.features.n_mels)
        batch = Batch(
            ["a", "b"],
            [0, 1],
            feats,
            torch.tensor([40, 31]),
            torch.tensor([[5, 6, 7], [5, 6, 0]]),
            torch.tensor([3, 2]),
        )
        loss = brain.fit_batch(batch)
        assert torch.isfinite(loss)
