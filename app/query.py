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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MAX_WEIGHT = 100.0
_QUOTES = ("'", '"')
# what makes a bare or quoted term an image path rather than words
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


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
    """How the query was read, heaviest term first: `dog ×2, beach, −people`."""
    ordered = sorted(terms, key=lambda t: -t.weight)  # stable: ties keep the typed order
    parts = []
    for t in ordered:
        sign = "−" if t.weight < 0 else ""
        times = "" if abs(t.weight) == 1 else f" ×{format_weight(t.weight)}"
        parts.append(f"{sign}{t.label()}{times}")
    return ", ".join(parts)
