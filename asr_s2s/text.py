"""Text normalization shared by training targets and scoring, and the character vocabulary."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from asr_s2s.config import TextConfig

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
SPECIALS = (PAD, SOS, EOS, UNK)

# Apostrophe look-alikes in real transcripts: right and left single quotes, the modifier letter
# apostrophe, backtick, acute accent, prime.
_APOSTROPHES = str.maketrans({c: "'" for c in "\u2019\u2018\u02bc`\u00b4\u2032"})
# Hyphens and dashes: hyphen-minus, hyphen, non-breaking hyphen, figure dash, en and em dash, minus.
_HYPHENS = re.compile("[-\u2010\u2011\u2012\u2013\u2014\u2212]")
# Apostrophes used as quotation marks: opening a word, or closing one other than a plural
# possessive ("the 'best'" -> "the best", "the boys' books" stays).
_QUOTES = re.compile(r"(?<![\w'])'+|(?<=[^\WsS])'+(?!\w)")
_SPACES = re.compile(r"\s+")
_DEFAULT = TextConfig()


def normalize(text: str, cfg: TextConfig | None = None) -> str:
    """Normalize a transcript as ``cfg`` says (defaults: :class:`asr_s2s.config.TextConfig`).

    By default: the apostrophe variants become ``'`` and apostrophes used as quotation marks go;
    Unicode is NFKC-normalized and lowercased; hyphens and dashes become spaces; other punctuation
    and underscores are dropped; whitespace is collapsed.
    """
    cfg = cfg or _DEFAULT
    if cfg.apostrophes:  # before NFKC too, which turns the acute accent into a space + combining mark
        text = text.translate(_APOSTROPHES)
    text = unicodedata.normalize("NFKC", text)
    if cfg.lowercase:
        text = text.lower()
    if cfg.apostrophes:
        text = text.translate(_APOSTROPHES)
    if cfg.hyphens != "keep":
        text = _HYPHENS.sub(" " if cfg.hyphens == "space" else "", text)
    if cfg.punctuation == "drop":
        keep = "-" if cfg.hyphens == "keep" else ""
        text = re.sub(rf"[^\w' {keep}]+", " ", text).replace("_", " ")
    if cfg.apostrophes:  # last: dropping punctuation can leave a quote at a word's edge
        text = _QUOTES.sub("", text)
    return _SPACES.sub(" ", text).strip()


@dataclass(frozen=True)
class Vocabulary:
    """Characters plus pad/sos/eos/unk; ids 0..3 are the specials in that order. Texts are
    normalized by ``text`` (the model's ``text`` config section) before they are encoded."""

    tokens: tuple[str, ...]
    text: TextConfig = field(default_factory=TextConfig)

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
    def build(cls, texts: Iterable[str], text_config: TextConfig | None = None) -> Vocabulary:
        """Vocabulary of every character in the normalized texts, sorted for stability."""
        cfg = text_config or TextConfig()
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(normalize(text, cfg))
        return cls(SPECIALS + tuple(sorted(counts)), cfg)

    def normalize(self, text: str) -> str:
        """``text`` normalized as this vocabulary's texts are (see :func:`normalize`)."""
        return normalize(text, self.text)

    def encode(self, text: str) -> list[int]:
        """Character ids of the normalized text (no sos/eos); unknown characters map to <unk>."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        return [index.get(ch, self.unk_id) for ch in normalize(text, self.text)]

    def unknown_chars(self, text: str) -> set[str]:
        """Characters of the normalized text that the vocabulary lacks."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        return {ch for ch in normalize(text, self.text) if ch not in index}

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
