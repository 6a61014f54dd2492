"""Text normalization shared by training targets and scoring, and the character vocabulary."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
SPECIALS = (PAD, SOS, EOS, UNK)

_DROP = re.compile(r"[^\w' ]+")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lowercase, keep apostrophes, drop other punctuation, collapse whitespace.

    Unicode is NFKC-normalized and curly apostrophes become ``'``; underscores count as punctuation.
    """
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'").replace("`", "'")
    text = _DROP.sub(" ", text).replace("_", " ")
    return _SPACES.sub(" ", text).strip()


@dataclass(frozen=True)
class Vocabulary:
    """Characters plus pad/sos/eos/unk; ids 0..3 are the specials in that order."""

    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.tokens[: len(SPECIALS)] != SPECIALS:
            raise ValueError("a vocabulary starts with <pad>, <sos>, <eos>, <unk>")
        object.__setattr__(self, "_index", {tok: i for i, tok in enumerate(self.tokens)})

    pad_id = 0
    sos_id = 1
    eos_id = 2
    unk_id = 3

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, texts: Iterable[str]) -> Vocabulary:
        """Vocabulary of every character in the normalized texts, sorted for stability."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(normalize(text))
        return cls(SPECIALS + tuple(sorted(counts)))

    def encode(self, text: str) -> list[int]:
        """Character ids of the normalized text (no sos/eos); unknown characters map to <unk>."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        return [index.get(ch, self.unk_id) for ch in normalize(text)]

    def unknown_chars(self, text: str) -> set[str]:
        """Characters of the normalized text that the vocabulary lacks."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        return {ch for ch in normalize(text) if ch not in index}

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids, stopping at <eos> and skipping the other specials."""
        chars = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i >= len(SPECIALS) and i < len(self.tokens):
                chars.append(self.tokens[i])
        return _SPACES.sub(" ", "".join(chars)).strip()
