"""Character LSTM language model over the ASR model's vocabulary, and its trainer (``asr-s2s train-lm``).

The LM reads ``<sos> c_1 .. c_n`` and predicts ``c_1 .. c_n <eos>``, one sentence at a time from a
zero state, exactly as beam search queries it (:class:`asr_s2s.scorers.LMScorer`). Training text is
plain UTF-8, one sentence per line, normalized as transcripts are (:meth:`Vocabulary.encode`).

Text is never held whole in memory: each file is cut into blocks of about ``BLOCK_BYTES`` at line
boundaries; an epoch visits the blocks in a seeded random order, ``GROUP_BLOCKS`` at a time, and
shuffles and batches the lines of those blocks by length. A position (epoch, group, batch) is
therefore enough to resume exactly, and the LM of LibriSpeech's 4 GB text corpus trains in the same
bounded memory as the one of a few thousand transcripts.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from asr_s2s.checkpoint import atomic_save, rng_state, set_rng_state
from asr_s2s.config import Config, LMConfig
from asr_s2s.device import resolve_device
from asr_s2s.errors import AsrError, CheckpointError
from asr_s2s.text import SPECIALS, Vocabulary, normalize

log = logging.getLogger(__name__)

LM_FORMAT_VERSION = 1
LM_KINDS = ("lm", "lm-checkpoint")
BLOCK_BYTES = 1 << 20
GROUP_BLOCKS = 16

LMState = tuple[torch.Tensor, torch.Tensor]


class TextError(AsrError):
    """A training or dev text file cannot be read."""


class CharLM(nn.Module):
    """Embedding, stacked LSTM and output projection over ``vocab_size`` character ids."""

    def __init__(self, cfg: LMConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim)
        self.lstm = nn.LSTM(
            cfg.embedding_dim,
            cfg.hidden,
            num_layers=cfg.layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.hidden, vocab_size)

    def initial_state(self, rows: int, device: torch.device | str) -> LMState:
        """The zero state ``(h, c)``, each ``(layers, rows, hidden)``, of an empty sentence."""
        zeros = torch.zeros(self.cfg.layers, rows, self.cfg.hidden, device=device)
        return zeros, zeros.clone()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Ids ``(batch, steps)`` (starting with ``<sos>``) -> next-token logits ``(batch, steps, vocab)``."""
        out, _ = self.lstm(self.dropout(self.embedding(tokens)))
        return self.output(self.dropout(out))

    def step(self, tokens: torch.Tensor, state: LMState) -> tuple[torch.Tensor, LMState]:
        """One step: previous ids ``(rows,)`` -> logits ``(rows, vocab)`` and the next state."""
        out, state = self.lstm(self.embedding(tokens)[:, None], state)
        return self.output(out[:, 0]), state


@dataclass
class LMBundle:
    """A ready LM with its settings and vocabulary."""

    lm: CharLM
    config: LMConfig
    vocab: Vocabulary


def lm_config_from_dict(data: dict[str, Any]) -> LMConfig:
    """The ``lm`` section stored in an LM file (options unknown to this version are skipped)."""
    known = {f.name for f in fields(LMConfig)}
    return Config.from_dict({"lm": {k: v for k, v in data.items() if k in known}}, strict=False).lm


def _read_lm_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(path, "no such file" if not path.exists() else "not a file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for corrupt archives
        reason = "truncated or corrupt file" if path.stat().st_size else "empty file (0 bytes)"
        raise CheckpointError(path, f"not a readable asr-s2s language model ({reason})") from None
    kind = payload.get("kind") if isinstance(payload, dict) else None
    if kind in ("model", "checkpoint"):
        raise CheckpointError(
            path, "is a speech model, not a language model (train one with asr-s2s train-lm)"
        )
    if kind not in LM_KINDS:
        raise CheckpointError(path, "not an asr-s2s language model")
    if payload.get("format_version") != LM_FORMAT_VERSION:
        raise CheckpointError(
            path,
            f"LM format version {payload.get('format_version')} is not supported "
            f"(this asr-s2s reads version {LM_FORMAT_VERSION})",
        )
    return payload


def check_vocabulary(path: str | Path, lm_vocab: Vocabulary, vocab: Vocabulary) -> None:
    """Raise :class:`CheckpointError` naming the differences when the LM's vocabulary is not ``vocab``."""
    if lm_vocab.tokens == vocab.tokens:
        return
    lm_only = sorted(set(lm_vocab.tokens) - set(vocab.tokens))
    model_only = sorted(set(vocab.tokens) - set(lm_vocab.tokens))
    detail = [f"the LM has {len(lm_vocab)} tokens, the model {len(vocab)}"]
    if lm_only:
        detail.append(f"only in the LM: {' '.join(map(repr, lm_only))}")
    if model_only:
        detail.append(f"only in the model: {' '.join(map(repr, model_only))}")
    if not lm_only and not model_only:
        detail.append("same characters in another order")
    raise CheckpointError(
        path,
        f"its vocabulary is not the model's ({'; '.join(detail)}); "
        "train the LM with the model's vocabulary: asr-s2s train-lm --model MODEL",
    )


def load_lm(
    path: str | Path, device: str | torch.device = "cpu", vocab: Vocabulary | None = None
) -> LMBundle:
    """Load an LM file (or a train-lm checkpoint) in eval mode; with ``vocab``, check it matches."""
    path = Path(path)
    payload = _read_lm_file(path)
    try:
        config = lm_config_from_dict(payload["config"])
        lm_vocab = Vocabulary(tuple(payload["vocab"]))
        lm = CharLM(config, len(lm_vocab))
        lm.load_state_dict(payload["model"])
    except (KeyError, TypeError, ValueError, RuntimeError, AsrError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(path, f"inconsistent language model file ({first[:200]})") from None
    if vocab is not None:
        check_vocabulary(path, lm_vocab, vocab)
    return LMBundle(lm.to(device).eval(), config, lm_vocab)


def _payload(lm: CharLM, config: LMConfig, vocab: Vocabulary, kind: str = "lm") -> dict[str, Any]:
    return {
        "kind": kind,
        "format_version": LM_FORMAT_VERSION,
        "config": asdict(config),
        "vocab": list(vocab.tokens),
        "model": {k: v.detach().cpu() for k, v in lm.state_dict().items()},
    }


def save_lm(path: str | Path, lm: CharLM, config: LMConfig, vocab: Vocabulary) -> None:
    """Write a one-file LM (weights, settings, vocabulary) atomically."""
    atomic_save(_payload(lm, config, vocab), path)


# ---- text ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """Bytes ``[start, end)`` of ``path``: whole lines."""

    path: str
    start: int
    end: int


def text_blocks(paths: Sequence[str | Path]) -> list[Block]:
    """Cut each file into blocks of about :data:`BLOCK_BYTES` ending at line ends (reads a line per block)."""
    blocks = []
    for path in paths:
        path = Path(path)
        try:
            size = path.stat().st_size
            with path.open("rb") as handle:
                start = 0
                while start < size:
                    handle.seek(min(start + BLOCK_BYTES, size))
                    handle.readline()
                    end = min(handle.tell(), size)
                    blocks.append(Block(str(path), start, end))
                    start = end
        except OSError as err:
            raise TextError(f"{path}: cannot read text ({err.strerror or err})") from None
    return blocks


def _block_lines(block: Block) -> list[str]:
    try:
        with open(block.path, "rb") as handle:
            handle.seek(block.start)
            data = handle.read(block.end - block.start)
        return data.decode("utf-8").splitlines()
    except OSError as err:
        raise TextError(f"{block.path}: cannot read text ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise TextError(f"{block.path}: line {line} of the block at byte {block.start}: not UTF-8") from None


def build_vocabulary(paths: Sequence[str | Path]) -> Vocabulary:
    """Every character of the normalized text of ``paths`` (one pass over the files)."""
    counts: Counter[str] = Counter()
    for block in text_blocks(paths):
        for line in _block_lines(block):
            counts.update(normalize(line))
    if not counts:
        raise TextError(f"{', '.join(map(str, paths))}: no text")
    return Vocabulary(SPECIALS + tuple(sorted(counts)))


def encode_lines(lines: Sequence[str], vocab: Vocabulary, max_chars: int) -> tuple[list[np.ndarray], int]:
    """Id arrays of the non-empty lines of at most ``max_chars`` characters, and how many were longer."""
    kept, too_long = [], 0
    for line in lines:
        ids = vocab.encode(line)
        if not ids:
            continue
        if len(ids) > max_chars:
            too_long += 1
            continue
        kept.append(np.asarray(ids, dtype=np.int64))
    return kept, too_long


def make_batches(lines: list[np.ndarray], batch_chars: int) -> list[list[np.ndarray]]:
    """Lines (in the given order, then by length) into batches of at most ``batch_chars`` padded tokens."""
    order = sorted(range(len(lines)), key=lambda i: len(lines[i]))
    batches: list[list[np.ndarray]] = []
    current: list[np.ndarray] = []
    for i in order:
        width = len(lines[i]) + 1
        if current and (len(current) + 1) * width > batch_chars:
            batches.append(current)
            current = []
        current.append(lines[i])
    if current:
        batches.append(current)
    return batches


def batch_tensors(batch: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``<sos> + y`` and targets ``y + <eos>``, both ``(batch, longest + 1)``, pad-filled."""
    width = max(len(x) for x in batch) + 1
    inputs = torch.full((len(batch), width), Vocabulary.pad_id, dtype=torch.long)
    targets = torch.full((len(batch), width), Vocabulary.pad_id, dtype=torch.long)
    for i, ids in enumerate(batch):
        t = torch.from_numpy(ids)
        inputs[i, 0] = Vocabulary.sos_id
        inputs[i, 1 : len(ids) + 1] = t
        targets[i, : len(ids)] = t
        targets[i, len(ids)] = Vocabulary.eos_id
    return inputs, targets


class TextBatches:
    """The seeded batch order of every epoch over the blocks of some text files (see the module doc)."""

    def __init__(self, blocks: list[Block], vocab: Vocabulary, cfg: LMConfig) -> None:
        self.blocks = blocks
        self.vocab = vocab
        self.cfg = cfg
        self.groups = math.ceil(len(blocks) / GROUP_BLOCKS)
        self.too_long = 0

    def _generator(self, epoch: int, group: int | None = None) -> torch.Generator:
        seed = (self.cfg.seed * 1_000_003 + epoch) * 1_000_003 + (group if group is not None else -1)
        return torch.Generator().manual_seed(seed % (2**63))

    def group_batches(self, epoch: int, group: int) -> list[list[np.ndarray]]:
        """The batches of group ``group`` in ``epoch``, in training order."""
        order = torch.randperm(len(self.blocks), generator=self._generator(epoch)).tolist()
        chosen = order[group * GROUP_BLOCKS : (group + 1) * GROUP_BLOCKS]
        lines: list[str] = []
        for i in sorted(chosen):
            lines += _block_lines(self.blocks[i])
        encoded, too_long = encode_lines(lines, self.vocab, self.cfg.max_line_chars)
        self.too_long += too_long
        g = self._generator(epoch, group)
        encoded = [encoded[i] for i in torch.randperm(len(encoded), generator=g).tolist()]
        batches = make_batches(encoded, self.cfg.batch_chars)
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

    def epoch(
        self, epoch: int, group: int = 0, batch: int = 0
    ) -> Iterator[tuple[int, int, list[np.ndarray]]]:
        """``(group, index, batch)`` of ``epoch``, starting at position ``(group, batch)``."""
        for g in range(group, self.groups):
            batches = self.group_batches(epoch, g)
            for i in range(batch if g == group else 0, len(batches)):
                yield g, i, batches[i]


# ---- training -----------------------------------------------------------------------------------


@torch.inference_mode()
def perplexity(lm: CharLM, lines: list[np.ndarray], batch_chars: int, device: torch.device) -> float:
    """``exp`` of the mean negative log-likelihood per predicted token (characters and ``<eos>``)."""
    was_training = lm.training
    lm.eval()
    total, count = 0.0, 0
    for batch in make_batches(lines, batch_chars):
        inputs, targets = batch_tensors(batch)
        logits = lm(inputs.to(device)).float()
        total += float(
            nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                targets.to(device).reshape(-1),
                ignore_index=Vocabulary.pad_id,
                reduction="sum",
            )
        )
        count += int((targets != Vocabulary.pad_id).sum())
    lm.train(was_training)
    return math.exp(total / max(count, 1))


@dataclass
class LMResult:
    """Where the LM is, how far training went and its held-out perplexity (NaN without dev text)."""

    path: Path
    steps: int
    dev_perplexity: float
    history: list[dict[str, Any]] = field(default_factory=list)


def checkpoint_path(out: str | Path) -> Path:
    """The training checkpoint next to LM file ``out``: ``lm.pt`` -> ``lm.pt.ckpt``."""
    out = Path(out)
    return out.with_name(out.name + ".ckpt")


def _lr_factor(cfg: LMConfig, total_steps: int, step: int) -> float:
    # Linear warm-up, then cosine decay to 5 % of the peak over the planned steps.
    warmup = max(1, cfg.warmup_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def train_lm(
    config: Config,
    texts: Sequence[str | Path],
    out: str | Path,
    dev: Sequence[str | Path] = (),
    vocab: Vocabulary | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> LMResult:
    """Train a :class:`CharLM` on the lines of ``texts`` and write it to ``out`` (see the module doc).

    ``vocab``: the ASR model's vocabulary (else every character of the text). ``dev``: held-out text
    whose perplexity is measured every ``lm.eval_every`` steps and at the end. A checkpoint
    (:func:`checkpoint_path`) is written every ``lm.checkpoint_every`` steps, at the end of each
    epoch and on Ctrl-C; ``resume`` continues from it exactly. ``stop_after``: leave after this many
    steps of this call, checkpoint written, as an interruption would (for tests).
    """
    cfg = config.lm
    out = Path(out)
    ckpt_path = checkpoint_path(out)
    device = resolve_device(device)
    if not texts:
        raise TextError("train-lm needs at least one --text file")
    blocks = text_blocks(texts)
    if vocab is None:
        vocab = build_vocabulary(texts)
    data = TextBatches(blocks, vocab, cfg)
    dev_lines: list[np.ndarray] = []
    if dev:
        dev_text: list[str] = []
        for block in text_blocks(dev):  # only the first lm.dev_max_lines lines are read
            dev_text += _block_lines(block)[: cfg.dev_max_lines - len(dev_text)]
            if len(dev_text) >= cfg.dev_max_lines:
                break
        dev_lines, _ = encode_lines(dev_text, vocab, cfg.max_line_chars)
    total_bytes = sum(b.end - b.start for b in blocks)
    per_epoch = max(1, math.ceil(total_bytes / cfg.batch_chars))
    total_steps = cfg.max_steps or cfg.epochs * per_epoch

    torch.manual_seed(cfg.seed)
    lm = CharLM(cfg, len(vocab)).to(device)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(cfg, total_steps, s))
    step, epoch, group, index = 0, 0, 0, 0
    history: list[dict[str, Any]] = []
    if resume and ckpt_path.exists():
        state = _read_lm_file(ckpt_path)
        if state.get("kind") != "lm-checkpoint":
            raise CheckpointError(ckpt_path, "not a train-lm checkpoint")
        if list(state["vocab"]) != list(vocab.tokens):
            raise CheckpointError(ckpt_path, "was trained with another vocabulary than this run's")
        if lm_config_from_dict(state["config"]) != cfg:
            raise CheckpointError(ckpt_path, "was trained with other lm settings than this run's")
        lm.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, group, index = (int(state[k]) for k in ("step", "epoch", "group", "index"))
        history = json.loads(state["history"])
        set_rng_state(state["rng"])
        log.info("resuming %s at step %d (epoch %d)", ckpt_path, step, epoch + 1)

    def save_checkpoint() -> None:
        payload = _payload(lm, cfg, vocab, kind="lm-checkpoint")
        payload.update(
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            step=step,
            epoch=epoch,
            group=group,
            index=index,
            history=json.dumps(history),
            rng=rng_state(),
        )
        atomic_save(payload, ckpt_path)

    def evaluate(kind: str) -> None:
        if dev_lines:
            ppl = perplexity(lm, dev_lines, cfg.batch_chars, device)
            history.append({"step": step, "epoch": epoch, "dev_perplexity": ppl, "at": kind})
            log.info("step %d: dev perplexity %.3f", step, ppl)

    use_amp = cfg.amp and device.type == "cuda"
    bar = tqdm(total=total_steps, initial=step, disable=not progress, desc="train-lm", unit="step")
    started, steps_here, loss_sum, token_sum = time.monotonic(), 0, 0.0, 0
    finished = cfg.max_steps > 0 and step >= cfg.max_steps
    lm.train()
    try:
        while not finished and epoch < cfg.epochs:
            for g, i, batch in data.epoch(epoch, group, index):
                inputs, targets = (t.to(device, non_blocking=True) for t in batch_tensors(batch))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    logits = lm(inputs)
                loss = nn.functional.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]),
                    targets.reshape(-1),
                    ignore_index=Vocabulary.pad_id,
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(lm.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                step, group, index, steps_here = step + 1, g, i + 1, steps_here + 1
                tokens = int((targets != Vocabulary.pad_id).sum())
                loss_sum, token_sum = loss_sum + float(loss.detach()) * tokens, token_sum + tokens
                bar.update(1)
                if step % cfg.log_every == 0:
                    bar.set_postfix(loss=f"{loss_sum / token_sum:.3f}", epoch=epoch + 1)
                    history.append({"step": step, "epoch": epoch, "train_loss": loss_sum / token_sum})
                    loss_sum, token_sum = 0.0, 0
                if step % cfg.eval_every == 0:
                    evaluate("step")
                finished = cfg.max_steps > 0 and step >= cfg.max_steps
                if step % cfg.checkpoint_every == 0 or finished or steps_here == stop_after:
                    save_checkpoint()
                if finished or steps_here == stop_after:
                    break
            else:
                epoch, group, index = epoch + 1, 0, 0
                evaluate("epoch")
                save_checkpoint()
                continue
            break
    except KeyboardInterrupt:
        save_checkpoint()
        bar.close()
        log.warning("interrupted: checkpoint %s written at step %d; continue with --resume", ckpt_path, step)
        raise
    bar.close()
    if data.too_long:
        log.warning("skipped %d lines longer than lm.max_line_chars=%d", data.too_long, cfg.max_line_chars)
    done = finished or epoch >= cfg.epochs
    dev_ppl = perplexity(lm, dev_lines, cfg.batch_chars, device) if dev_lines else float("nan")
    if done:
        save_lm(out, lm, cfg, vocab)
        log.info(
            "LM %s: %d steps (%d in %.0f s), dev perplexity %.3f",
            out, step, steps_here, time.monotonic() - started, dev_ppl,
        )
    return LMResult(out if done else ckpt_path, step, dev_ppl, history)
