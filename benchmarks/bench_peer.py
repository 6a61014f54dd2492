"""Side by side with SpeechBrain 1.1.2: training throughput, the encoder alone, and decoding RTF.

The peer is SpeechBrain's LibriSpeech seq2seq modules wired as its recipe wires them
(``recipes/LibriSpeech/ASR/seq2seq``): ``nnet.RNN.LSTM`` over the zero-padded batch (no lengths, so
``nn.LSTM``'s fused padded kernel), ``AttentionalRNNDecoder`` with location attention starting from
a zero state, ``nll_loss`` (label smoothing) + ``ctc_loss``, AdamW, gradient clipping, all through
``Brain.fit_batch``. The package side is ``Trainer.train_step`` with the same encoder shape. Both
read the same frame-stacked log-mels, so the recipe's CNN front end (CRDNN) is left out.

Every comparison runs in one process on the same batch tensors (the package's own
``BucketBatchSampler`` batches), interleaved step by step, so that a change in the machine's load
hits both sides alike. Speeds are audio seconds per second, of wall-clock and of this process's
CPU time. ``python benchmarks/bench_peer.py`` needs ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import numpy as np
import torch
from bench_training import write_corpus
from torch import nn

from asr_s2s.config import Config, DecodeConfig
from asr_s2s.data import Batch, collate
from asr_s2s.decoding import beam_search, greedy_search
from asr_s2s.loss import teacher_forcing_io
from asr_s2s.text import Vocabulary
from asr_s2s.train import Trainer

try:
    import speechbrain as sb
    from speechbrain.decoders.seq2seq import S2SRNNBeamSearcher, S2SRNNGreedySearcher
    from speechbrain.nnet.embedding import Embedding as SBEmbedding
    from speechbrain.nnet.linear import Linear as SBLinear
    from speechbrain.nnet.losses import ctc_loss as sb_ctc_loss
    from speechbrain.nnet.losses import nll_loss as sb_nll_loss
    from speechbrain.nnet.RNN import LSTM as SBLSTM
    from speechbrain.nnet.RNN import AttentionalRNNDecoder
except ImportError:  # run_all.py checks this before running the script
    sb = None

PEER_VERSION = "1.1.2"
TARGET_TRAINING = 1.3  # package (location) / SpeechBrain, both sizes
TARGET_ENCODER = 1.2
TARGET_BEAM = 1.5
# The package's location term has 31 taps (asr_s2s.attention.LOCATION_KERNEL); SpeechBrain's
# kernel_size k gives 2k + 1 taps.
PEER_KERNEL = 15
PARAM_TOLERANCE = 0.10


# ---- the peer ----------------------------------------------------------------------------------


class PeerSeq2Seq(nn.Module):
    """SpeechBrain's seq2seq modules at the package model's shape (see the module docstring).

    ``attn_dim`` (SpeechBrain's attention width and the size of its projected context) is chosen by
    :func:`peer_brain` to bring the parameter count closest to the package's, which has the bridge
    and feeds the whole encoder output as context where SpeechBrain feeds a projected one.
    """

    def __init__(self, config: Config, vocab_size: int, attn_dim: int) -> None:
        super().__init__()
        m = config.model
        self.stack = m.stack_frames
        dirs = 2 if m.bidirectional else 1
        enc_dim = m.encoder_hidden * dirs
        self.register_buffer("feat_mean", torch.zeros(config.features.n_mels))
        self.register_buffer("feat_std", torch.ones(config.features.n_mels))
        self.enc = SBLSTM(
            hidden_size=m.encoder_hidden,
            input_size=config.features.n_mels * m.stack_frames,
            num_layers=m.encoder_layers,
            dropout=m.encoder_dropout,
            bidirectional=m.bidirectional,
        )
        self.emb = SBEmbedding(num_embeddings=vocab_size, embedding_dim=m.embedding_dim)
        self.dec = AttentionalRNNDecoder(
            rnn_type="lstm",
            attn_type="location",
            hidden_size=m.decoder_hidden,
            attn_dim=attn_dim,
            num_layers=m.decoder_layers,
            enc_dim=enc_dim,
            input_size=m.embedding_dim,
            channels=10,
            kernel_size=PEER_KERNEL,
            dropout=m.decoder_dropout,
        )
        self.seq_lin = SBLinear(input_size=m.decoder_hidden, n_neurons=vocab_size)
        self.ctc_lin = SBLinear(input_size=enc_dim, n_neurons=vocab_size)

    def encode(self, feats: torch.Tensor) -> torch.Tensor:
        """Log-mels ``(B, T, n_mels)`` -> encoder outputs ``(B, ceil(T / stack), enc_dim)``, padded."""
        x = (feats - self.feat_mean) / self.feat_std
        batch, time, dim = x.shape
        x = nn.functional.pad(x, (0, 0, 0, (-time) % self.stack)).reshape(batch, -1, self.stack * dim)
        return self.enc(x)[0]


class PeerBrain(sb.Brain if sb is not None else object):  # type: ignore[misc]
    """The recipe's ``compute_forward`` / ``compute_objectives`` on a package :class:`Batch`."""

    def compute_forward(self, batch: Batch, stage: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model: PeerSeq2Seq = self.modules.model
        enc = model.encode(batch.feats)
        wav_lens = batch.feat_lens.float() / batch.feats.shape[1]  # SpeechBrain's relative lengths
        p_ctc = model.ctc_lin(enc).log_softmax(-1)
        inputs, _ = teacher_forcing_io(batch.tokens, batch.token_lens)
        h, _ = model.dec(model.emb(inputs), enc, wav_lens)
        p_seq = model.seq_lin(h).log_softmax(-1)
        return p_ctc, p_seq, wav_lens

    def compute_objectives(self, outputs: Any, batch: Batch, stage: Any) -> torch.Tensor:
        p_ctc, p_seq, wav_lens = outputs
        _, labels = teacher_forcing_io(batch.tokens, batch.token_lens)
        chars = batch.tokens.shape[1]
        ctc = sb_ctc_loss(p_ctc, batch.tokens, wav_lens, batch.token_lens.float() / chars, Vocabulary.pad_id)
        seq = sb_nll_loss(
            p_seq, labels, (batch.token_lens + 1).float() / (chars + 1), self.hparams.label_smoothing
        )
        w = self.hparams.ctc_weight
        return w * ctc + (1 - w) * seq


def peer_brain(config: Config, vocab_size: int, ours: nn.Module, device: str) -> Any:
    """A :class:`PeerBrain` with the package trainer's optimizer settings, ready for ``fit_batch``,
    and with ``attn_dim`` the package's attention width or its decoder width (as the recipe has it),
    whichever brings the parameter count closer to ``ours``'."""
    t = config.train
    m = config.model
    model = min(
        (PeerSeq2Seq(config, vocab_size, d) for d in (m.attention_dim, m.decoder_hidden)),
        key=lambda peer: abs(count(peer) - count(ours)),
    )
    mean, std = ours.feat_mean, ours.feat_std
    model.feat_mean.copy_(mean)
    model.feat_std.copy_(std)
    brain = PeerBrain(
        modules={"model": model},
        opt_class=lambda params: torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay),
        hparams={"label_smoothing": t.label_smoothing, "ctc_weight": t.ctc_weight},
        # On CUDA, bf16 autocast as the package's trainer uses it (train.amp); untested, no GPU was lent.
        run_opts={
            "device": device,
            "max_grad_norm": t.grad_clip,
            "precision": "bf16" if device.startswith("cuda") else "fp32",
        },
    )
    brain.init_optimizers()
    brain.modules.train()
    return brain


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- scenarios ---------------------------------------------------------------------------------


@dataclass
class Scenario:
    """One model size, its corpus and how many steps each comparison times."""

    name: str
    config: Config
    kind: str
    letters: str
    utterances: int
    steps: int
    decode_utts: int
    scale: float = 1.0


def scenarios(args: Any) -> list[Scenario]:
    digits, _ = benchlib.digits_config()
    libri, _ = benchlib.librispeech_config()
    libri.train.max_frames = 10000  # about 8 LibriSpeech-length utterances: short runs on a shared CPU
    out = [
        Scenario("digits", digits, "digits", benchlib.DIGIT_CHARS, 240, 8, 16),
        Scenario("librispeech", libri, "librispeech", benchlib.LIBRISPEECH_CHARS, 60, 2, 4),
    ]
    for s in out:
        t = s.config.train
        t.epochs, t.spec_augment, t.token_dropout, t.curriculum_epochs = 1, False, 0.0, 0
        t.cache_features, t.num_workers = "true", 0
        s.config.model.attention = "location"
        if args.quick:
            s.utterances, s.steps, s.decode_utts, s.scale = 12, 1, 2, 0.25 if s.name == "librispeech" else 1.0
            t.max_frames = 1500
        if args.max_frames:
            t.max_frames = args.max_frames
        if args.steps:
            s.steps = args.steps
    return [s for s in out if s.name in args.scenarios.split(",")]


@dataclass
class Side:
    """One side of a comparison: a step function, its audio per call, and its timings."""

    name: str
    step: Callable[[int], Any]
    warm: Callable[[], Any]  # an untimed first call: allocation, kernel selection, optimizer state
    times: list[benchlib.Timing] = field(default_factory=list)

    @property
    def time(self) -> benchlib.Timing:
        return benchlib.total(self.times)


def interleave(sides: list[Side], steps: int, device: torch.device) -> None:
    """Warm each side up, then time step ``i`` of every side before step ``i + 1`` of any."""
    for s in sides:
        s.warm()
    for i in range(steps):
        for s in sides:
            s.times.append(benchlib.timed(lambda s=s, i=i: s.step(i), device))
            print(
                f"  {s.name}: {i + 1}/{steps} {s.times[-1].wall:.2f} s (CPU {s.times[-1].cpu:.2f})",
                flush=True,
            )


def speed_table(title: str, sides: list[Side], audio_s: float, per: str = "audio-s/s") -> benchlib.Table:
    """Rows of ``sides`` with audio-s/s of wall and CPU time and the ratio to the first (the peer)."""
    peer = sides[0].time
    table = benchlib.Table(title, ["side", "time s", "CPU s", per, f"{per} (CPU)", "x peer", "x peer (CPU)"])
    for s in sides:
        t = s.time
        table.add(
            s.name, t.wall, t.cpu, audio_s / t.wall, audio_s / t.cpu, peer.wall / t.wall, peer.cpu / t.cpu
        )
    return table


# ---- the run -----------------------------------------------------------------------------------


def run_scenario(
    s: Scenario, folder: Path, device: torch.device, seed: int, parts: set[str]
) -> tuple[list[Any], list[Any], dict]:
    """The tables, targets and raw data of one model size: the comparisons named in ``parts``."""
    train_manifest, dev_manifest = write_corpus(folder, s.kind, s.utterances, s.letters, seed, s.scale)
    trainers = {}
    for attention in ("location", "dot"):
        config = copy.deepcopy(s.config)
        config.model.attention = attention
        trainers[attention] = Trainer(
            config,
            train_manifest,
            dev_manifest,
            folder / f"exp-{attention}",
            device=str(device),
            progress=False,
        )
    ours = trainers["location"]
    vocab = len(ours.vocab)
    brain = peer_brain(s.config, vocab, ours.model, str(device))
    peer = brain.modules.model
    n_peer, n_loc, n_dot = count(peer), count(ours.model), count(trainers["dot"].model)
    if abs(n_loc - n_peer) > PARAM_TOLERANCE * n_peer:
        raise SystemExit(f"{s.name}: parameter counts differ by more than 10 %: {n_loc} against {n_peer}")
    print(
        f"{s.name}: parameters SpeechBrain {n_peer:,}, package location {n_loc:,}, dot {n_dot:,}", flush=True
    )

    ours.sampler.set_epoch(0)
    index_batches = ours.sampler.batches()
    timed_idx = index_batches[: s.steps]
    warm_idx = min(index_batches[s.steps :] or index_batches, key=len)

    def load(indices: list[int]) -> Batch:
        return collate([ours.train_set[i] for i in indices]).to(device)

    batches = [load(b) for b in timed_idx]
    warm = load(warm_idx)
    hop_s = s.config.features.hop_ms / 1000
    audio_s = sum(float(b.feat_lens.sum()) for b in batches) * hop_s
    padding = 1 - sum(float(b.feat_lens.sum()) for b in batches) / sum(
        b.feats.shape[0] * b.feats.shape[1] for b in batches
    )
    tables, targets = [], []
    m = s.config.model
    shape = (
        f"{m.encoder_layers}x{m.encoder_hidden} {'bi' if m.bidirectional else ''}LSTM, "
        f"stack {m.stack_frames}, {s.config.features.n_mels} mels, "
        f"{m.decoder_layers}x{m.decoder_hidden} decoder"
    )

    training: dict[str, Any] = {}
    if "training" in parts:
        # Training.
        sides = [
            Side(
                f"SpeechBrain {PEER_VERSION} (location), {n_peer / 1e6:.2f} M",
                lambda i: brain.fit_batch(batches[i]),
                lambda: brain.fit_batch(warm),
            ),
            Side(
                f"package location, {n_loc / 1e6:.2f} M",
                lambda i: ours.train_step(batches[i]),
                lambda: ours.train_step(warm),
            ),
            Side(
                f"package dot, {n_dot / 1e6:.2f} M",
                lambda i: trainers["dot"].train_step(batches[i]),
                lambda: trainers["dot"].train_step(warm),
            ),
        ]
        print(f"{s.name}: training", flush=True)
        interleave(sides, len(batches), device)
        title = (
            f"Training, {s.name} size ({shape}), {len(batches)} batches of "
            f"{np.mean([len(b) for b in batches]):.1f} utterances, {100 * padding:.0f} % padding, "
            f"{audio_s:.0f} s of audio"
        )
        tables.append(speed_table(title, sides, audio_s))
        targets.append(
            benchlib.Target(
                f"{s.name}: training, package location / SpeechBrain",
                sides[0].time.wall / sides[1].time.wall,
                TARGET_TRAINING,
            )
        )
        training = {x.name: x.times for x in sides}

    if "encoder" in parts:
        # The encoder alone, forward and backward.
        def ours_encoder(b: Batch) -> None:
            with benchlib.autocast(device):
                feats = ours.model.normalize(b.feats, b.feat_lens)
                enc = ours.model.encoder(feats, b.feat_lens)
                loss = enc.outputs.float().sum() + enc.final[0].float().sum() + enc.final[1].float().sum()
            loss.backward()

        def peer_encoder(b: Batch) -> None:
            with benchlib.autocast(device):
                loss = peer.encode(b.feats).float().sum()
            loss.backward()

        enc_sides = [
            Side(
                "SpeechBrain nnet.RNN.LSTM (padded nn.LSTM)",
                lambda i: peer_encoder(batches[i % len(batches)]),
                lambda: peer_encoder(warm),
            ),
            Side(
                "package Encoder (segmented_lstm, exact final states)",
                lambda i: ours_encoder(batches[i % len(batches)]),
                lambda: ours_encoder(warm),
            ),
        ]
        print(f"{s.name}: encoder", flush=True)
        ours.model.train()
        peer.train()
        reps = 2
        interleave(enc_sides, len(batches) * reps, device)
        tables.append(
            speed_table(
                f"Encoder alone (forward + backward), {s.name} size ({shape})", enc_sides, audio_s * reps
            )
        )
        targets.append(
            benchlib.Target(
                f"{s.name}: encoder, package / SpeechBrain padded LSTM",
                enc_sides[0].time.wall / enc_sides[1].time.wall,
                TARGET_ENCODER,
            )
        )

    if "decoding" in parts:
        # Decoding (location models, untrained): <eos> is made impossible on both sides, so that both
        # run the same number of steps, about one per character of read speech.
        ratio = benchlib.CHARS_PER_SECOND * hop_s * m.stack_frames
        order = sorted(range(len(ours.train_set)), key=lambda i: -ours.sampler.frames[i])[: s.decode_utts]
        dbatch = load(order)
        daudio = float(dbatch.feat_lens.sum()) * hop_s
        with torch.no_grad():
            ours.model.decoder.output.bias[Vocabulary.eos_id] = -1e4
            peer.seq_lin.w.bias[Vocabulary.eos_id] = -1e4
        ours.model.eval()
        peer.eval()
        dec_rows = []
        short = load(order[-1:])  # warms the searches up
        for beam in (1, 5):
            cfg = DecodeConfig(beam_size=beam, max_len_ratio=ratio, max_len_offset=0)
            kw = dict(
                bos_index=Vocabulary.sos_id,
                eos_index=Vocabulary.eos_id,
                min_decode_ratio=0.0,
                max_decode_ratio=ratio,
            )
            if beam == 1:
                searcher = S2SRNNGreedySearcher(peer.emb, peer.dec, peer.seq_lin, **kw)
                ours_search = greedy_search
            else:
                searcher = S2SRNNBeamSearcher(peer.emb, peer.dec, peer.seq_lin, beam_size=beam, **kw)
                ours_search = beam_search

            def peer_decode(b: Batch, searcher: Any = searcher) -> None:
                with torch.no_grad(), benchlib.autocast(device):
                    enc = peer.encode(b.feats)
                    searcher(enc, b.feat_lens.float() / b.feats.shape[1])

            def ours_decode(b: Batch, search: Any = ours_search, cfg: DecodeConfig = cfg) -> None:
                with benchlib.autocast(device):
                    search(ours.model, b.feats, b.feat_lens, cfg)

            dsides = [
                Side(
                    f"SpeechBrain {type(searcher).__name__}",
                    lambda i, f=peer_decode: f(dbatch),
                    lambda f=peer_decode: f(short),
                ),
                Side(
                    f"package {ours_search.__name__}",
                    lambda i, f=ours_decode: f(dbatch),
                    lambda f=ours_decode: f(short),
                ),
            ]
            print(f"{s.name}: decoding, beam {beam}", flush=True)
            interleave(dsides, 1, device)
            for x in dsides:
                t = x.time
                dec_rows.append(
                    [
                        f"beam {beam}",
                        x.name,
                        t.wall,
                        t.cpu,
                        t.wall / daudio,
                        dsides[0].time.wall / t.wall,
                        dsides[0].time.cpu / t.cpu,
                    ]
                )
            if beam == 5:
                targets.append(
                    benchlib.Target(
                        f"{s.name}: beam-5 RTF, SpeechBrain / package",
                        dsides[0].time.wall / dsides[1].time.wall,
                        TARGET_BEAM,
                    )
                )
        dtable = benchlib.Table(
            f"Decoding (encoder + search), {s.name} size, location attention, {len(order)} utterances "
            "in one batch, "
            f"{daudio:.0f} s of audio, {ratio:.2f} steps per encoder frame",
            ["search", "side", "time s", "CPU s", "RTF", "x peer", "x peer (CPU)"],
        )
        for row in dec_rows:
            dtable.add(*row)
        tables.append(dtable)
    info = {
        "parameters": {"speechbrain": n_peer, "location": n_loc, "dot": n_dot},
        "batch_sizes": [len(b) for b in batches],
        "padding": padding,
        "audio_s": audio_s,
        "training_times": training,
    }
    return tables, targets, info


def main() -> None:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--scenarios", default="digits,librispeech", help="comma-separated: digits, librispeech")
    p.add_argument("--steps", type=int, default=0, help="timed training batches (default: per scenario)")
    p.add_argument("--max-frames", type=int, default=0, help="override train.max_frames")
    p.add_argument("--parts", default="training,encoder,decoding", help="comma-separated subset")
    args = p.parse_args()
    if sb is None:
        raise SystemExit(
            f"bench_peer: speechbrain is not installed (pip install -e '.[bench]' installs {PEER_VERSION})"
        )
    run = benchlib.start("peer", args)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("speechbrain").setLevel(logging.WARNING)
    tables, targets, data = [], [], {}
    for s in scenarios(args):
        print(f"{s.name}: building the corpus and the trainers", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
            t, g, info = run_scenario(s, Path(tmp), run.device, args.seed, set(args.parts.split(",")))
        tables += t
        targets += g
        data[s.name] = info
    data["speechbrain"] = sb.__version__
    data["mkldnn"] = torch.backends.mkldnn.is_available()
    benchlib.finish(run, tables, targets, data)


if __name__ == "__main__":
    main()
