"""The query grammar shared by every face: a list of weighted terms, read without any I/O.

A query is terms separated by spaces. A term is
- a word: `dog`, `t-shirt`;
- a quoted phrase: `"ankle boot"` or `'ankle boot'` (the unit mean of its words);
- an image: a path to an image file, bare or quoted (`photo.jpg`, `"my photos/a.png"`).

Any term may carry a weight, `2:dog`, `0.5:"ankle boot"`, or be negated: `-grass` is
`-1:grass`, and `-2:grass` weighs it twice. The service turns each term into a unit
vector and the query into their weighted sum, normalised again.

Whether a path names an existing file is the service's question: this module only decides
what looks like a path (a slash, or an image file's suffix).

`read_query` then reads the terms as a person means them (the service gives it what the
vocabulary knows): function words are dropped (gensim's stop-word list), words that together
name a phrase of the vocabulary become that phrase (`cup of coffee`, `big cat`, `German
shepherd`), and plurals are folded to their lemma (`horses` -> horse, `people` -> person).
`Reading.line()` says how, in one line: `dog · grass (ignored: a, on, the)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from model.vocab.lexicon import NOUN_RULES, noun_lemma, stop_words

MAX_WEIGHT = 100.0
#: the longest run of typed words tried as one vocabulary phrase ("cup of coffee")
MAX_PHRASE_WORDS = 4
SEPARATOR = " · "
_QUOTES = ("'", '"')
# what makes a bare or quoted term an image path rather than words: every suffix ingest
# reads (model.data.images.IMAGE_EXTENSIONS, not imported: it brings PIL and numpy)
IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".pnm", ".avif", ".heic", ".heif", ".hif",
)  # fmt: skip


class QueryError(ValueError):
    """A query that cannot be read; the message says where and how to fix it."""


@dataclass(frozen=True)
class Term:
    """One term: words (`text`) or an image (`image`, a path as typed), and its weight."""

    weight: float = 1.0
    text: str | None = None
    image: str | None = None
    #: the image is an upload passed beside the text, not a path (`image` is its name)
    upload: bool = False

    @property
    def is_image(self) -> bool:
        return self.image is not None

    def label(self) -> str:
        """The term as `reading` shows it, without its weight."""
        if self.upload:
            return "the uploaded image"
        if self.image is not None:
            return f"image {self.image}"
        text = self.text or ""
        return f'"{text}"' if " " in text else text


def looks_like_image_path(text: str) -> bool:
    """True for text a user means as a file: it holds a slash or ends in an image suffix."""
    return "/" in text or "\\" in text or text.lower().endswith(IMAGE_SUFFIXES)


def parse_query(text: str) -> list[Term]:
    """The terms of `text`, in order. Raises QueryError naming the bad part."""
    terms: list[Term] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start = i
        weight, i = _read_weight(text, i)
        if i >= n or text[i].isspace():
            shown = text[start:i]
            raise QueryError(
                f"{shown!r} has no term after it: write the word right after it, as in {shown}dog"
            )
        if text[i] in _QUOTES:
            quote = text[i]
            end = text.find(quote, i + 1)
            if end < 0:
                example = f"{quote}ankle boot{quote}"
                raise QueryError(f"unclosed {quote} in {text[start:]!r}: close it, as in {example}")
            body = " ".join(text[i + 1 : end].split())
            i = end + 1
            if i < n and not text[i].isspace():
                raise QueryError(
                    f"{text[start : _end_of_token(text, i)]!r}: put a space after the closing "
                    f"{quote}"
                )
            if not body:
                raise QueryError(f"{text[start:i]!r} is an empty phrase: put words inside quotes")
        else:
            end = _end_of_token(text, i)
            body = text[i:end]
            i = end
            if body.startswith("-"):
                raise QueryError(
                    f"{text[start:i]!r}: give one sign, on the weight, as in -2:{body.lstrip('-')}"
                )
        if looks_like_image_path(body):
            terms.append(Term(weight, image=body))
        else:
            terms.append(Term(weight, text=body))
    return terms


def _end_of_token(text: str, i: int) -> int:
    while i < len(text) and not text[i].isspace():
        i += 1
    return i


def _read_weight(text: str, i: int) -> tuple[float, int]:
    """(weight, index after it): `2:`, `-0.5:`, a bare `-` (-1), or none (1)."""
    if text[i] in _QUOTES:
        return 1.0, i
    end = _end_of_token(text, i)
    token = text[i:end]
    colon = token.find(":")
    prefix = token[:colon] if colon >= 0 else None
    # a colon after a slash belongs to a path, not to a weight
    if prefix is not None and "/" not in prefix and "\\" not in prefix:
        try:
            weight = float(prefix)
        except ValueError:
            raise QueryError(
                f"bad weight {prefix!r} in {token!r}: a weight is a number, as in 2:dog or "
                "0.5:dog (quote text that holds a colon)"
            ) from None
        if not math.isfinite(weight) or not 0 < abs(weight) <= MAX_WEIGHT:
            raise QueryError(
                f"bad weight {prefix!r} in {token!r}: use a non-zero number between "
                f"-{MAX_WEIGHT:g} and {MAX_WEIGHT:g}, as in 2:dog or -1:dog"
            )
        return weight, i + colon + 1
    if token.startswith("-"):
        return -1.0, i + 1
    return 1.0, i


def format_weight(weight: float) -> str:
    return f"{abs(weight):g}"


def reading(terms: Sequence[Term]) -> str:
    """How the query was read, heaviest term first: `dog ×2 · beach · −people`."""
    ordered = sorted(terms, key=lambda t: -t.weight)  # stable: ties keep the typed order
    parts = []
    for t in ordered:
        sign = "−" if t.weight < 0 else ""
        times = "" if abs(t.weight) == 1 else f" ×{format_weight(t.weight)}"
        parts.append(f"{sign}{t.label()}{times}")
    return SEPARATOR.join(parts)


@dataclass(frozen=True)
class Reading:
    """A query as read: its content terms (phrases joined, forms folded) and the function
    words it dropped, as typed."""

    terms: list[Term]
    ignored: list[str] = field(default_factory=list)

    def line(self, terms: Sequence[Term] | None = None) -> str:
        """How it was read: `dog · grass (ignored: a, on, the)`; `terms` replaces the read
        terms (the service drops the ones it cannot answer)."""
        shown = reading(self.terms if terms is None else terms)
        if self.ignored:
            shown += f" (ignored: {', '.join(dict.fromkeys(self.ignored))})"
        return shown


def read_query(
    terms: Sequence[Term],
    is_phrase: Callable[[str], bool],
    stop: frozenset[str] | None = None,
    lemma: Callable[[str], str] = noun_lemma,
) -> Reading:
    """Read parsed terms as a person means them. `is_phrase(text)` says whether the
    vocabulary answers a lower-case word or phrase as one concept or label.

    Only plain words (unweighted, unquoted) are joined or dropped: a weighted or negated
    word (`2:dog`, `-the`) is kept as typed, folded; a quoted phrase and an image are kept
    whole. A stop word the vocabulary knows as a concept stays (`computer`). A query of
    nothing but function words is kept as typed, so it still means something."""
    stop = stop_words() if stop is None else stop
    out: list[Term] = []
    ignored: list[str] = []
    run: list[str] = []

    def fold(word: str) -> str:
        low = word.lower()
        if is_phrase(low):
            return low
        folded = lemma(low)
        if folded != low:
            return folded
        # a form the shipped table leaves alone may still be a concept's plural (shoes)
        for suffix, repl in NOUN_RULES:
            if low.endswith(suffix) and len(low) > len(suffix):
                cand = low[: len(low) - len(suffix)] + repl
                if is_phrase(cand):
                    return cand
        return low

    def flush() -> None:
        i = 0
        while i < len(run):
            for n in range(min(MAX_PHRASE_WORDS, len(run) - i), 1, -1):
                words = [w.lower() for w in run[i : i + n]]
                found = next(
                    (
                        p
                        for p in (" ".join(words), " ".join([*words[:-1], fold(words[-1])]))
                        if is_phrase(p)
                    ),
                    None,
                )
                if found is not None:
                    out.append(Term(text=found))
                    i += n
                    break
            else:
                word = run[i]
                if word.lower() in stop and not is_phrase(word.lower()):
                    ignored.append(word)
                else:
                    out.append(Term(text=fold(word)))
                i += 1
        run.clear()

    for t in terms:
        if t.text is not None and not t.is_image and t.weight == 1.0 and " " not in t.text:
            run.append(t.text)
            continue
        flush()
        if t.text is not None and not t.is_image and " " not in t.text:
            out.append(Term(t.weight, text=fold(t.text)))
        else:
            out.append(t)
    flush()
    if not out:  # only function words: read them as typed rather than as nothing
        return Reading(list(terms))
    return Reading(out, ignored)
