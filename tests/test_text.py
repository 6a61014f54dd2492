"""Tests for asr_s2s.text: normalization and the character vocabulary."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asr_s2s.config import Config, TextConfig, load_config
from asr_s2s.errors import ConfigError
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


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("DON\u2019T", "don't"),  # right single quote
        ("I\u2018M", "i'm"),  # left single quote used as an apostrophe
        ("IT\u02bcS", "it's"),  # modifier letter apostrophe
        ("ROCK`N ROLL", "rock'n roll"),
        ("O\u00b4NEIL", "o'neil"),  # acute accent, which NFKC alone would turn into a space
        ("THE \u2018BEST\u2019 DAY", "the best day"),  # quotation marks, not apostrophes
        ("'QUOTED'", "quoted"),
        ("THE BOYS' BOOKS", "the boys' books"),  # a plural possessive keeps its apostrophe
        ("\"HI\", SHE SAID.", "hi she said"),
        ("WELL-KNOWN \u2014 REALLY", "well known really"),  # hyphen and em dash
        ("CO\u2010OPERATE", "co operate"),  # Unicode hyphen
    ],
)
def test_normalize_real_transcripts(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_normalize_options() -> None:
    text = "Well-known, \u2018Bob\u2019s CAT\u2019!"
    assert normalize(text, TextConfig(hyphens="join")) == "wellknown bob's cat"
    assert normalize(text, TextConfig(hyphens="keep")) == "well-known bob's cat"
    assert normalize(text, TextConfig(lowercase=False)) == "Well known Bob's CAT"
    assert normalize(text, TextConfig(punctuation="keep", hyphens="keep")) == "well-known, bob's cat!"
    assert normalize(text, TextConfig(apostrophes=False)) == "well known bob s cat"


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("'\u2019\u2018\u02bc`\u00b4-s_.")),
    st.sampled_from(["space", "join", "keep"]),
    st.booleans(),
)
def test_normalize_options_are_idempotent(raw: str, hyphens: str, lowercase: bool) -> None:
    cfg = TextConfig(hyphens=hyphens, lowercase=lowercase)
    out = normalize(raw, cfg)
    assert normalize(out, cfg) == out
    assert out == out.strip() and "  " not in out


def test_vocabulary_uses_its_text_config() -> None:
    cfg = TextConfig(hyphens="keep")
    vocab = Vocabulary.build(["A well-known fact"], cfg)
    assert "-" in vocab.tokens and vocab.text == cfg
    assert vocab.decode(vocab.encode("WELL-KNOWN")) == "well-known"
    plain = Vocabulary.build(["A well-known fact"])
    assert "-" not in plain.tokens and plain.decode(plain.encode("WELL-KNOWN")) == "well known"


def test_text_section_round_trips_and_old_configs_load() -> None:
    config = load_config(None, ["text.hyphens=join", "text.lowercase=false"])
    again = Config.from_dict(config.to_dict())
    assert again.text == TextConfig(lowercase=False, hyphens="join")
    old = config.to_dict()
    del old["text"]  # a model file written before the section existed
    assert Config.from_dict(old, strict=False).text == TextConfig()
    with pytest.raises(ConfigError, match="text.hyphens"):
        load_config(None, ["text.hyphens=dash"])
