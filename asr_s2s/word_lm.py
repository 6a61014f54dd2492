"""A unigram word LM over a word list, spelled out per character for the character decoder's beam.

Shallow fusion with a character LM needs text to train it on; a list of words with their counts
(from any general-language source) is enough for this one. Each hypothesis walks a prefix tree of
the list. A character that extends the current word prefix ``g`` to ``g + c`` scores the look-ahead
increment ``L(g + c) - L(g)``, where ``L(g)`` is the log of the total probability of the words that
start with ``g`` (Hori et al., 2018's word-LM look-ahead, with a unigram); a space or ``<eos>`` that
ends a listed word ``w`` scores ``log P(w) - L(w)``. Summed over a sentence the increments give
``sum_w log P(w)``: the unigram log-probability of its words. A word outside the list costs
``oov_penalty`` nats where it leaves the tree (a character with no branch there, or an end at a
prefix that is not itself a word), after which its characters are free: its total is
``L(longest listed prefix) - oov_penalty``. No increment is positive, as beam search's stopping
rule assumes.

The file holds one ``word count`` per line (whitespace-separated; ``#`` starts a comment); words are
normalized as the model's texts are, and those with characters outside its vocabulary are left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch

from asr_s2s.errors import ConfigError
from asr_s2s.text import SPECIALS, Vocabulary

# torch.save writes zip archives: a file that starts otherwise is read as a word list.
_ZIP_MAGIC = b"PK\x03\x04"


def is_word_list(path: str | Path) -> bool:
    """Whether ``path`` is a word-count text file rather than a saved character LM (a torch file:
    named ``.pt``/``.pth``/``.ckpt``, or a zip archive by its first bytes)."""
    if Path(path).suffix.lower() in (".pt", ".pth", ".ckpt"):
        return False
    with open(path, "rb") as handle:
        return handle.read(4) != _ZIP_MAGIC


def read_word_counts(path: str | Path, vocab: Vocabulary) -> dict[str, float]:
    """``word -> count`` from a ``word count`` file, words normalized as ``vocab``'s texts (counts of
    words that normalize alike are summed); a :class:`ConfigError` naming ``file:line`` for a
    malformed line, or when no word is left."""
    counts: dict[str, float] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the word list ({err})") from None
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            word, count = fields[0], float(fields[1])
            if len(fields) != 2 or not math.isfinite(count) or count <= 0:
                raise ValueError
        except (IndexError, ValueError):
            raise ConfigError(f"{path}:{number}: expected 'word count' with a positive count") from None
        word = vocab.normalize(word)
        if word and " " not in word and not vocab.unknown_chars(word):
            counts[word] = counts.get(word, 0.0) + count
    if not counts:
        raise ConfigError(f"{path}: no word of the list fits the model's vocabulary")
    return counts


class WordLM(torch.nn.Module):
    """The prefix tree of a word list as two tables over (tree node, next token): the node reached
    ``next`` ``(nodes + 1, vocab)`` and the log-score ``delta`` of that token, with ``leaves``
    (bool) marking the tokens that leave the tree (they cost ``oov_penalty``, applied by the
    scorer). Node 0 is the root (between words); the last row is the state "inside a word outside
    the list"."""

    def __init__(self, counts: Mapping[str, float], vocab: Vocabulary) -> None:
        super().__init__()
        self.vocab_size = len(vocab)
        total = float(sum(counts.values()))
        char_id = {tok: i for i, tok in enumerate(vocab.tokens) if i >= len(SPECIALS)}
        space = char_id.get(" ")
        children: list[dict[int, int]] = [{}]
        mass = [1.0]
        word_p: dict[int, float] = {}
        for word, count in counts.items():
            p = count / total
            node = 0
            for ch in word:
                token = char_id[ch]
                child = children[node].get(token)
                if child is None:
                    child = children[node][token] = len(children)
                    children.append({})
                    mass.append(0.0)
                node = child
                mass[node] += p
            word_p[node] = p
        nodes = len(children)
        oov = nodes
        v = self.vocab_size
        nxt = torch.full((nodes + 1, v), oov, dtype=torch.int32)
        delta = torch.zeros(nodes + 1, v)
        leaves = torch.ones(nodes + 1, v, dtype=torch.bool)
        look = [math.log(m) for m in mass]
        ends = [t for t in (space, Vocabulary.eos_id) if t is not None]
        for node, branches in enumerate(children):
            for token, child in branches.items():
                nxt[node, token] = child
                delta[node, token] = look[child] - look[node]
                leaves[node, token] = False
            if node in word_p:
                for token in ends:
                    delta[node, token] = math.log(word_p[node]) - look[node]
                    leaves[node, token] = False
            for token in ends:
                nxt[node, token] = 0
        # Between words: <eos> ends the sentence for free; a second space is never right.
        leaves[0, Vocabulary.eos_id] = False
        if space is not None:
            leaves[0, space] = False
            delta[0, space] = float("-inf")
        # Inside an unlisted word: every character is free, and a space or <eos> ends it.
        leaves[oov] = False
        for token in ends:
            nxt[oov, token] = 0
        self.register_buffer("next", nxt, persistent=False)
        self.register_buffer("delta", delta, persistent=False)
        self.register_buffer("leaves", leaves, persistent=False)
        self.words = len(word_p)

    @classmethod
    def from_file(cls, path: str | Path, vocab: Vocabulary) -> WordLM:
        return cls(read_word_counts(path, vocab), vocab)
