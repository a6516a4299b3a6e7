from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qdrant_edge as qe

from app.cli import main
from app.search.service import (
    DEFAULT_VOCABULARY,
    BadQueryError,
    EmptyIndexError,
    ModelMissingError,
    SearchService,
    fold_inflections,
)
from ingest.pipeline import ingest
from model.data.images import ImageError
from qdrant.edge import EdgeStore
from qdrant.schema import FOLDER_IDS, IMAGES
from tests.conftest import draw_image, make_image_folder
from tests.fakes import FakeEmbedder
from tests.test_ingest import make_tree


def toy_vocabulary(store: EdgeStore, emb: FakeEmbedder) -> dict[str, np.ndarray]:
    """Words placed where the fake embedder puts discs and stripes, plus inflections."""
    disc = emb.embed_images([draw_image("disc", 1)])[0]
    stripes = emb.embed_images([draw_image("stripes", 1)])[0]
    rng = np.random.default_rng(0)
    words = {
        "ball": disc,
        "balls": disc * 0.99 + 0.01 * rng.standard_normal(8).astype(np.float32),
        "zebra": stripes,
        "stripe": stripes * 0.95 + 0.05 * rng.standard_normal(8).astype(np.float32),
        "rare": rng.standard_normal(8).astype(np.float32),
    }
    ranks = {"ball": 10, "balls": 11, "zebra": 20, "stripe": 30, "rare": 90_000}
    names = list(words)
    vecs = np.stack([words[w] / np.linalg.norm(words[w]) for w in names]).astype(np.float32)
    store.ensure_collections({}, 8)
    store.upsert_words([ranks[w] for w in names], names, vecs, "toy")
    meta = store.get_meta()
    meta["words"] = {"source": "toy", "dim": 8, "count": len(names)}
    store.set_meta(meta)
    return words


@pytest.fixture
def indexed(tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "photos"
    make_tree(root)
    store = EdgeStore(tmp_path / "index")
    emb = FakeEmbedder()
    ingest(store, [root], [emb], progress=False, model_meta={"devise": {"words": "toy"}})  # type: ignore[list-item]
    toy_vocabulary(store, emb)

    def factory(model: str, rec: dict[str, Any]) -> FakeEmbedder:
        if model != "devise":
            raise ModelMissingError(model)
        return emb

    yield SearchService(store, embedder_factory=factory), root, emb
    store.close()


def test_text_search_and_every_filter(indexed) -> None:  # type: ignore[no-untyped-def]
    service, root, _ = indexed
    a = service.search_text("zebra", k=5)
    assert a.model == "devise" and a.took_ms >= 0 and len(a.results) == 5
    assert all(r.label == "truck" for r in a.results)  # stripes are the trucks
    scores = [r.score for r in a.results]
    assert scores == sorted(scores, reverse=True)
    # phrase = mean of its words; unknown words among known ones are ignored
    assert service.search_text("ball qqqzzz", k=3).results[0].label in {"cat", "dog"}
    # labels (any of)
    only = service.search_text("zebra", labels=["cat", "dog"], k=20).results
    assert {r.label for r in only} == {"cat", "dog"} and len(only) == 9
    # folder prefix
    animals = service.search_text("zebra", folder=str(root / "animals"), k=20).results
    assert len(animals) == 9 and all("/animals/" in r.path for r in animals)
    assert service.search_text("zebra", folder=str(root / "anim"), k=20).results == []
    # both together
    both = service.search_text("ball", labels=["dog"], folder=str(root / "animals"), k=20).results
    assert len(both) == 4 and {r.label for r in both} == {"dog"}
    # minimum score
    all_scores = [r.score for r in service.search_text("ball", k=15).results]
    cut = sorted(all_scores)[len(all_scores) // 2]
    above = service.search_text("ball", min_score=cut, k=15).results
    assert above and all(r.score >= cut - 1e-6 for r in above)
    assert len(above) < len(all_scores)
    # all together
    combo = service.search_text("ball", labels=["cat"], folder=str(root), min_score=cut, k=15)
    assert all(r.label == "cat" and r.score >= cut - 1e-6 for r in combo.results)


def test_similar_uses_the_stored_vector_of_an_indexed_image(indexed) -> None:  # type: ignore[no-untyped-def]
    service, root, emb = indexed
    query = root / "vehicles/truck/0.png"
    before = emb.calls
    a = service.similar(query, k=3)
    assert emb.calls == before  # no recompute for an indexed path
    assert len(a.results) == 3 and str(query) not in [r.path for r in a.results]
    assert all(r.label == "truck" for r in a.results)
    # an upload (bytes) is embedded
    b = service.similar(query.read_bytes(), k=3)
    assert emb.calls == before + 1 and b.results[0].path == str(query)
    with pytest.raises(ImageError):
        service.similar(b"<html>not an image</html>", k=3)


def test_tags_fold_inflections_and_respect_max_rank(indexed) -> None:  # type: ignore[no-untyped-def]
    service, root, _ = indexed
    tags = service.tag(root / "animals/cat/0.png", k=5)
    words = [t.word for t in tags.results]
    assert words[0] in {"ball", "balls"} and not {"ball", "balls"} <= set(words)
    assert "rare" not in words  # rank 90000 is beyond the default max rank
    assert "rare" in [
        t.word for t in service.tag(root / "animals/cat/0.png", k=5, max_rank=100_000).results
    ]
    assert fold_inflections(
        [("cats", 0.9), ("cat", 0.8), ("boxes", 0.7), ("box", 0.6), ("bus", 0.5)]
    ) == [("cats", 0.9), ("boxes", 0.7), ("bus", 0.5)]


def test_errors_are_clear(indexed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    service, _, _ = indexed
    with pytest.raises(BadQueryError, match="empty"):
        service.search_text("   ")
    with pytest.raises(BadQueryError, match="'qqqzzz'"):
        service.search_text("qqqzzz")
    with pytest.raises(BadQueryError, match="limit"):
        service.search_text("ball " * 2000)
    for k in (0, 100_000):
        with pytest.raises(BadQueryError, match="k must be"):
            service.search_text("ball", k=k)
    with pytest.raises(BadQueryError, match="min score"):
        service.search_text("ball", min_score=-0.5)
    with pytest.raises(ModelMissingError, match="no 'conse' vectors"):
        service.search_text("ball", model="conse")
    empty = SearchService(EdgeStore(tmp_path / "empty"))
    with pytest.raises(EmptyIndexError, match="devise ingest"):
        empty.search_text("ball")
    empty.store.close()


def test_unknown_word_suggests_near_spellings(tmp_path: Path, glove) -> None:  # type: ignore[no-untyped-def]
    from ingest.vocabulary import load_vocabulary

    store = EdgeStore(tmp_path / "index")
    make_image_folder(tmp_path / "p", {"cat": "disc"}, 2)
    ingest(store, [tmp_path / "p"], [FakeEmbedder()], progress=False)  # type: ignore[list-item]
    load_vocabulary(store, glove, 2000, progress=False)
    service = SearchService(store)
    with pytest.raises(BadQueryError, match=r"'housse' \(did you mean .*house"):
        service.search_text("housse")
    store.close()


def test_cli_json_shapes_end_to_end(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_image_folder(tmp_path / "gallery", {"cat": "disc", "truck": "stripes"}, 6)
    idx = ["--index", str(tmp_path / "index")]

    def run_json(argv: list[str]) -> Any:
        capsys.readouterr()
        assert main(argv) == 0
        return json.loads(capsys.readouterr().out)

    ing = run_json(["ingest", str(data), "--checkpoint", str(tiny_checkpoint), "--json", *idx])
    assert set(ing) == {"indexed", "unchanged", "moved", "pruned", "failed", "seconds", "faces"}
    # the face stage ran after the embedding (on by default; drawn discs and stripes: no face)
    assert set(ing["faces"]) == {"photos", "faces", "new_people", "failed", "seconds"}
    assert ing["faces"]["photos"] == 12 and ing["faces"]["faces"] == 0
    assert ing["indexed"] == 12 and ing["failed"] == {}
    # the first ingest loaded the default vocabulary by itself, with no `devise words`
    st = run_json(["status", "--json", *idx])
    assert set(st) == {"index", "images", "words", "models"}
    # the default vocabulary, plus the checkpoint's labels (and their hypernyms)
    assert st["images"] == 12 and st["words"] > DEFAULT_VOCABULARY
    # the contract's keys, and the precision its vectors were made at (what `auto` ran)
    assert set(st["models"]["devise"]) == {"dim", "id", "points", "precision", "precisions"}
    assert st["models"]["devise"]["precisions"] == [st["models"]["devise"]["precision"]]
    assert st["models"]["devise"]["points"] == 12 and st["models"]["devise"]["dim"] == 50
    s = run_json(["search", "cat", "-k", "4", "--json", *idx])
    # "query": how the compound query was read (only text searches have one)
    assert set(s) == {"model", "took_ms", "results", "query"} and len(s["results"]) == 4
    # `cat` is one of the checkpoint's labels: ranked by its calibrated margin, and said so
    assert s["query"].startswith("cat (the model's label: score = its margin")
    assert run_json(["search", "cat kitten", "-k", "1", "--json", *idx])["query"] == "cat · kitten"
    assert set(s["results"][0]) == {"path", "score", "label", "folder"}
    img = str(data / "cat" / "000.png")
    sim = run_json(["similar", img, "-k", "3", "--label", "truck", "--json", *idx])
    assert len(sim["results"]) == 3 and {r["label"] for r in sim["results"]} == {"truck"}
    tags = run_json(["tag", img, "-k", "5", "--json", *idx])
    assert len(tags["results"]) == 5 and set(tags["results"][0]) == {"word", "score", "kind"}
    # a photo that is not in the index is embedded with the checkpoint's backbone
    draw_image("disc", 4242).save(tmp_path / "new.png")
    tags2 = run_json(["tag", str(tmp_path / "new.png"), "--json", *idx])
    assert len(tags2["results"]) == 10
    # bad input: clear message, non-zero exit, no traceback
    capsys.readouterr()
    assert main(["search", "", *idx]) == 1
    assert main(["tag", str(tmp_path / "missing.png"), *idx]) == 1
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    assert main(["tag", str(tmp_path / "bad.jpg"), *idx]) == 1
    assert main(["search", "cat", "--index", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "empty" in err and "not found" in err
    assert "not an image" in err and "no index at" in err


def test_hyphenated_query_uses_its_parts_when_the_whole_is_unknown(indexed) -> None:  # type: ignore[no-untyped-def]
    service, _, _ = indexed
    v = service.text_vector("zebra-ball", "devise")
    assert np.allclose(v, service.text_vector("zebra ball", "devise"), atol=1e-6)
    assert not np.allclose(v, service.text_vector("zebra", "devise"), atol=1e-3)


def test_empty_answer_names_the_filter_that_can_never_match(indexed) -> None:  # type: ignore[no-untyped-def]
    service, root, _ = indexed
    nowhere = service.search_text("zebra", folder=str(root / "nonexistent"), k=5)
    assert nowhere.results == [] and nowhere.note is not None
    assert nowhere.note == f"no indexed image is under {(root / 'nonexistent').as_posix()}"
    nope = service.search_text("zebra", labels=["nope"], k=5)
    assert nope.results == [] and nope.note is not None
    assert nope.note.startswith("no image has the label 'nope' (labels: ")
    assert "cat" in nope.note and "truck" in nope.note
    # a score floor that nothing reaches is not a filter that can never match: no note
    high = service.search_text("zebra", min_score=1.0, k=5)
    assert high.results == [] and high.note is None
    # filters that do match leave no note even when they narrow the answer
    assert service.search_text("zebra", labels=["cat"], k=5).note is None
    # --json carries the note too (an optional key: scripts reading the results are unchanged)
    assert service.search_text("zebra", labels=["nope"], k=5).to_json()["note"] == nope.note
    assert "note" not in service.search_text("zebra", labels=["cat"], k=5).to_json()


def test_devise_ingest_numbers_the_points_of_an_index_made_before(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An index whose points have no `folder_ids` (written before they existed) answers a
    folder filter by name; the next `devise ingest`, with nothing new to index, gives every
    point its numbers, and the same search answers alike from them."""
    data = make_image_folder(tmp_path / "gallery", {"cat": "disc", "truck": "stripes"}, 6)
    idx = ["--index", str(tmp_path / "index")]
    assert main(["ingest", str(data), "--checkpoint", str(tiny_checkpoint), *idx]) == 0
    with EdgeStore(tmp_path / "index") as store:
        ids = [r.id for r in store.scroll_images()]
        assert len(ids) == 12 and all(r.payload["folder_ids"] for r in store.scroll_images())
        # as the previous version wrote them: every field but the numbers
        strip = qe.UpdateOperation.delete_payload(ids, [FOLDER_IDS])
        store._write(store._require(IMAGES), strip)
        assert not store._numbered(FOLDER_IDS)

    def search() -> list[str]:
        capsys.readouterr()
        argv = ["search", "cat", "--folder", str(data / "truck"), "-k", "8", "--json", *idx]
        assert main(argv) == 0
        return [r["path"] for r in json.loads(capsys.readouterr().out)["results"]]

    before = search()
    assert len(before) == 6 and all("/truck/" in p for p in before)
    capsys.readouterr()
    assert main(["ingest", str(data), "--checkpoint", str(tiny_checkpoint), *idx]) == 0
    out = capsys.readouterr()
    assert "numbered the folders and cameras of 12 image(s) indexed before" in out.err
    assert "indexed 0, unchanged 12" in out.out  # numbered, not indexed again
    with EdgeStore(tmp_path / "index") as store:
        assert store._numbered(FOLDER_IDS)
        assert store.count(IMAGES) == 12
    assert search() == before
