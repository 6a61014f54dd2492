"""Tests for asr_s2s.text: normalization and the character vocabulary."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asr_s2s.text import EOS, PAD, SOS, SPECIALS, UNK, Vocabulary, normalize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HELLO World", "hello world"),
        ("don't STOP", "don't stop"),
        ("don\u2019t stop", "don't stop"),  # curly apostrophe becomes a straight one
        ("Hello, world! How are you?", "hello world how are you"),
        ("well-known  fact;\tnew\nline", "well known fact new line"),
        ("  spaces   everywhere  ", "spaces everywhere"),
        ("snake_case words", "snake case words"),
        ("...", ""),
        ("", ""),
        ("Ｆｕｌｌｗｉｄｔｈ", "fullwidth"),  # NFKC
        ("caf\u00e9 na\u0131ve", "caf\u00e9 na\u0131ve"),  # letters beyond ASCII are kept
        ("room 101", "room 101"),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_normalize_invariants(raw: str) -> None:
    out = normalize(raw)
    assert normalize(out) == out  # idempotent
    assert out == out.strip() and "  " not in out
    assert out == out.lower()
    assert all(ch.isalnum() or ch in " '" for ch in out)


def test_specials_have_fixed_ids() -> None:
    vocab = Vocabulary.build(["abc"])
    assert vocab.tokens[:4] == SPECIALS == (PAD, SOS, EOS, UNK)
    assert (vocab.pad_id, vocab.sos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert [vocab.tokens[i] for i in (vocab.pad_id, vocab.sos_id, vocab.eos_id, vocab.unk_id)] == list(
        SPECIALS
    )


def test_build_is_sorted_and_from_normalized_text() -> None:
    vocab = Vocabulary.build(["Hello, World!", "it's"])
    assert vocab.tokens[4:] == tuple(sorted(set("hello world it's")))
    assert "," not in vocab.tokens and "H" not in vocab.tokens
    # Order of the texts does not matter.
    assert Vocabulary.build(["it's", "Hello, World!"]) == vocab


def test_encode_decode_round_trip() -> None:
    texts = ["the cat sat", "don't panic", "forty two"]
    vocab = Vocabulary.build(texts)
    for text in texts:
        ids = vocab.encode(text)
        assert len(ids) == len(text)
        assert all(i >= len(SPECIALS) for i in ids)
        assert [vocab.tokens[i] for i in ids] == list(text)
        assert vocab.decode(ids) == text


def test_encode_normalizes_first() -> None:
    vocab = Vocabulary.build(["abc d"])
    assert vocab.encode("ABC,   D!") == vocab.encode("abc d")


def test_unknown_chars_map_to_unk() -> None:
    vocab = Vocabulary.build(["abc"])
    ids = vocab.encode("abz")
    assert ids == [vocab.tokens.index("a"), vocab.tokens.index("b"), vocab.unk_id]
    assert vocab.unknown_chars("abzq c") == {"z", "q", " "}
    assert vocab.unknown_chars("ABC") == set()
    # decode drops <unk> (and any special), keeping the known characters
    assert vocab.decode(ids) == "ab"


def test_decode_stops_at_eos_and_skips_specials() -> None:
    vocab = Vocabulary.build(["ab"])
    a, b = vocab.tokens.index("a"), vocab.tokens.index("b")
    assert vocab.decode([vocab.sos_id, a, vocab.pad_id, b, vocab.eos_id, a, a]) == "ab"
    assert vocab.decode([vocab.eos_id, a]) == ""
    assert vocab.decode([a, 999, b]) == "ab"  # out-of-range ids are ignored


def test_decode_accepts_tensors() -> None:
    torch = pytest.importorskip("torch")
    vocab = Vocabulary.build(["hi there"])
    ids = torch.tensor(vocab.encode("hi there"))
    assert vocab.decode(ids) == "hi there"


def test_vocabulary_must_start_with_specials() -> None:
    with pytest.raises(ValueError):
        Vocabulary(("a", "b"))
    with pytest.raises(ValueError):
        Vocabulary((SOS, PAD, EOS, UNK, "a"))


def test_vocabulary_pickles_and_compares_by_tokens() -> None:
    vocab = Vocabulary.build(["hello world"])
    again = pickle.loads(pickle.dumps(vocab))
    assert again == vocab and again.encode("hello") == vocab.encode("hello")
    assert Vocabulary(tuple(vocab.tokens)) == vocab
    assert len(vocab) == len(vocab.tokens)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="abcdefghij '.,!XYZ\u2019", max_size=30), min_size=1, max_size=5))
def test_round_trip_property(texts: list[str]) -> None:
    vocab = Vocabulary.build(texts)
    for text in texts:
        assert vocab.decode(vocab.encode(text)) == normalize(text)
