"""Function words and noun lemmas for reading queries, shipped small (`lexicon.json`).

- `stop_words()`: gensim's stop-word list (`gensim.parsing.preprocessing.STOPWORDS`), copied
  into the file when it is derived: importing gensim costs about 2 s, and a text query loads
  neither gensim nor the word vectors (tests check the copy against gensim's own list).
- `noun_lemma(word)`: a plural or irregular form folded to its WordNet noun lemma, as WordNet's
  morphy does (its exception list `noun.exc`, then the detachment rules -s, -ses, -xes, -zes,
  -ches, -shes, -men, -ies), derived once for the 100,000 most frequent words of GloVe 6B:
  `horses` -> horse, `people` -> person, `men` -> man, `ponies` -> pony. A form that is a
  lemma of its own and more frequent, or used in WordNet's tagged texts, stays (`glasses`,
  `jeans`, `news`).

- `kind_of(word)`: for a frequent noun that names no ImageNet concept, the nearest concept
  above its commonest WordNet sense, at most `MAX_HOPS` hypernym links up (`astronaut`,
  `man`, `woman` -> person; `puppy` -> dog), by wnid; never for a name (`Eiffel`). Conse
  scores it by that concept's mass, or its own cosine where higher: a weaker reading.

`python -m model.vocab.derive` writes the file from WordNet 3.0 (Debian `wordnet-base`);
WordNet is not needed at run time. WordNet's licence is in WORDNET_LICENSE beside it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

LEXICON_FILE = Path(__file__).with_name("lexicon.json")
#: words folded: the frequent ones, as many as the index loads by default
MAX_FOLD_RANK = 100_000
#: how far up WordNet a word may be read as a concept: girl -> woman -> adult -> person is 3
MAX_HOPS = 3
# WordNet's morphy detachment rules for nouns (suffix, replacement), in its order
NOUN_RULES = (
    ("s", ""),
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
)
# Forms whose lemma WordNet does not list as an exception: it has `people` as a lemma of its
# own (a body of persons), but a person searching photos of people means persons
IRREGULAR = {"people": "person"}


@functools.lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    return dict(json.loads(LEXICON_FILE.read_text()))


@functools.lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """Function words a query drops (gensim's list)."""
    return frozenset(str(w) for w in _data()["stopwords"])


def noun_lemma(word: str) -> str:
    """`word`'s noun lemma (lower-case) when it is a frequent inflected form, else `word`."""
    return str(_data()["inflections"].get(word.lower(), word))


def kind_of(word: str) -> str | None:
    """The wnid of the nearest ImageNet concept above `word`'s commonest noun sense, or None."""
    found = _data().get("kind_of", {}).get(word.lower())
    return str(found) if found else None


def _read_index(root: Path) -> dict[str, int]:
    """WordNet noun lemma -> its tagged-sense count (how often WordNet's corpus used it)."""
    out: dict[str, int] = {}
    with (root / "index.noun").open(encoding="utf-8") as f:
        for line in f:
            if line.startswith(" "):
                continue  # the licence header
            parts = line.split()
            synsets = int(parts[2])
            out[parts[0]] = int(parts[-synsets - 1])
    return out


def _read_exceptions(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with (root / "noun.exc").open(encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                out.setdefault(parts[0], parts[1])
    return out


def derive_lexicon(
    root: Path,
    ranks: dict[str, int],
    stopwords: frozenset[str],
    concepts: dict[str, set[str]] | None = None,
) -> dict[str, Any]:
    """The shipped data: the stop-word list, {inflected form: noun lemma} for the frequent
    alphabetic words of `ranks` (word -> frequency rank), and {noun: concept wnid} for the
    frequent nouns that name no concept, given `concepts` (wnid -> its names, lower-case)."""
    lemmas = _read_index(root)
    exceptions = _read_exceptions(root)

    def rank(w: str) -> int:
        return ranks.get(w, 10**9)

    inflections: dict[str, str] = {}
    for word, r in ranks.items():
        if r >= MAX_FOLD_RANK or not word.isalpha() or not word.islower():
            continue
        base = IRREGULAR.get(word) or exceptions.get(word)
        if base is not None:
            # an irregular form: people -> person, men -> man, mice -> mouse; not when the
            # lemma is rare (data -> datum would read oddly)
            if base in lemmas and base != word and rank(base) < MAX_FOLD_RANK // 2:
                inflections[word] = base
            continue
        if lemmas.get(word, 0) > 0:
            continue  # a lemma WordNet's texts use: glasses, news, species
        for suffix, repl in NOUN_RULES:
            if not word.endswith(suffix) or len(word) - len(suffix) + len(repl) < 2:
                continue
            cand = word[: len(word) - len(suffix)] + repl
            # a rare lemma is a coincidence, not the word's stem (was -> wa, has -> ha)
            if cand not in lemmas or rank(cand) > 10 * rank(word) + 1000:
                continue
            # a rarer lemma of its own stays itself (jeans, pants); a more frequent one folds
            if word in lemmas and rank(word) < rank(cand):
                break
            inflections[word] = cand
            break
    kinds = _kinds(root, ranks, lemmas, concepts or {}) if concepts else {}
    return {
        "source": "WordNet 3.0 (see WORDNET_LICENSE) and gensim's STOPWORDS",
        "kind_of": kinds,
        "max_fold_rank": MAX_FOLD_RANK,
        "stopwords": sorted(stopwords),
        "inflections": dict(sorted(inflections.items())),
    }


def _kinds(
    root: Path, ranks: dict[str, int], lemmas: dict[str, int], concepts: dict[str, set[str]]
) -> dict[str, str]:
    from model.vocab.wordnet import WordNet

    named = {name for names in concepts.values() for name in names}
    wn = WordNet(root)
    out: dict[str, str] = {}
    try:
        for word, r in ranks.items():
            if r >= MAX_FOLD_RANK or not word.isalpha() or word in named or word not in lemmas:
                continue
            senses = wn.senses(word)
            if not senses:
                continue
            # a name (Eiffel, Gretzky) is a person's or a place's, not a kind of thing
            spelled = [x for x in wn.synset(senses[0]).lemmas if x.lower() == word]
            if not spelled or spelled[0][:1].isupper():
                continue
            layer, seen = [senses[0]], {senses[0]}
            for _ in range(MAX_HOPS):
                nxt = [h for o in layer for h in wn.synset(o).hypernyms if h not in seen]
                hit = next((f"n{h:08d}" for h in nxt if f"n{h:08d}" in concepts), None)
                if hit is not None:
                    out[word] = hit
                    break
                seen.update(nxt)
                layer = nxt
    finally:
        wn.close()
    return dict(sorted(out.items()))
