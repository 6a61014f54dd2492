"""The files of an experiment directory: ``last.pt`` for exact resume, the best epochs, ``best.pt`` and
``model.pt`` (the best epoch, or the average of the best ``train.average_best`` when that scores better).

The file formats and atomic writes are :mod:`asr_s2s.checkpoint`'s; this module decides what goes
into each file and when.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asr_s2s.checkpoint import (
    atomic_save,
    average_state_dicts,
    bundle_payload,
    load_file,
    rng_state,
    save_model,
    set_rng_state,
)
from asr_s2s.config import Config
from asr_s2s.distributed import Process, barrier, gather_to_main
from asr_s2s.errors import CheckpointError
from asr_s2s.fileio import atomic_write
from asr_s2s.model import Seq2Seq
from asr_s2s.text import Vocabulary

log = logging.getLogger(__name__)

# Options that may change when a run is resumed; the rest must match the checkpoint.
RESUMABLE_OPTIONS = ("epochs", "max_steps", "log_every", "checkpoint_every", "num_workers", "dev_max_utts")


def resumed_config(requested: Config, stored: Config) -> Config:
    """The stored config, with the few options that may change on resume taken from ``requested``."""
    for name in RESUMABLE_OPTIONS:
        setattr(stored.train, name, getattr(requested.train, name))
    for section in ("features", "model", "train", "decode", "augment"):
        for key, value in vars(getattr(requested, section)).items():
            if value != getattr(getattr(stored, section), key):
                log.warning(
                    "--resume: keeping %s.%s=%r from the checkpoint (asked for %r)",
                    section,
                    key,
                    getattr(getattr(stored, section), key),
                    value,
                )
    return stored


class Checkpointer:
    """Reads and writes the checkpoints of ``out_dir`` for a process of a (possibly distributed) run.

    Only rank 0 writes; :meth:`save_last` is a collective (it gathers every rank's RNG state).
    ``best`` lists, best first, the kept epochs as ``{"epoch", "dev_wer", "dev_loss", "path"}``.
    """

    def __init__(self, out_dir: str | Path, dist: Process, keep_best: int = 1) -> None:
        self.out = Path(out_dir)
        self.dist = dist
        self.keep = max(1, keep_best)
        self.last_path = self.out / "last.pt"

    def load_last(self) -> dict[str, Any] | None:
        """The payload of ``last.pt`` to resume from, or None (with a warning) when there is none."""
        if not self.last_path.exists():
            if self.dist.main:
                log.warning("--resume: no checkpoint at %s, starting from scratch", self.last_path)
            return None
        payload = load_file(self.last_path)
        if payload["kind"] != "checkpoint":
            raise CheckpointError(self.last_path, "a model bundle, not a training checkpoint: cannot resume")
        log.info("resuming from %s (step %d)", self.last_path, payload["step"])
        return payload

    def resumed_config(self, requested: Config, payload: dict[str, Any]) -> Config:
        """The config stored in ``payload``, with the resumable options of ``requested``."""
        stored = Config.from_dict(payload["config"], str(self.last_path), strict=False)
        return resumed_config(requested, stored)

    def save_last(self, model: Seq2Seq, config: Config, vocab: Vocabulary, state: dict[str, Any]) -> None:
        """Write ``last.pt``: the model bundle, ``state`` (optimizer, counters, ...) and every rank's
        RNG states (``rng_per_rank``; ``rng`` is rank 0's). Every rank must call it."""
        rngs = gather_to_main(rng_state(), self.dist)
        if rngs is not None:
            payload = bundle_payload(model, config, vocab, kind="checkpoint")
            payload.update(state, rng=rngs[0], rng_per_rank=rngs)
            atomic_save(payload, self.last_path)
        # No rank goes on (or exits, after a SIGTERM) before the checkpoint is on disk: a gloo peer
        # that closes its connection while another rank still works can abort that rank.
        barrier(self.dist)

    def restore_rng(self, payload: dict[str, Any]) -> None:
        """Continue this rank's random streams (SpecAugment, dropout) from ``payload``.

        A checkpoint from fewer ranks, or from before they were stored per rank, gives the others
        rank 0's.
        """
        per_rank = payload.get("rng_per_rank") or []
        rank = self.dist.rank
        set_rng_state(per_rank[rank] if rank < len(per_rank) else payload["rng"])

    def keep_best(
        self,
        best: list[dict[str, Any]],
        epoch: int,
        metrics: dict[str, float],
        model: Seq2Seq,
        config: Config,
        vocab: Vocabulary,
    ) -> list[dict[str, Any]]:
        """Rank epoch ``epoch`` (1-based) among ``best`` by dev WER, then dev loss; save its model
        when it is among the kept ones (and as ``best.pt`` when first), delete the dropped ones, and
        return the new list."""
        entry = {
            "epoch": epoch,
            "dev_wer": metrics["dev_wer"],
            "dev_loss": metrics["dev_loss"],
            "path": f"epochs/epoch-{epoch:03d}.pt",
        }
        ranked = sorted([*best, entry], key=lambda b: (b["dev_wer"], b["dev_loss"]))
        if entry in ranked[: self.keep]:
            save_model(self.out / entry["path"], model, config, vocab)
        if ranked[0] is entry:
            save_model(self.out / "best.pt", model, config, vocab)
        for dropped in ranked[self.keep :]:
            (self.out / dropped["path"]).unlink(missing_ok=True)
        return ranked[: self.keep]

    def write_final(
        self,
        best: list[dict[str, Any]],
        model: Seq2Seq,
        config: Config,
        vocab: Vocabulary,
        evaluate: Callable[[], dict[str, float]],
    ) -> tuple[Path, dict[str, float] | None]:
        """Write ``model.pt``: the average of the kept epochs when there are several and it scores no
        worse on dev (``evaluate`` scores ``model`` as it stands), else ``best.pt``.

        Returns the path and the average's dev metrics (None when nothing was averaged); ``model``
        keeps its own weights.
        """
        model_path = self.out / "model.pt"
        best_path = self.out / "best.pt"
        if not best_path.exists():
            save_model(best_path, model, config, vocab)
        try:
            with open(best_path, "rb") as source, atomic_write(model_path, "wb") as target:
                shutil.copyfileobj(source, target)
        except OSError as err:
            raise CheckpointError(model_path, f"cannot write ({err.strerror or err})") from None
        paths = [self.out / b["path"] for b in best if (self.out / b["path"]).exists()]
        if self.keep <= 1 or len(paths) <= 1:
            return model_path, None
        own_weights = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(average_state_dicts(paths))
        averaged = evaluate()
        log.info(
            "average of %d best epochs: dev WER %.2f%% (best single %.2f%%)",
            len(paths),
            100 * averaged["dev_wer"],
            100 * best[0]["dev_wer"],
        )
        if (averaged["dev_wer"], averaged["dev_loss"]) <= (best[0]["dev_wer"], best[0]["dev_loss"]):
            save_model(model_path, model, config, vocab)
        model.load_state_dict(own_weights)
        return model_path, {"n": len(paths), **averaged}
