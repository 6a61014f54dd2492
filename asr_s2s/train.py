"""The training loop: teacher-forced updates (SpecAugment, AMP, OOM splitting, DDP), a dev pass each
epoch, checkpoints, and clean stops on SIGINT/SIGTERM.

The parts it drives live elsewhere: the data in :mod:`asr_s2s.train_data`, the model, optimizer and
schedule in :mod:`asr_s2s.optim`, the checkpoint files in :mod:`asr_s2s.checkpointer`, the metrics
files in :mod:`asr_s2s.metrics_logger`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from asr_s2s.augment import spec_augment_scale
from asr_s2s.checkpoint import init_weights, read_pretrained
from asr_s2s.checkpointer import Checkpointer
from asr_s2s.config import Config
from asr_s2s.data import Batch, BucketBatchSampler, num_frames
from asr_s2s.decoding import decode
from asr_s2s.distributed import any_rank, from_main, init_distributed
from asr_s2s.errors import AsrError, TrainingError
from asr_s2s.evaluate import decode_dataset, score
from asr_s2s.features import SpecAugment
from asr_s2s.loss import cross_entropy, ctc_loss, teacher_forcing_io
from asr_s2s.metrics_logger import MetricsLogger
from asr_s2s.optim import LrSchedule, build_model, build_optimizer, ctc_only, planned_steps, wrap_ddp
from asr_s2s.text import Vocabulary
from asr_s2s.train_data import BadUtterances, build_training_data, feature_stats

log = logging.getLogger(__name__)


class Interrupted(AsrError):
    """Training stopped on request (SIGINT/SIGTERM) after writing a checkpoint."""


@dataclass
class TrainResult:
    """Where the outputs are and how the best model scored on dev."""

    out_dir: Path
    model_path: Path
    best_wer: float
    steps: int
    skipped_utterances: int
    skipped_steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_lines: int = 0  # malformed manifest lines
    unknown_char_utterances: int = 0  # texts with characters outside the vocabulary (read as <unk>)
    oom_skipped: int = 0  # utterances left out of a step because even alone they did not fit in memory


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Trains the model of one experiment directory: builds the parts, then runs the loop (:meth:`fit`)."""

    def __init__(
        self,
        config: Config,
        train_manifest: str | Path,
        dev_manifest: str | Path,
        out_dir: str | Path,
        resume: bool = False,
        strict: bool = False,
        device: str | None = None,
        progress: bool = True,
    ) -> None:
        self.out = Path(out_dir)
        self.dist, self.device = init_distributed(device)
        self.strict = strict
        self.progress = progress and self.dist.main
        self.checkpointer = Checkpointer(self.out, self.dist, config.train.average_best)
        self.last_path = self.checkpointer.last_path
        payload = self.checkpointer.load_last() if resume else None
        if payload is not None:
            config = self.checkpointer.resumed_config(config, payload)
        self.config = config
        t = config.train
        # A resumed run continues from its own checkpoint; init_from only seeds a new one.
        init = read_pretrained(t.init_from, config) if payload is None and t.init_from else None
        source = payload or init
        seed_everything(t.seed)  # the same initial weights on every rank
        self.bad = BadUtterances(strict)
        data = build_training_data(
            config,
            train_manifest,
            dev_manifest,
            self.dist,
            self.bad,
            vocab=Vocabulary(tuple(source["vocab"])) if source else None,
            progress=self.progress,
            pin_memory=self.device.type == "cuda",
        )
        self.data = data
        self.vocab, self.extractor = data.vocab, data.extractor
        self.train_set, self.dev_set = data.train_set, data.dev_set
        self.sampler, self.loader = data.sampler, data.loader
        self.skipped_lines = data.skipped_lines
        self.unknown_char_utts = data.unknown_char_utterances

        self.model = build_model(config, len(self.vocab))
        if init is not None:
            init_weights(self.model, init, t.init_from)
            if self.dist.main:
                log.info("initialized from %s (vocabulary, weights, normalization statistics)", t.init_from)
        elif payload is None:
            self.model.set_normalization(*feature_stats(self.train_set, config, self.dist))
        self.model.to(self.device)
        self.ddp = wrap_ddp(self.model, self.dist, self.device, decoder_unused=ctc_only(config))
        self.optimizer = build_optimizer(self.model, config)
        self.total_steps = planned_steps((self._epoch_len(e) for e in range(t.epochs)), t.max_steps)
        self.scheduler = LrSchedule(self.optimizer, config, self.total_steps)
        self.spec_augment = SpecAugment(config.features) if t.spec_augment else None
        self.metrics = MetricsLogger(self.out, enabled=self.dist.main)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.bad_steps = 0
        self.bad_in_row = 0
        self.oom_skipped = 0
        self.best: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self._stop = False
        # Dropout and SpecAugment differ across ranks; rank 0's streams are the ones checkpointed.
        seed_everything(t.seed + 7919 * self.dist.rank)
        if payload is not None:
            self._restore(payload)
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)

    # ---- setup helpers -------------------------------------------------------------------------
    def _epoch_len(self, epoch: int) -> int:
        self.sampler.set_epoch(epoch, self._shortest_first(epoch))
        return len(self.sampler.batches())

    def _shortest_first(self, epoch: int) -> bool:
        # Curriculum: short utterances (few digits, few words) are easy to squeeze through the
        # final-state bottleneck, so the first epochs go from the shortest batches to the longest.
        return epoch < self.config.train.curriculum_epochs

    @property
    def bad_utts(self) -> set[str]:
        """Ids of the utterances that could not be read so far."""
        return self.bad.ids

    def _restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.step = payload["step"]
        self.epoch = payload["epoch"]
        self.batch_in_epoch = payload["batch_in_epoch"]
        self.bad_steps = payload["bad_steps"]
        self.bad_in_row = payload.get("bad_in_row", 0)
        self.oom_skipped = payload.get("oom_skipped", 0)
        self.best = payload["best"]
        self.history = payload["history"]
        self.checkpointer.restore_rng(payload)

    # ---- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Write ``last.pt`` to continue exactly from this step; every rank calls it (a collective)."""
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "bad_steps": self.bad_steps,
            "bad_in_row": self.bad_in_row,
            "oom_skipped": self.oom_skipped,
            "best": self.best,
            "history": self.history,
        }
        self.checkpointer.save_last(self.model, self.config, self.vocab, state)

    # ---- one step ------------------------------------------------------------------------------
    def _losses(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        t = self.config.train
        feats = batch.feats
        if self.spec_augment is not None:
            a = self.config.augment
            scale = spec_augment_scale(self.step, a.specaug_start_step, a.specaug_ramp_steps)
            feats = self.spec_augment(feats, batch.feat_lens, scale)
        inputs, labels = teacher_forcing_io(batch.tokens, batch.token_lens)
        if t.token_dropout > 0:
            # Hiding some previous characters weakens the decoder's language-model shortcut, so it
            # must take the transcript from the encoder's final states.
            hide = torch.rand(inputs.shape, device=inputs.device) < t.token_dropout
            hide[:, 0] = False
            inputs = inputs.masked_fill(hide & (inputs != Vocabulary.pad_id), Vocabulary.unk_id)
        autocast = self.device.type == "cuda" and t.amp
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=autocast):
            out = self.ddp(feats, batch.feat_lens, inputs, t.scheduled_sampling, not ctc_only(self.config))
        parts: dict[str, float] = {}
        loss = torch.zeros((), device=feats.device)
        if out.logits is not None:
            ce = cross_entropy(out.logits, labels, t.label_smoothing)
            parts["ce"] = float(ce.detach())
            loss = ce
        if out.ctc_logits is not None:
            ctc = ctc_loss(out.ctc_logits, out.enc_lengths, batch.tokens, batch.token_lens)
            loss = (1 - t.ctc_weight) * loss + t.ctc_weight * ctc
            parts["ctc"] = float(ctc.detach())
        parts["loss"] = float(loss.detach())
        return loss, parts

    def _forward_backward(self, batch: Batch) -> dict[str, float]:
        """Accumulate the gradients of ``batch``; returns the logged losses, empty when nothing fit.

        After an out-of-memory error the gradients may hold part of a backward pass, so they are
        cleared and the batch is processed again with the failing piece halved (single process); a
        single utterance that does not fit is left out of the step and counted in ``oom_skipped``.
        """
        pieces = [(0, len(batch))]
        while pieces:
            kept = sum(stop - start for start, stop in pieces)
            logged: dict[str, float] = {}
            try:
                for failing in pieces:
                    start, stop = failing
                    weight = (stop - start) / kept
                    whole = (start, stop) == (0, len(batch))  # slicing would cost a device sync
                    loss, parts = self._losses(batch if whole else _slice(batch, start, stop))
                    (loss * weight).backward()
                    for key, value in parts.items():
                        logged[key] = logged.get(key, 0.0) + weight * value
                return logged
            except torch.OutOfMemoryError:
                self.optimizer.zero_grad(set_to_none=True)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.dist.world > 1:
                    # Skipping on one rank would leave the others waiting in the gradient all-reduce.
                    raise TrainingError(
                        f"out of memory on rank {self.dist.rank} with a batch of {len(batch)} utterances; "
                        "lower train.max_frames"
                    ) from None
                index = pieces.index(failing)
                if stop - start == 1:
                    self.oom_skipped += 1
                    log.warning("out of memory on utterance %s alone; left out of the step", batch.ids[start])
                    pieces[index : index + 1] = []
                else:
                    log.warning("out of memory on a batch of %d utterances; splitting it", stop - start)
                    middle = (start + stop) // 2
                    pieces[index : index + 1] = [(start, middle), (middle, stop)]
        return {}

    def train_step(self, batch: Batch) -> dict[str, float] | None:
        """One optimizer step; returns the logged values, or None when the step was skipped."""
        t = self.config.train
        self.ddp.train()
        self.optimizer.zero_grad(set_to_none=True)
        parts = self._forward_backward(batch)
        if not parts:  # no utterance of the batch fit in memory: nothing to learn from
            return None
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        # Gradients are identical on all ranks after DDP's all-reduce, so all ranks decide alike.
        if not torch.isfinite(grad_norm) or not all(math.isfinite(v) for v in parts.values()):
            self.bad_steps += 1
            self.bad_in_row += 1
            log.warning("non-finite loss or gradient at step %d; step skipped", self.step)
            if self.bad_in_row >= t.max_bad_steps:
                raise TrainingError(
                    f"{self.bad_in_row} steps in a row had a non-finite loss or gradient; "
                    "lower train.lr or check the data"
                )
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.bad_in_row = 0
        self.optimizer.step()
        self.scheduler.after_update()
        parts["grad_norm"] = float(grad_norm)
        return parts

    # ---- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate_dev(self) -> dict[str, float]:
        """Teacher-forced dev loss (no smoothing) and greedy WER/CER over the dev set, through the
        evaluator of :mod:`asr_s2s.evaluate` (an unreadable utterance scores as an empty hypothesis)."""
        self.model.eval()
        sampler = BucketBatchSampler(
            [num_frames(u.duration, self.config.features.hop_ms) for u in self.dev_set.utterances],
            self.config.train.max_frames,
            shuffle=False,
            max_utt_frames=10**9,
        )
        totals = {"loss": 0.0, "tokens": 0}

        def add_loss(batch: Batch) -> None:
            inputs, labels = teacher_forcing_io(batch.tokens, batch.token_lens)
            out = self.model(batch.feats, batch.feat_lens, inputs, run_decoder=not ctc_only(self.config))
            if out.logits is None:  # CTC-only: the CTC loss, also per target character
                n = int(batch.token_lens.sum())
                loss = ctc_loss(out.ctc_logits, out.enc_lengths, batch.tokens, batch.token_lens)
            else:
                n = int((labels != Vocabulary.pad_id).sum())
                loss = cross_entropy(out.logits, labels)
            totals["loss"] += float(loss) * n
            totals["tokens"] += n

        greedy = dataclasses.replace(self.config.decode, beam_size=1)

        def decode_fn(feats: torch.Tensor, lengths: torch.Tensor) -> list[str]:
            return [self.vocab.decode(ids) for ids in decode(self.model, feats, lengths, greedy)]

        decoded = decode_dataset(
            self.dev_set,
            sampler.batches(),
            decode_fn,
            self.device,
            num_workers=self.loader.num_workers,
            on_batch=add_loss,
        )
        for i, error in decoded.errors.items():
            self.bad.add(self.dev_set.utterances[i].id, error)
        refs = [u.text for u in self.dev_set.utterances]
        result = score(refs, decoded.hypotheses, self.vocab.text)
        return {
            "dev_loss": totals["loss"] / max(1, totals["tokens"]),
            "dev_wer": result.wer,
            "dev_cer": result.cer,
        }

    # ---- the loop ------------------------------------------------------------------------------
    def _request_stop(self, signum: int, frame: Any) -> None:
        if self._stop:  # a second signal: stop now
            signal.default_int_handler(signum, frame)
        log.warning("signal %d received: finishing the step, writing a checkpoint, then stopping", signum)
        self._stop = True

    def fit(self, stop_after_steps: int | None = None) -> TrainResult:
        """Train until ``train.epochs`` (or ``train.max_steps``) are done; resumable at any step.

        ``stop_after_steps`` simulates an interruption after that many steps (for tests).
        """
        handlers = {}
        if _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._request_stop)
        try:
            self._fit(stop_after_steps)
            model_path = from_main(self._finish, self.dist)  # every rank waits for model.pt
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.metrics.close()
        if self.skipped_lines:
            log.warning("skipped %d malformed manifest lines", self.skipped_lines)
        if self.unknown_char_utts:
            log.warning(
                "%d texts had characters outside the vocabulary (read as <unk>)", self.unknown_char_utts
            )
        if self.bad_utts:
            log.warning("skipped %d unreadable utterances during training", len(self.bad_utts))
        if self.oom_skipped:
            log.warning("left %d utterances out of their steps: out of memory even alone", self.oom_skipped)
        if self.bad_steps:
            log.warning("skipped %d steps with a non-finite loss or gradient", self.bad_steps)
        best = min((b["dev_wer"] for b in self.best), default=float("nan"))
        return TrainResult(
            self.out,
            model_path,
            best,
            self.step,
            len(self.bad_utts),
            self.bad_steps,
            self.history,
            skipped_lines=self.skipped_lines,
            unknown_char_utterances=self.unknown_char_utts,
            oom_skipped=self.oom_skipped,
        )

    def _fit(self, stop_after_steps: int | None) -> None:
        t = self.config.train
        steps_this_run = 0
        hop_s = self.config.features.hop_ms / 1000.0
        while self.epoch < t.epochs and not (t.max_steps and self.step >= t.max_steps):
            self.sampler.set_epoch(self.epoch, self._shortest_first(self.epoch))
            self.sampler.start_batch = self.batch_in_epoch
            # Before the loader's iterator exists: its worker processes copy the dataset, epoch included.
            self.train_set.set_epoch(self.epoch)
            bar = tqdm(
                self.loader,
                desc=f"epoch {self.epoch + 1}/{t.epochs}",
                disable=not self.progress or None,
                leave=False,
                dynamic_ncols=True,
            )
            audio_s, started = 0.0, time.perf_counter()
            for batch in bar:
                for utt_id, error in batch.errors:
                    self.bad.add(utt_id, error)
                if len(batch):
                    parts = self.train_step(batch.to(self.device))
                    audio_s += float(batch.feat_lens.sum()) * hop_s
                else:
                    parts = None
                self.step += 1
                self.batch_in_epoch += 1
                steps_this_run += 1
                if parts is not None:
                    lr = self.optimizer.param_groups[0]["lr"]
                    speed = audio_s / max(1e-9, time.perf_counter() - started)
                    bar.set_postfix(loss=f"{parts['loss']:.3f}", lr=f"{lr:.2e}", audio_s_per_s=f"{speed:.0f}")
                    if self.step % t.log_every == 0:
                        self.metrics.log(
                            {
                                "kind": "train",
                                "step": self.step,
                                "epoch": self.epoch,
                                "lr": lr,
                                "audio_s_per_s": speed,
                                **parts,
                            }
                        )
                stop = any_rank(self._stop or steps_this_run == stop_after_steps, self.dist, self.device)
                if stop or self.step % t.checkpoint_every == 0:
                    self.save_checkpoint()
                if stop:
                    raise Interrupted(
                        f"training interrupted at step {self.step}; checkpoint {self.last_path}"
                    )
                if t.max_steps and self.step >= t.max_steps:
                    break
            bar.close()
            if (
                t.max_steps
                and self.step >= t.max_steps
                and self.sampler.start_batch + len(self.sampler) > self.batch_in_epoch
            ):
                self._end_epoch(partial=True)
                break
            self._end_epoch()

    def _end_epoch(self, partial: bool = False) -> None:
        metrics: dict[str, Any] = {}
        if self.dist.main:
            metrics = self.evaluate_dev()
            record = {"kind": "dev", "step": self.step, "epoch": self.epoch + 1, **metrics}
            self.history.append(record)
            self.metrics.log(record)
            log.info(
                "epoch %d: dev loss %.3f  WER %.2f%%  CER %.2f%%",
                self.epoch + 1,
                metrics["dev_loss"],
                100 * metrics["dev_wer"],
                100 * metrics["dev_cer"],
            )
            self.best = self.checkpointer.keep_best(
                self.best, self.epoch + 1, metrics, self.model, self.config, self.vocab
            )
        if self.scheduler.needs_dev_loss:
            loss = torch.tensor([metrics.get("dev_loss", 0.0)], device=self.device)
            if self.dist.world > 1:
                dist.broadcast(loss, 0)
            self.scheduler.after_epoch(float(loss))
        if not partial:
            self.epoch += 1
            self.batch_in_epoch = 0
        self.save_checkpoint()

    def _finish(self) -> Path:
        """Write ``model.pt`` (see :meth:`Checkpointer.write_final`) and log the average's dev scores."""
        model_path, averaged = self.checkpointer.write_final(
            self.best, self.model, self.config, self.vocab, self.evaluate_dev
        )
        if averaged is not None:
            self.metrics.log({"kind": "average", "step": self.step, "epoch": self.epoch, **averaged})
        return model_path


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    feat_len = int(batch.feat_lens[start:stop].max())
    tok_len = max(1, int(batch.token_lens[start:stop].max()))
    return Batch(
        batch.ids[start:stop],
        batch.indices[start:stop],
        batch.feats[start:stop, :feat_len],
        batch.feat_lens[start:stop],
        batch.tokens[start:stop, :tok_len],
        batch.token_lens[start:stop],
    )


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def train(
    config: Config,
    train_manifest: str | Path,
    dev_manifest: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    strict: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a model and write ``last.pt``, ``best.pt``, ``model.pt`` and ``metrics.jsonl`` to ``out_dir``."""
    trainer = Trainer(config, train_manifest, dev_manifest, out_dir, resume, strict, device, progress)
    return trainer.fit()
