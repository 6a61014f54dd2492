"""Write a word list with counts for the word LM of `--lm` (asr_s2s.word_lm): general English from
wordfreq (Wikipedia, subtitles, news, books, web text; nothing from speechocean762), optionally
interpolated with the words of training transcripts.

    python recipes/speechocean762/word_list.py --out data/speechocean762/words.txt \
        [--top 50000] [--manifest data/speechocean762/train.jsonl --manifest-weight 0.5]

Needs wordfreq (`pip install 'asr-s2s[words]'`). Never pass a dev or test manifest: its words would
leak into the LM.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from asr_s2s.text import normalize

SCALE = 1e9  # counts are probabilities times this: integers for every listed word


def general_english(top: int) -> dict[str, float]:
    """The ``top`` most frequent English words of wordfreq and their probabilities."""
    try:
        from wordfreq import top_n_list, word_frequency
    except ImportError:
        sys.exit("word_list.py: wordfreq is not installed (pip install 'asr-s2s[words]')")
    words = {}
    for word in top_n_list("en", top):
        word = normalize(word)
        if word and " " not in word:
            words[word] = words.get(word, 0.0) + word_frequency(word, "en")
    total = sum(words.values())
    return {w: p / total for w, p in words.items()}


def manifest_words(path: Path) -> dict[str, float]:
    counts: Counter[str] = Counter()
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                counts.update(normalize(json.loads(line)["text"]).split())
    total = sum(counts.values())
    return {w: c / total for w, c in counts.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--top", type=int, default=50000, help="most frequent English words to list")
    parser.add_argument("--manifest", type=Path, help="training manifest whose words are mixed in")
    parser.add_argument("--manifest-weight", type=float, default=0.5, help="its share of the mixture")
    args = parser.parse_args(argv)
    probs = general_english(args.top)
    if args.manifest:
        lam = args.manifest_weight
        own = manifest_words(args.manifest)
        probs = {w: (1 - lam) * probs.get(w, 0.0) + lam * own.get(w, 0.0) for w in probs.keys() | own.keys()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ranked = sorted(probs.items(), key=lambda item: (-item[1], item[0]))
    args.out.write_text("".join(f"{w} {max(1, round(p * SCALE))}\n" for w, p in ranked), encoding="utf-8")
    print(f"{len(ranked)} words -> {args.out}")


if __name__ == "__main__":
    main()
