"""The unigram word LM: its per-character increments against the unigram log-probabilities computed
by brute force over the word list, the word-list reader's errors, and its effect in beam search."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_model

from asr_s2s.checkpoint import ModelBundle
from asr_s2s.config import DecodeConfig
from asr_s2s.decoding import search
from asr_s2s.errors import ConfigError
from asr_s2s.scorers import WordLMScorer
from asr_s2s.text import Vocabulary
from asr_s2s.transcribe import Transcriber, read_lm
from asr_s2s.word_lm import WordLM, is_word_list, read_word_counts

COUNTS = {"the": 50.0, "then": 6.0, "them": 4.0, "a": 30.0, "an": 8.0, "ant": 2.0}
VOCAB = Vocabulary.build(["the then them a an ant cat dog's"])
PENALTY = 7.5


def expected_score(sentence: str) -> float:
    """Brute force: ``sum_w log P(w)``, a word outside the list scoring the log-mass of the listed
    words sharing its longest listed prefix, minus the penalty."""
    total = sum(COUNTS.values())
    score = 0.0
    for word in sentence.split():
        if word in COUNTS:
            score += math.log(COUNTS[word] / total)
            continue
        prefix = max(
            (word[:i] for i in range(len(word) + 1) if any(w.startswith(word[:i]) for w in COUNTS)), key=len
        )
        score += math.log(sum(c for w, c in COUNTS.items() if w.startswith(prefix)) / total) - PENALTY
    return score


def walk(lm: WordLM, sentence: str) -> tuple[float, list[float]]:
    """Summed increments of ``sentence`` + <eos> through :class:`WordLMScorer`, and each increment."""
    scorer = WordLMScorer(lm, batch=1, device=torch.device("cpu"), oov_penalty=PENALTY)
    state = scorer.start(1)
    steps = []
    for token in VOCAB.encode(sentence) + [Vocabulary.eos_id]:
        delta, pending = scorer.score(state, torch.tensor([0]))
        steps.append(float(delta[0, token]))
        state = scorer.select(pending, torch.tensor([0]), torch.tensor([token]))
    return sum(steps), steps


@pytest.mark.parametrize(
    "sentence",
    [
        "the",
        "a the then",
        "them an ant",
        "then",
        "cat",
        "tha",
        "th",
        "an dog's the",
        "ant cat ants",
        "theme a",
    ],
)
def test_increments_sum_to_the_unigram_log_probability(sentence: str) -> None:
    lm = WordLM(COUNTS, VOCAB)
    total, steps = walk(lm, sentence)
    assert total == pytest.approx(expected_score(sentence), abs=1e-4)
    assert all(step <= 1e-6 for step in steps)  # never positive: beam search may stop early


def test_no_increment_is_positive_and_a_double_space_is_impossible() -> None:
    lm = WordLM(COUNTS, VOCAB)
    scores = lm.delta - PENALTY * lm.leaves
    assert float(scores[torch.isfinite(scores)].max()) <= 1e-6
    space = VOCAB.tokens.index(" ")
    assert walk(lm, "the")[0] > -math.inf
    assert float(scores[0, space]) == -math.inf  # nothing but a word may follow a space
    assert lm.words == len(COUNTS)


def test_word_list_file_is_normalized_and_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text(
        "# word count\nThe 40\nthe 10\nDOG\u2019S 3\nzebra 5\n\ncat 1  # a comment\n", encoding="utf-8"
    )
    # Normalized as the model's texts ("The" + "the"; the curly apostrophe), "zebra" left out: its
    # z and b are not in the model's vocabulary.
    assert read_word_counts(path, VOCAB) == {"the": 50.0, "dog's": 3.0, "cat": 1.0}
    assert is_word_list(path)
    path.write_text("the 4\nthen\n")
    with pytest.raises(ConfigError, match=r"words\.txt:2: expected 'word count'"):
        read_word_counts(path, VOCAB)
    path.write_text("the -1\n")
    with pytest.raises(ConfigError, match=r"words\.txt:1: expected 'word count' with a positive count"):
        read_word_counts(path, VOCAB)
    path.write_text("zebra 3\n")
    with pytest.raises(ConfigError, match="no word of the list fits"):
        read_word_counts(path, VOCAB)


class Spelling:
    """An 'acoustic' scorer that prefers ``first`` over ``second`` at every position by ``margin``
    (and everything else far less), then <eos>: a stand-in for a decoder that misspells."""

    device = torch.device("cpu")

    def __init__(self, first: str, second: str, margin: float) -> None:
        self.rows = []
        for a, b in zip(
            VOCAB.encode(first) + [Vocabulary.eos_id], VOCAB.encode(second) + [Vocabulary.eos_id]
        ):
            row = torch.full((len(VOCAB),), -20.0)
            row[b] = -1.0 - margin
            row[a] = -1.0
            self.rows.append(row)

    def start(self, beam: int) -> torch.Tensor:
        return torch.zeros(beam, dtype=torch.long)

    def score(self, state: torch.Tensor, tokens: torch.Tensor):
        return torch.stack([self.rows[min(int(s), len(self.rows) - 1)] for s in state]), state

    def select(self, pending: torch.Tensor, index: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return pending.index_select(0, index) + 1


def test_word_lm_turns_a_misspelling_into_a_listed_word_in_beam_search() -> None:
    lm = WordLM(COUNTS, VOCAB)
    cfg = DecodeConfig(beam_size=4)
    acoustic = Spelling("thm an", "the an", margin=0.5)
    alone = search([(1.0, acoustic)], 1, [10], cfg)[0]
    assert VOCAB.decode(alone) == "thm an"
    fused = search([(1.0, acoustic), (0.5, WordLMScorer(lm, 1, torch.device("cpu"), PENALTY))], 1, [10], cfg)[
        0
    ]
    assert VOCAB.decode(fused) == "the an"


def test_transcriber_reads_a_word_list_as_lm(tmp_path: Path, tiny_model_path: Path) -> None:
    model, config, vocab = tiny_model()
    words = tmp_path / "words.txt"
    words.write_text("one 5\ntwo 3\nthree 1\n")
    lm = read_lm(words, torch.device("cpu"), vocab)
    assert isinstance(lm, WordLM) and lm.words == 3
    assert not is_word_list(tiny_model_path)  # a torch.save archive
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    assert not is_word_list(tmp_path / "junk.pt")  # read (and refused) as a character LM
    config.decode.beam_size = 3
    transcriber = Transcriber(ModelBundle(model, config, vocab), device="cpu", lm=words, lm_weight=5.0)
    assert isinstance(transcriber.lm, WordLM)
    waves = [torch.randn(n, generator=torch.Generator().manual_seed(n)) * 0.1 for n in (6000, 9000)]
    # At this weight an unlisted word costs 50 nats: a random model's hypotheses keep to the list.
    for text in transcriber.decode(waves):
        assert set(text.split()) <= {"one", "two", "three"}
