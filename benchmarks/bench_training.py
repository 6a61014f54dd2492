"""Training throughput: the package's training step against a tutorial-style reference of the same network.

Ours is ``Trainer.train_step`` itself (SpecAugment, teacher forcing, forward, label-smoothed cross
entropy plus the CTC aid, backward, gradient clipping, AdamW, LR schedule) on the bucketed,
``max_frames``-capped batches of ``BucketBatchSampler``, with the encoder's packed-sequence
semantics (on CPU through the fused kernels of ``asr_s2s.lstm.segmented_lstm``). The
reference is the same network with the same losses and optimizer written as tutorials write it:
fixed-size batches of N utterances in random order, zero-padded, no packing, and a decoder
unrolled one step at a time in Python over ``nn.LSTMCell``. It runs on the same utterances (the ones
ours is timed on), N being our mean batch size.

Speed is audio seconds per second of wall-clock time, batch collation included; the steps of the
variants are interleaved so that a change in the machine's load hits them alike.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import numpy as np
import soundfile as sf
import torch
from torch import nn

from asr_s2s.config import Config, ModelConfig
from asr_s2s.data import Batch, collate
from asr_s2s.features import SpecAugment
from asr_s2s.loss import cross_entropy, ctc_loss, teacher_forcing_io
from asr_s2s.manifest import Utterance, write_manifest
from asr_s2s.text import Vocabulary
from asr_s2s.train import Trainer

TARGET_RATIO = 3.0


# ---- the reference -----------------------------------------------------------------------------


class TutorialSeq2Seq(nn.Module):
    """:class:`asr_s2s.model.Seq2Seq`'s network (same parameters) written as tutorials write it.

    The encoder reads the zero-padded batch with no lengths at all, so its final states come from
    the end of the padding (the usual tutorial shortcut); the decoder loops over the characters in
    Python, one ``nn.LSTMCell`` per layer.
    """

    def __init__(self, cfg: ModelConfig, n_mels: int, vocab_size: int, ctc: bool) -> None:
        super().__init__()
        if cfg.attention != "none":
            raise SystemExit(
                f"the reference is written without attention; model.attention is {cfg.attention!r}"
            )
        self.cfg = cfg
        self.register_buffer("feat_mean", torch.zeros(n_mels))
        self.register_buffer("feat_std", torch.ones(n_mels))
        self.directions = 2 if cfg.bidirectional else 1
        self.encoder = nn.LSTM(
            n_mels * cfg.stack_frames,
            cfg.encoder_hidden,
            num_layers=cfg.encoder_layers,
            batch_first=True,
            dropout=cfg.encoder_dropout if cfg.encoder_layers > 1 else 0.0,
            bidirectional=cfg.bidirectional,
        )
        enc_dim = cfg.encoder_hidden * self.directions
        # Decoder layer l starts from encoder layer N - M + l, through linear + tanh when sizes differ.
        self.source = [max(0, cfg.encoder_layers - cfg.decoder_layers + i) for i in range(cfg.decoder_layers)]
        self.project = enc_dim != cfg.decoder_hidden
        if self.project:
            self.h_proj = nn.ModuleList(nn.Linear(enc_dim, cfg.decoder_hidden) for _ in self.source)
            self.c_proj = nn.ModuleList(nn.Linear(enc_dim, cfg.decoder_hidden) for _ in self.source)
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim)
        self.cells = nn.ModuleList(
            nn.LSTMCell(cfg.embedding_dim if i == 0 else cfg.decoder_hidden, cfg.decoder_hidden)
            for i in range(cfg.decoder_layers)
        )
        self.dropout = nn.Dropout(cfg.decoder_dropout)
        self.output = nn.Linear(cfg.decoder_hidden, vocab_size)
        self.ctc_head = nn.Linear(enc_dim, vocab_size) if ctc else None

    def forward(
        self, feats: torch.Tensor, tokens_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-mels ``(B, T, n_mels)``, decoder inputs ``(B, U)`` -> logits ``(B, U, V)``, CTC logits."""
        k = self.cfg.stack_frames
        x = (feats - self.feat_mean) / self.feat_std
        batch, time, dim = x.shape
        x = nn.functional.pad(x, (0, 0, 0, (-time) % k)).reshape(batch, -1, k * dim)
        enc_out, (h, c) = self.encoder(x)
        layers, dirs = self.cfg.encoder_layers, self.directions
        h = torch.cat(list(h.view(layers, dirs, batch, -1).unbind(1)), dim=-1)
        c = torch.cat(list(c.view(layers, dirs, batch, -1).unbind(1)), dim=-1)
        states = []
        for i, s in enumerate(self.source):
            if self.project:
                states.append((torch.tanh(self.h_proj[i](h[s])), torch.tanh(self.c_proj[i](c[s]))))
            else:
                states.append((h[s], c[s]))
        logits = []
        for t in range(tokens_in.shape[1]):
            inp = self.dropout(self.embedding(tokens_in[:, t]))
            for i, cell in enumerate(self.cells):
                states[i] = cell(inp, states[i])
                inp = self.dropout(states[i][0])
            logits.append(self.output(inp))
        ctc_logits = self.ctc_head(enc_out) if self.ctc_head is not None else None
        return torch.stack(logits, dim=1), ctc_logits


def reference_step(
    model: TutorialSeq2Seq,
    optimizer: torch.optim.Optimizer,
    config: Config,
    spec_augment: SpecAugment | None,
    batch: Batch,
) -> None:
    """One training step of the reference, with the trainer's losses, clipping and optimizer."""
    t = config.train
    model.train()
    optimizer.zero_grad(set_to_none=True)
    feats = batch.feats if spec_augment is None else spec_augment(batch.feats, batch.feat_lens)
    inputs, labels = teacher_forcing_io(batch.tokens, batch.token_lens)
    if t.token_dropout > 0:  # the trainer's input-side training aid, to keep the work identical
        hide = torch.rand(inputs.shape, device=inputs.device) < t.token_dropout
        hide[:, 0] = False
        inputs = inputs.masked_fill(hide & (inputs != Vocabulary.pad_id), Vocabulary.unk_id)
    with benchlib.autocast(feats.device):
        logits, ctc_logits = model(feats, inputs)
    loss = cross_entropy(logits, labels, t.label_smoothing)
    if ctc_logits is not None:
        enc_lengths = (batch.feat_lens + config.model.stack_frames - 1) // config.model.stack_frames
        ctc = ctc_loss(ctc_logits, enc_lengths, batch.tokens, batch.token_lens)
        loss = (1 - t.ctc_weight) * loss + t.ctc_weight * ctc
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    optimizer.step()


# ---- corpus and trainer ------------------------------------------------------------------------


def write_corpus(
    folder: Path, kind: str, count: int, letters: str, seed: int, scale: float = 1.0
) -> tuple[Path, Path]:
    """Synthetic utterances (16-bit WAV) and their train and dev manifests under ``folder``;
    ``scale`` shortens the utterances (for smoke tests)."""
    rng = np.random.default_rng(seed)
    utts = []
    for i, seconds in enumerate(scale * benchlib.durations(kind, count, rng)):
        path = folder / f"utt{i:04d}.wav"
        wave = benchlib.synth_wave(float(seconds), rng)
        sf.write(path, wave, benchlib.SAMPLE_RATE, subtype="PCM_16")
        utts.append(
            Utterance(
                f"utt{i:04d}",
                path,
                len(wave) / benchlib.SAMPLE_RATE,
                benchlib.synth_text(seconds, letters, rng),
            )
        )
    write_manifest(folder / "train.jsonl", utts)
    write_manifest(folder / "dev.jsonl", utts[:1])  # the trainer needs one; never evaluated here
    return folder / "train.jsonl", folder / "dev.jsonl"


@dataclass
class Scenario:
    """One model size and the utterance lengths it is trained on."""

    name: str
    config: Config
    config_source: str
    kind: str
    letters: str
    utterances: int
    steps: int
    scale: float = 1.0


@dataclass
class Variant:
    """A way of training: its step function and the batches it is timed on."""

    name: str
    step: Callable[[Batch], Any]
    batches: list[Batch]
    warmup: Batch
    hop_s: float  # seconds of audio per feature frame
    times: list[benchlib.Timing] = field(default_factory=list)

    @property
    def audio_s(self) -> float:
        return sum(float(b.feat_lens.sum()) for b in self.batches) * self.hop_s

    @property
    def time(self) -> benchlib.Timing:
        return benchlib.total(self.times)

    @property
    def speed(self) -> float:
        """Audio seconds per wall-clock second."""
        return self.audio_s / self.time.wall

    @property
    def padding(self) -> float:
        real = sum(float(b.feat_lens.sum()) for b in self.batches)
        return 1.0 - real / sum(b.feats.shape[0] * b.feats.shape[1] for b in self.batches)

    @property
    def batch_size(self) -> float:
        return float(np.mean([len(b) for b in self.batches]))


def build_variants(
    scenario: Scenario, folder: Path, device: torch.device, seed: int
) -> tuple[list[Variant], dict[str, Any]]:
    """The trainer, the reference and their batches for one scenario: ``[reference, ours]``."""
    train_manifest, dev_manifest = write_corpus(
        folder, scenario.kind, scenario.utterances, scenario.letters, seed, scenario.scale
    )
    trainer = Trainer(
        scenario.config, train_manifest, dev_manifest, folder / "exp", device=str(device), progress=False
    )
    config, model = trainer.config, trainer.model

    def load(indices: list[int]) -> Batch:
        # What the trainer's DataLoader does with num_workers=0: fetch each example, then collate.
        return collate([trainer.train_set[i] for i in indices]).to(device)

    trainer.sampler.set_epoch(0)
    all_batches = trainer.sampler.batches()
    timed = all_batches[: scenario.steps]
    rest = all_batches[scenario.steps :] or all_batches
    # The least padded work of the untimed batches warms up the allocator, kernels and AdamW state.
    warm = min(rest, key=lambda b: len(b) * max(trainer.sampler.frames[i] for i in b))
    mean_batch = max(1, int(round(np.mean([len(b) for b in all_batches]))))
    order = [i for b in timed for i in b]
    np.random.default_rng(seed).shuffle(order)

    reference = TutorialSeq2Seq(
        config.model, config.features.n_mels, len(trainer.vocab), model.ctc_head is not None
    )
    reference.to(device)
    n_ours = sum(p.numel() for p in model.parameters())
    n_ref = sum(p.numel() for p in reference.parameters())
    assert n_ours == n_ref, f"the reference has {n_ref} parameters, ours {n_ours}"
    ref_opt = torch.optim.AdamW(
        reference.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay
    )
    spec_augment = SpecAugment(config.features) if config.train.spec_augment else None

    hop_s = config.features.hop_ms / 1000
    ours_batches = [load(b) for b in timed]
    variants = [
        Variant(
            f"reference (padded batches of {mean_batch}, LSTMCell loop)",
            lambda b: reference_step(reference, ref_opt, config, spec_augment, b),
            [load(list(b)) for b in benchlib.chunks(order, mean_batch)],
            load(warm[:mean_batch]),
            hop_s,
        ),
        Variant("ours (Trainer.train_step, bucketed)", trainer.train_step, ours_batches, load(warm), hop_s),
    ]
    info = {
        "config_source": scenario.config_source,
        "model": asdict(config.model),
        "max_frames": config.train.max_frames,
        "parameters": n_ours,
        "vocab_size": len(trainer.vocab),
        "corpus_utterances": scenario.utterances,
        "epoch_batches": len(all_batches),
        "mean_bucketed_batch": float(np.mean([len(b) for b in all_batches])),
    }
    return variants, info


def measure(variants: list[Variant], device: torch.device) -> None:
    """Warm each variant up, then time their batches round-robin."""
    for v in variants:
        v.step(v.warmup)
    for i in range(max(len(v.batches) for v in variants)):
        for v in variants:
            if i < len(v.batches):
                v.times.append(benchlib.timed(lambda v=v, i=i: v.step(v.batches[i]), device))
                t = v.times[-1]
                print(
                    f"  {v.name}: batch {i + 1}/{len(v.batches)} {t.wall:.2f} s (CPU {t.cpu:.2f} s)",
                    flush=True,
                )


def scenarios(args: Any) -> list[Scenario]:
    """The two model sizes of the issue, shrunk by ``--quick``."""
    digits, digits_source = benchlib.digits_config()
    if digits.model.attention != "none":  # the recipe's attention: compare the network the reference has
        digits.model.attention = "none"
        digits_source += " with model.attention=none"
    libri, libri_source = benchlib.librispeech_config()
    out = [
        Scenario("digits", digits, digits_source, "digits", benchlib.DIGIT_CHARS, 240, 6),
        Scenario("librispeech", libri, libri_source, "librispeech", benchlib.LIBRISPEECH_CHARS, 120, 2),
    ]
    for s in out:
        s.config.train.epochs = 1
        if args.quick:  # a smoke test: LibriSpeech lengths shrunk 4x, small batches
            s.utterances, s.steps = (24, 2) if s.name == "digits" else (6, 1)
            s.config.train.max_frames = 2000 if s.name == "digits" else 1000
            s.scale = 1.0 if s.name == "digits" else 0.25
        if args.max_frames:
            s.config.train.max_frames = args.max_frames
        if args.steps:
            s.steps = args.steps
    return [s for s in out if s.name in args.scenarios.split(",")]


def main() -> None:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--scenarios", default="digits,librispeech", help="comma-separated: digits, librispeech")
    p.add_argument("--steps", type=int, default=0, help="timed batches per variant (default: per scenario)")
    p.add_argument(
        "--max-frames", type=int, default=0, help="override train.max_frames (padded frames per batch)"
    )
    args = p.parse_args()
    run = benchlib.start("training", args)
    logging.basicConfig(level=logging.WARNING)
    tables, targets, data = [], [], {}
    for scenario in scenarios(args):
        print(f"{scenario.name}: building the corpus and the trainer", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
            variants, info = build_variants(scenario, Path(tmp), run.device, args.seed)
            measure(variants, run.device)
        ref = variants[0]
        title = (
            f"Training, {scenario.name}-size model ({info['parameters'] / 1e6:.1f} M parameters, "
            f"max_frames {info['max_frames']}), {run.device}, {args.threads} threads"
        )
        if scenario.scale != 1.0:
            title += f", utterances shortened {1 / scenario.scale:.0f}x (--quick)"
        headers = ["variant", "batches", "utts/batch", "padding %", "audio s", "time s", "CPU s"]
        table = benchlib.Table(title, [*headers, "audio-s/s", "x reference", "x reference (CPU s)"])
        for v in variants:
            t = v.time
            cpu_ratio = ref.time.cpu / ref.audio_s / (t.cpu / v.audio_s)
            row = [v.name, len(v.batches), v.batch_size, 100 * v.padding, v.audio_s, t.wall, t.cpu]
            table.add(*row, v.speed, v.speed / ref.speed, cpu_ratio)
        tables.append(table)
        ours = variants[1]
        what = f"{scenario.name}: {ours.name.split(' (')[0]} / reference"
        targets.append(benchlib.Target(what, ours.speed / ref.speed, TARGET_RATIO))
        data[scenario.name] = {
            **info,
            "variants": {
                v.name: {
                    "audio_s": v.audio_s,
                    "times": v.times,
                    "audio_s_per_s": v.speed,
                    "padding": v.padding,
                    "batch_sizes": [len(b) for b in v.batches],
                }
                for v in variants
            },
        }
    benchlib.finish(run, tables, targets, data)


if __name__ == "__main__":
    main()
