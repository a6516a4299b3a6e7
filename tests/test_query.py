"""The compound-query grammar: terms, weights, negatives, phrases, paths, quoting, errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.search.query import (
    QueryError,
    Term,
    looks_like_image_path,
    parse_query,
    read_query,
    reading,
)


def test_words_weights_and_negatives() -> None:
    assert parse_query("beach 2:dog -people") == [
        Term(1.0, text="beach"),
        Term(2.0, text="dog"),
        Term(-1.0, text="people"),
    ]
    assert parse_query("0.5:cat -2:grass -0.25:sky +3:sun") == [
        Term(0.5, text="cat"),
        Term(-2.0, text="grass"),
        Term(-0.25, text="sky"),
        Term(3.0, text="sun"),
    ]
    # -grass is -1:grass
    assert parse_query("-grass") == parse_query("-1:grass")
    # a hyphen inside a word is part of it, and spaces of any kind separate terms
    assert parse_query("  t-shirt\tdon't \n") == [Term(text="t-shirt"), Term(text="don't")]
    assert parse_query("") == [] and parse_query("   ") == []


def test_phrases_in_either_quote() -> None:
    want = [Term(text="ankle boot"), Term(text="dog")]
    assert parse_query('"ankle boot" dog') == want
    assert parse_query("'ankle boot' dog") == want
    assert parse_query("2:'ankle   boot'") == [Term(2.0, text="ankle boot")]
    assert parse_query('-"ankle boot"') == [Term(-1.0, text="ankle boot")]
    # inside quotes a colon or a minus is text, and the other quote is a letter
    assert parse_query('"2:dog -cat"') == [Term(text="2:dog -cat")]
    assert parse_query('"it\'s"') == [Term(text="it's")]


def test_image_paths_bare_or_quoted() -> None:
    assert parse_query("photo.jpg 'at night'") == [
        Term(image="photo.jpg"),
        Term(text="at night"),
    ]
    assert parse_query('2:/photos/a.PNG -"my photos/b c.webp" ./x') == [
        Term(2.0, image="/photos/a.PNG"),
        Term(-1.0, image="my photos/b c.webp"),
        Term(image="./x"),
    ]
    # a colon after a slash belongs to the path, not to a weight
    assert parse_query("./a:b.jpg") == [Term(image="./a:b.jpg")]
    assert looks_like_image_path("~/x") and looks_like_image_path("a.jpeg")
    assert not looks_like_image_path("t-shirt") and not looks_like_image_path("jpg")
    # every file ingest reads is a path when typed bare: an iPhone's photo was a word
    assert parse_query("IMG_0001.HEIC 2:beach") == [
        Term(image="IMG_0001.HEIC"),
        Term(2.0, text="beach"),
    ]
    from model.data.images import IMAGE_EXTENSIONS

    assert all(looks_like_image_path(f"x{suffix.upper()}") for suffix in IMAGE_EXTENSIONS)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('"ankle boot', 'unclosed " in'),
        ("dog 'ankle boot", "unclosed ' in"),
        ("x:dog", "bad weight 'x' in 'x:dog'"),
        ("0:dog", "bad weight '0'"),
        ("-0:dog", "bad weight '-0'"),
        ("nan:dog", "bad weight 'nan'"),
        ("inf:dog", "bad weight 'inf'"),
        ("1000:dog", "between -100 and 100"),
        ("dog:", "bad weight 'dog'"),
        ("2:", "'2:' has no term after it"),
        ("dog -", "'-' has no term after it"),
        ("2: dog", "'2:' has no term after it"),
        ("--grass", "give one sign"),
        ("2:-grass", "give one sign"),
        ('""', "empty phrase"),
        ("'  '", "empty phrase"),
        ('"ankle"boot', "put a space after the closing"),
    ],
)
def test_malformed_queries_say_what_is_wrong(query: str, message: str) -> None:
    with pytest.raises(QueryError, match=message.replace("(", r"\(")) as err:
        parse_query(query)
    assert "\n" not in str(err.value)


def test_reading_shows_heaviest_first() -> None:
    assert reading(parse_query("beach 2:dog -people")) == "dog ×2 · beach · −people"
    assert reading(parse_query("0.5:cat -2:grass 'ankle boot'")) == (
        '"ankle boot" · cat ×0.5 · −grass ×2'
    )
    up = Term(image="upload", upload=True)
    assert reading([*parse_query("'at night' a/b.jpg"), up]) == (
        '"at night" · image a/b.jpg · the uploaded image'
    )


def _concepts() -> Callable[[str], bool]:
    from model.vocab.hierarchy import imagenet_concepts

    cs = imagenet_concepts()
    return lambda text: cs.find(text) is not None


@pytest.mark.parametrize(
    ("typed", "line"),
    [
        ("a dog on the grass", "dog · grass (ignored: a, on, the)"),
        ("horses in a field", "horse · field (ignored: in, a)"),
        ("people on the beach", "person · beach (ignored: on, the)"),
        ("men in shoes", "man · shoe (ignored: in)"),
        ("a cup of coffee", "cup · coffee (ignored: a, of)"),
        # phrases of the vocabulary before words, their last word folded
        ("big cats", '"big cat"'),
        ("German shepherds eating ice cream", '"german shepherd" · eating · "ice cream"'),
        # weights and negation kept (a weighted or negated word is never dropped)
        ("animal -dogs 2:the", "the ×2 · animal · −dog"),
        # a stop word that is a concept stays; a query of nothing but stop words is kept
        ("the computer", "computer (ignored: the)"),
        ("the who", "the · who"),
        # a quoted phrase is kept whole
        ("'cup of tea' on", '"cup of tea" (ignored: on)'),
    ],
)
def test_read_query_as_a_person_means_it(typed: str, line: str) -> None:
    assert read_query(parse_query(typed), _concepts()).line() == line


def test_shipped_stop_words_are_gensims() -> None:
    from gensim.parsing.preprocessing import STOPWORDS

    from model.vocab.lexicon import stop_words

    assert stop_words() == frozenset(STOPWORDS)
