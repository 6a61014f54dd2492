"""Tests for asr_s2s.checkpoint: atomic saving, validated loading, bundles, RNG state, averaging."""

from __future__ import annotations

import os
import random
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_feats, tiny_model

from asr_s2s.checkpoint import (
    FORMAT_VERSION,
    atomic_save,
    average_state_dicts,
    bundle_from_payload,
    bundle_payload,
    export_model,
    load_bundle,
    load_file,
    rng_state,
    save_model,
    set_rng_state,
)
from asr_s2s.config import Config, apply_overrides
from asr_s2s.errors import AsrError, CheckpointError
from asr_s2s.model import Seq2Seq
from asr_s2s.text import Vocabulary

SMALL = [
    "model.encoder_hidden=8",
    "model.encoder_layers=1",
    "model.decoder_hidden=8",
    "model.decoder_layers=1",
    "model.embedding_dim=4",
    "features.n_mels=10",
]


def _bundle(seed: int = 0, ctc: bool = True) -> tuple[Seq2Seq, Config, Vocabulary]:
    config = apply_overrides(Config(), SMALL)
    vocab = Vocabulary.build(["hello world"])
    torch.manual_seed(seed)
    model = Seq2Seq(config.model, 10, len(vocab), ctc=ctc)
    model.set_normalization(torch.randn(10), torch.rand(10) + 0.5)
    return model.eval(), config, vocab


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---- atomic_save ---------------------------------------------------------------------------------


def test_atomic_save_writes_loadable_file_without_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.pt"
    atomic_save({"a": torch.arange(3)}, path)
    assert _listing(path.parent) == ["x.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(3))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_failed_save_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    atomic_save({"step": 1}, path)
    before = path.read_bytes()
    real_save = torch.save

    def half_then_fail(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 partial archive")
        raise RuntimeError("simulated crash in torch.save")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(RuntimeError, match="simulated"):
        atomic_save({"step": 2}, path)
    assert path.read_bytes() == before and _listing(tmp_path) == ["last.pt"]

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError) as info:
        atomic_save({"step": 3}, path)
    assert str(info.value).startswith(f"{path}: cannot write") and "No space left" in str(info.value)
    assert path.read_bytes() == before and _listing(tmp_path) == ["last.pt"]
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=True) == {"step": 1}


def test_unwritable_folder_is_checkpoint_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(CheckpointError) as info:
        atomic_save({"a": 1}, tmp_path / "m.pt")
    assert str(info.value).startswith(str(tmp_path / "m.pt")) and "Permission denied" in str(info.value)
    assert _listing(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_folder_is_checkpoint_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(CheckpointError, match="cannot write"):
            atomic_save({"a": 1}, folder / "m.pt")
    finally:
        folder.chmod(0o700)


def test_parent_is_a_file_is_checkpoint_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="cannot write"):
        atomic_save({"a": 1}, tmp_path / "file" / "m.pt")


# ---- load_file -----------------------------------------------------------------------------------


def _expect(path: Path, reason: str) -> None:
    with pytest.raises(CheckpointError) as info:
        load_file(path)
    err = info.value
    assert isinstance(err, AsrError)
    assert err.path == str(path) and str(err).startswith(f"{path}: ")
    assert reason in err.reason, err.reason
    assert "\n" not in str(err)


def test_load_file_errors(tmp_path: Path) -> None:
    model, config, vocab = _bundle()
    good = tmp_path / "good.pt"
    save_model(good, model, config, vocab)
    data = good.read_bytes()

    _expect(tmp_path / "missing.pt", "no such file")
    _expect(tmp_path, "not a file")
    (tmp_path / "empty.pt").write_bytes(b"")
    _expect(tmp_path / "empty.pt", "empty file")
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    _expect(tmp_path / "trunc.pt", "truncated or corrupt")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    _expect(tmp_path / "random.pt", "truncated or corrupt")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "foreign.pt")
    _expect(tmp_path / "foreign.pt", "not an asr-s2s model")
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    _expect(tmp_path / "tensor.pt", "not an asr-s2s model")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # pickled objects: never unpickled
    _expect(tmp_path / "module.pt", "not an asr-s2s model")
    payload = bundle_payload(model, config, vocab)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, tmp_path / "future.pt")
    _expect(tmp_path / "future.pt", f"format version {FORMAT_VERSION + 1} is not supported")
    del payload["format_version"]
    torch.save(payload, tmp_path / "noversion.pt")
    _expect(tmp_path / "noversion.pt", "format version None")


def test_inconsistent_payload_is_checkpoint_error(tmp_path: Path) -> None:
    model, config, vocab = _bundle()
    payload = bundle_payload(model, config, vocab)
    payload["config"]["model"]["encoder_hidden"] = 16  # weights are for 8
    with pytest.raises(CheckpointError, match="inconsistent model file"):
        bundle_from_payload(payload, tmp_path / "x.pt")
    payload = bundle_payload(model, config, vocab)
    payload["vocab"] = ["a", "b"]
    with pytest.raises(CheckpointError, match="inconsistent"):
        bundle_from_payload(payload)
    payload = bundle_payload(model, config, vocab)
    payload["config"]["model"]["encoder_layers"] = "many"  # wrong type in the stored config
    with pytest.raises(CheckpointError, match="inconsistent"):
        bundle_from_payload(payload)


def test_stored_config_with_unknown_options_still_loads(caplog: pytest.LogCaptureFixture) -> None:
    # Model files written by another version may carry options this one does not know: warn, load.
    model, config, vocab = _bundle()
    payload = bundle_payload(model, config, vocab)
    payload["config"]["model"]["no_such_option"] = 1
    payload["config"]["future_section"] = {"x": 1}
    with caplog.at_level("WARNING"):
        bundle = bundle_from_payload(payload, "old.pt")
    assert bundle.config == config
    assert "no_such_option" in caplog.text and "future_section" in caplog.text
    with torch.no_grad():
        assert torch.equal(_run(bundle.model), _run(model))


# ---- bundles -------------------------------------------------------------------------------------


def _run(model: Seq2Seq) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 20, 10, generator=gen)
    out = model(feats, torch.tensor([20, 13]), torch.randint(4, 10, (2, 5), generator=gen))
    return out.logits


@pytest.mark.parametrize("ctc", [True, False])
def test_bundle_round_trip_gives_identical_outputs(tmp_path: Path, ctc: bool) -> None:
    model, config, vocab = _bundle(ctc=ctc)
    path = tmp_path / "model.pt"
    save_model(path, model, config, vocab)
    bundle = load_bundle(path)
    assert bundle.config == config and bundle.vocab == vocab
    assert not bundle.model.training
    assert (bundle.model.ctc_head is None) == (not ctc)
    for key, value in model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[key], value), key
    with torch.no_grad():
        assert torch.equal(_run(bundle.model), _run(model))


def test_export_strips_training_state(tmp_path: Path) -> None:
    model, config, vocab = _bundle()
    payload = bundle_payload(model, config, vocab, kind="checkpoint")
    optimizer = torch.optim.AdamW(model.parameters())
    payload.update(optimizer=optimizer.state_dict(), step=7, rng=rng_state())
    atomic_save(payload, tmp_path / "last.pt")
    export_model(tmp_path / "last.pt", tmp_path / "model.pt")
    exported = load_file(tmp_path / "model.pt")
    assert exported["kind"] == "model" and "optimizer" not in exported and "rng" not in exported
    with torch.no_grad():
        assert torch.equal(_run(load_bundle(tmp_path / "model.pt").model), _run(model))
        assert torch.equal(_run(load_bundle(tmp_path / "last.pt").model), _run(model))


# ---- RNG state -----------------------------------------------------------------------------------


def _draw() -> tuple:
    return (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), torch.rand(3).tolist())


@pytest.mark.parametrize("through_file", [False, True])
def test_rng_state_round_trip(tmp_path: Path, through_file: bool) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gauss value in Python's state
    np.random.randn()  # and one in NumPy's
    state = rng_state()
    if through_file:
        atomic_save({"rng": state}, tmp_path / "rng.pt")
        state = torch.load(tmp_path / "rng.pt", weights_only=True)["rng"]
    expected = _draw()
    _draw()
    set_rng_state(state)
    assert _draw() == expected


# ---- averaging -----------------------------------------------------------------------------------


def test_average_state_dicts_equals_manual_mean(tmp_path: Path) -> None:
    paths, states = [], []
    for seed in range(3):
        model, config, vocab = _bundle(seed=seed)
        path = tmp_path / f"epoch-{seed}.pt"
        save_model(path, model, config, vocab)
        paths.append(path)
        states.append(model.state_dict())
    averaged = average_state_dicts(paths)
    assert set(averaged) == set(states[0])
    for key in states[0]:
        manual = torch.stack([s[key].double() for s in states]).mean(0).to(states[0][key].dtype)
        torch.testing.assert_close(averaged[key], manual, atol=1e-7, rtol=0)
        assert averaged[key].dtype == states[0][key].dtype
    # Loading the average into a model works.
    model, _, _ = _bundle()
    model.load_state_dict(averaged)
    assert average_state_dicts(paths[:1]).keys() == averaged.keys()
    for key, value in average_state_dicts(paths[:1]).items():
        assert torch.equal(value, states[0][key])


def test_average_models_cli_writes_the_mean_and_refuses_another_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from asr_s2s.checkpoint import load_bundle
    from asr_s2s.cli import main

    paths = []
    for seed in range(2):
        model, config, vocab = _bundle(seed=seed)
        paths.append(tmp_path / f"epoch-{seed}.pt")
        save_model(paths[-1], model, config, vocab)
    assert main(["average", str(tmp_path / "avg.pt"), *map(str, paths)]) == 0
    averaged = load_bundle(tmp_path / "avg.pt").model.state_dict()
    for key, value in average_state_dicts(paths).items():
        assert torch.equal(averaged[key], value)
    model, config, _ = _bundle(seed=3)
    save_model(tmp_path / "other.pt", model, config, Vocabulary.build(["other letters"]))
    assert main(["average", str(tmp_path / "bad.pt"), str(paths[0]), str(tmp_path / "other.pt")]) == 1
    err = capsys.readouterr().err
    assert err == f"asr-s2s: error: {tmp_path / 'other.pt'}: another model than {paths[0]} " \
        "(vocabulary or model config differ)\n"
    assert not (tmp_path / "bad.pt").exists()


def test_model_normalization_travels_with_the_bundle_and_old_files_mean_global(tmp_path: Path) -> None:
    feats, lens = random_feats([30, 12], 20)
    feats = feats * 2.0 + 1.0
    for mode in ("utterance", "utterance_mean", "global"):
        model, config, vocab = tiny_model(model__normalization=mode)
        model.set_normalization(torch.full((20,), 0.5), torch.full((20,), 2.0))
        save_model(tmp_path / f"{mode}.pt", model, config, vocab)
        loaded = load_bundle(tmp_path / f"{mode}.pt").model
        assert loaded.cfg.normalization == mode
        torch.testing.assert_close(loaded.normalize(feats, lens), model.normalize(feats, lens))
    # A model file from before the option: its config has no model.normalization.
    payload = load_file(tmp_path / "global.pt")
    del payload["config"]["model"]["normalization"]
    old = bundle_from_payload(payload).model
    assert old.cfg.normalization == "global"
    expected = (feats - 0.5) / 2.0 * (torch.arange(feats.shape[1])[None, :] < lens[:, None])[:, :, None]
    torch.testing.assert_close(old.normalize(feats, lens), expected)
