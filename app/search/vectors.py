"""A query's terms and how they join into one vector: the compound query's grammar read with
the service's limits, the weighted sum of the terms' unit vectors, the message for words the
vocabulary lacks, and an image input decoded for an embedder."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.search.errors import BadQueryError
from app.search.query import QueryError, Term, parse_query, reading
from app.search.request import ImageInput
from app.search.tags import DEFAULT_MAX_RANK

log = logging.getLogger(__name__)
Float32Array = npt.NDArray[np.float32]

MAX_QUERY_CHARS = 500


def check_length(text: str) -> None:
    """Refuse a query longer than MAX_QUERY_CHARS."""
    if len(text) > MAX_QUERY_CHARS:
        raise BadQueryError(
            f"the query is {len(text)} characters long; the limit is {MAX_QUERY_CHARS}"
        )


def query_terms(text: str, image: ImageInput | None = None) -> list[Term]:
    """The terms of a compound query (app.search.query's grammar), plus `image` when given:
    a path, or an upload (bytes or a PIL image) that joins the words with weight 1."""
    text = (text or "").strip()
    check_length(text)
    try:
        terms = parse_query(text)
    except QueryError as e:
        raise BadQueryError(str(e)) from None
    if isinstance(image, (str, Path)):
        terms.append(Term(1.0, image=str(image)))
    elif image is not None:
        terms.append(Term(1.0, image="upload", upload=True))
    if not terms:
        raise BadQueryError("the query is empty: type a word such as 'dog'")
    return terms


def image_term_path(term: Term) -> Path:
    """The file an image term names; refused when there is none."""
    path = Path(str(term.image)).expanduser()
    if not path.is_file():
        raise BadQueryError(
            f"image not found: {term.image} (a term with a slash or an image suffix is a "
            "path; quote words that hold one)"
        )
    return path


def compose(
    terms: Sequence[Term], vectors: Mapping[int, Float32Array]
) -> tuple[Float32Array, list[Term]]:
    """(the weighted sum of the terms' unit vectors, normalised again; the terms used):
    `vectors` holds the vector of each term (by position) that has one."""
    used = [terms[i] for i in sorted(vectors)]
    total = np.zeros_like(next(iter(vectors.values())), dtype=np.float64)
    for i in sorted(vectors):
        v = vectors[i].astype(np.float64)
        total += terms[i].weight * v / max(float(np.linalg.norm(v)), 1e-12)
    norm = float(np.linalg.norm(total))
    # relative to the weights: `dog -dog` leaves rounding noise, not a direction
    if norm < 1e-3 * sum(abs(t.weight) for t in used):
        raise BadQueryError(
            f"the terms cancel out ({reading(used)}): the query points nowhere. Drop a "
            "negative term or change its weight."
        )
    return (total / norm).astype(np.float32), used


def unknown_message(source: str | None, unknown: Sequence[str]) -> str:
    """The words the vocabulary lacks, each with its near spellings in `source`."""
    suggest = suggester(source)
    parts = []
    for w in unknown:
        near = suggest(w)
        parts.append(f"{w!r}" + (f" (did you mean {', '.join(near)}?)" if near else ""))
    return "unknown word(s) in the vocabulary: " + "; ".join(parts)


def suggester(source: str | None) -> Callable[[str], list[str]]:
    """Near spellings from the vocabulary's own source (loaded on this error path only)."""
    try:
        from model.vocab.words import load_words

        words = load_words(source) if source else None
    except Exception as e:  # noqa: BLE001 - suggestions are a courtesy, never a failure
        log.info("no spelling suggestions: %s", e)
        words = None
    if words is None:
        return lambda w: []
    return lambda w: words.suggest(w, limit=DEFAULT_MAX_RANK * 2)


def decode(image: ImageInput) -> Any:
    """A path, raw bytes or a PIL image as an RGB PIL image (the decoder's rules)."""
    from PIL import Image as PILImage

    from model.data.images import decode_image

    if isinstance(image, PILImage.Image):
        return image.convert("RGB")
    return decode_image(image if isinstance(image, bytes) else Path(image))
