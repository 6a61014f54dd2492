"""Corpus-level WER/CER scoring with jiwer, and decoding a dataset for evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer

from asr_s2s.text import normalize


@dataclass
class Score:
    """Corpus totals: error rates are total errors over total reference words (or characters)."""

    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    ref_words: int
    utterances: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def score(references: Sequence[str], hypotheses: Sequence[str]) -> Score:
    """Normalize both sides with :func:`asr_s2s.text.normalize` and score them with jiwer."""
    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses differ in number")
    refs = [normalize(r) for r in references]
    hyps = [normalize(h) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]
    if not keep:
        return Score(0.0, 0.0, 0, 0, sum(len(h.split()) for h in hyps), 0, 0, len(refs))
    refs_k = [refs[i] for i in keep]
    hyps_k = [hyps[i] for i in keep]
    words = jiwer.process_words(refs_k, hyps_k)
    chars = jiwer.process_characters(refs_k, hyps_k)
    extra = sum(len(hyps[i].split()) for i in range(len(refs)) if not refs[i])
    ref_words = words.hits + words.substitutions + words.deletions
    errors = words.substitutions + words.deletions + words.insertions + extra
    return Score(
        wer=errors / ref_words,
        cer=chars.cer,
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions + extra,
        hits=words.hits,
        ref_words=ref_words,
        utterances=len(refs),
    )
