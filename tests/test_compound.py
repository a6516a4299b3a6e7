"""Compound queries through the service, the CLI and the web handlers, on both store backends:
the query vector against a hand computation, and an example image plus words."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from qdrant_client import QdrantClient

from app.cli import main
from app.search.query import Term, parse_query
from app.search.service import BadQueryError, ModelMissingError, SearchService
from app.web.handlers import WebHandlers
from ingest.pipeline import ingest
from qdrant.edge import EdgeStore
from qdrant.server import ServerStore
from qdrant.store import Store
from tests.conftest import draw_image
from tests.fakes import FakeEmbedder
from tests.test_ingest import make_tree
from tests.test_service import toy_vocabulary

Vec = npt.NDArray[np.float32]


class FakeClip(FakeEmbedder):
    """A fake with a text tower: a text's vector is a fixed function of its characters."""

    def embed_texts(self, texts: Sequence[str]) -> Vec:
        out = []
        for t in texts:
            rng = np.random.default_rng(sum(ord(c) * (i + 1) for i, c in enumerate(t)))
            v = rng.standard_normal(8).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)


def unit(v: Vec) -> Vec:
    return (v / np.linalg.norm(v)).astype(np.float32)


def open_backend(kind: str, path: Path) -> Store:
    if kind == "edge":
        return EdgeStore(path)
    return ServerStore(QdrantClient(":memory:"), "memory://test")


class Indexed:
    def __init__(self, store: Store, index: Path, root: Path, words: dict[str, Vec]) -> None:
        self.store = store
        self.index = index
        self.root = root
        self.words = {w: unit(v) for w, v in words.items()}
        self.devise = FakeEmbedder("devise")
        self.clip = FakeClip("clip", content_id="fake-clip")

        def factory(model: str, rec: dict[str, Any]) -> FakeEmbedder:
            if model == "devise":
                return self.devise
            if model == "clip":
                return self.clip
            raise ModelMissingError(model)

        self.service = SearchService(store, embedder_factory=factory)

    def stored(self, path: Path, model: str = "devise") -> Vec:
        rec = self.store.find_by_path([path.as_posix()])[path.as_posix()]
        got = self.store.retrieve_images([rec.id], with_vectors=[model])[0].vectors[model]
        return np.asarray(got, dtype=np.float32)

    def scored(
        self, q: Vec, model: str = "devise", skip: Sequence[str] = ()
    ) -> list[tuple[float, str]]:
        """Every image's (cosine to q, path), hand-computed, best first."""
        rows = []
        for r in self.store.scroll_images(with_vectors=[model]):
            v = unit(np.asarray(r.vectors[model], dtype=np.float32))
            rows.append((float(np.dot(v, q)), str(r.payload["path"])))
        return [(s, p) for s, p in sorted(rows, reverse=True) if p not in skip]

    def assert_ranked(
        self,
        got: Sequence[str],
        q: Vec,
        model: str = "devise",
        skip: Sequence[str] = (),
    ) -> None:
        """`got` is the hand-computed ranking by cosine to q, up to the order of equal
        scores: the fake's images include twins with the same vector, and the store orders
        those by its own point order, which follows the loader threads' timing."""
        want = self.scored(q, model, skip)
        true = {p: s for s, p in want}
        assert len(set(got)) == len(got) <= len(want)
        for i, path in enumerate(got):
            assert path in true, f"{path} should not be among the results"
            assert abs(true[path] - want[i][0]) < 1e-5, (i, path, want[: len(got) + 1])


@pytest.fixture(params=["edge", "server"])
def indexed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Indexed]:
    root = tmp_path / "photos"
    make_tree(root)
    store = open_backend(request.param, tmp_path / "index")
    ingest(
        store, [root], [FakeEmbedder("devise"), FakeClip("clip", content_id="fake-clip")],  # type: ignore[list-item]
        progress=False, model_meta={"devise": {"words": "toy"}},
    )  # fmt: skip
    words = toy_vocabulary(store, FakeEmbedder())  # type: ignore[arg-type]
    yield Indexed(store, tmp_path / "index", root, words)
    store.close()


def test_compound_vector_is_the_weighted_sum_of_unit_vectors(indexed: Indexed) -> None:
    svc, w = indexed.service, indexed.words
    v = svc.query_vector(parse_query("2:ball -zebra 0.5:'stripe ball'"), "devise")
    phrase = unit(w["stripe"] + w["ball"])
    want = unit(2 * w["ball"] - w["zebra"] + 0.5 * phrase)
    assert np.allclose(v, want, atol=1e-5) and abs(float(np.linalg.norm(v)) - 1) < 1e-5
    # plain words are the old mean of words, and a hyphenated unknown whole is its parts
    both = unit(w["ball"] + w["zebra"])
    assert np.allclose(svc.query_vector(parse_query("ball zebra"), "devise"), both, atol=1e-5)
    assert np.allclose(svc.query_vector(parse_query("-zebra-ball"), "devise"), -both, atol=1e-5)
    # the search ranks images by cosine to that vector
    got = [r.path for r in svc.search_text("2:ball -zebra 0.5:'stripe ball'", k=6).results]
    assert len(got) == 6
    indexed.assert_ranked(got, want)


def test_an_image_term_uses_the_stored_vector_and_leaves_itself_out(indexed: Indexed) -> None:
    svc, w = indexed.service, indexed.words
    query = indexed.root / "vehicles/truck/0.png"
    img = unit(indexed.stored(query))
    want = unit(img + 2 * w["ball"])
    before = indexed.devise.calls
    for answer in (
        svc.search_text("2:ball", image=query, k=5),  # the CLI's --image
        svc.search_text(f"{query} 2:ball", k=5),  # a path among the words
    ):
        assert len(answer.results) == 5
        indexed.assert_ranked([r.path for r in answer.results], want, skip=[str(query)])
        assert answer.query is not None and answer.query.startswith("ball ×2 · image ")
    assert indexed.devise.calls == before  # an indexed image is never embedded again
    # an upload is embedded, and is not left out: nothing says it is that indexed file
    up = svc.search_text("2:ball", image=query.read_bytes(), k=5)
    assert indexed.devise.calls == before + 1
    assert up.query == "ball ×2 · the uploaded image"
    assert len(up.results) == 5
    indexed.assert_ranked([r.path for r in up.results], want)
    # an image query with no words is `similar`
    alone = svc.search_text("", image=query, k=4).results
    assert [r.path for r in alone] == [r.path for r in svc.similar(query, k=4).results]


def test_clip_takes_its_text_tower_for_words_and_image_tower_for_images(indexed: Indexed) -> None:
    svc = indexed.service
    query = indexed.root / "animals/cat/1.png"
    text = indexed.clip.embed_texts(["at night"])[0]
    want = unit(unit(indexed.stored(query, "clip")) - 0.5 * text)
    v = svc.query_vector(parse_query(f"{query} -0.5:'at night'"), "clip")
    assert np.allclose(v, want, atol=1e-5)
    got = svc.search_text("-0.5:'at night'", image=query, model="clip", k=4).results
    assert len(got) == 4
    indexed.assert_ranked([r.path for r in got], want, "clip", skip=[str(query)])


def test_compound_errors_are_clear(indexed: Indexed, tmp_path: Path) -> None:
    svc = indexed.service
    with pytest.raises(BadQueryError, match=r"cancel out \(ball · −ball\)"):
        svc.search_text("ball -ball")
    with pytest.raises(BadQueryError, match="cancel out"):
        svc.search_text("2:zebra -zebra -zebra")
    with pytest.raises(BadQueryError, match="bad weight 'x'"):
        svc.search_text("x:ball")
    with pytest.raises(BadQueryError, match="unclosed"):
        svc.search_text("'ankle boot")
    with pytest.raises(BadQueryError, match="empty"):
        svc.search_text("  ")
    with pytest.raises(BadQueryError, match=f"image not found: {tmp_path}/nope.jpg"):
        svc.search_text(f"ball {tmp_path}/nope.jpg")
    with pytest.raises(BadQueryError, match="'qqq'.*'zzz'"):
        svc.search_text("qqq -zzz")
    # an unknown word beside known ones is dropped, and the reading says so
    a = svc.search_text("2:ball -qqq", k=3)
    assert a.query == "ball ×2 (ignored, no known word: −qqq)"
    assert [r.path for r in a.results] == [r.path for r in svc.search_text("ball", k=3).results]
    assert svc.query_vector([Term(text="ball")], "devise").shape == (8,)


# the CLI opens an index folder: the embedded backend (the server one is checked above)
@pytest.mark.parametrize("indexed", ["edge"], indirect=True)
def test_cli_search_with_image_and_words(
    indexed: Indexed, capsys: pytest.CaptureFixture[str]
) -> None:
    index = indexed.index
    query = indexed.root / "vehicles/truck/0.png"
    want = indexed.service.search_text("2:ball -zebra", image=query, k=4)
    indexed.store.close()  # the embedded store is locked while open
    capsys.readouterr()
    argv = ["search", "--image", str(query), "2:ball -zebra", "-k", "4", "--index", str(index)]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"model", "took_ms", "results", "query"}
    assert out["query"] == f"ball ×2 · image {query} · −zebra"
    assert [r["path"] for r in out["results"]] == [r.path for r in want.results]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith(f"query: ball ×2 · image {query} · −zebra\n")
    assert main(["search", "ball -ball", "--index", str(index)]) == 1
    missing = str(query.parent / "nope.png")
    assert main(["search", "--image", missing, "ball", "--index", str(index)]) == 1
    err = capsys.readouterr().err
    assert "cancel out" in err and "image not found" in err and "Traceback" not in err


def test_web_handlers_read_the_query_in_both_tabs(indexed: Indexed) -> None:
    h = WebHandlers(indexed.service)
    out = h.search_text("zebra 2:ball -stripe", "devise", [], "", 0.0, 5)
    assert out.ok and "for ball ×2 · zebra · −stripe by devise" in out.status
    buf = io.BytesIO()
    draw_image("stripes", 3).save(buf, format="PNG")
    up = h.search_image(buf.getvalue(), "devise", [], "", 0.0, 5, "2:ball")
    want = indexed.service.search_text("2:ball", image=buf.getvalue(), k=5)
    assert up.ok and up.paths == [r.path for r in want.results]
    assert "for ball ×2 · the uploaded image by devise" in up.status
    # no words: the plain similar-images search, as before
    plain = h.search_image(buf.getvalue(), "devise", [], "", 0.0, 5)
    assert plain.paths == [r.path for r in indexed.service.similar(buf.getvalue(), k=5).results]
    # the words cannot cancel the upload out, but a malformed term is a message
    assert "−ball" in h.search_image(buf.getvalue(), "devise", [], "", 0.0, 5, "ball -ball").status
    bad = h.search_image(buf.getvalue(), "devise", [], "", 0.0, 5, "x:ball")
    assert not bad.ok and bad.status.startswith("⚠️ bad weight 'x'")
