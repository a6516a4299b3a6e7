"""A devise query that names one of the checkpoint's labels: images ranked by the calibrated
margin of that label over the best other label (calibrated stacking applied to retrieval),
checked against a hand computation on points placed by hand."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from app.cli import main
from app.search.service import ModelMissingError, SearchService
from qdrant.edge import EdgeStore
from qdrant.schema import image_payload, image_point_id
from qdrant.server import ServerStore
from qdrant.store import Store

DIM = 4
LABELS = ["boot", "sandal", "bag"]  # boot and bag seen in training, sandal held out
GAMMA = 0.3


def unit(v: Sequence[float]) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


LABEL_VECS = np.stack([unit([1, 0, 0, 0]), unit([0.8, 0.6, 0, 0]), unit([0, 0, 1, 0])])
# an image's vector: (name, true label, vector)
POINTS = [
    ("boot_a", "boot", unit([1, 0.05, 0, 0.1])),
    ("boot_b", "boot", unit([1, 0.2, 0.1, 0])),
    # an unseen label's images sit far out: by cosine to `sandal` the boots come first
    ("sandal_a", "sandal", unit([0.4, 0.35, 0, 0.85])),
    ("sandal_b", "sandal", unit([0.35, 0.35, 0.1, 0.85])),
    ("bag_a", "bag", unit([0.1, 0.1, 1, 0])),
    ("bag_b", "bag", unit([0.3, 0.2, 0.9, 0.1])),
]


class FakeDevise:
    """What the service reads of a devise model for a label query: labels, seen, gamma."""

    meta: dict[str, Any] = {
        "labels": LABELS,
        "seen": ["boot", "bag"],
        "calibration": {"gamma": GAMMA},
    }

    def label_matrix(self, labels: Sequence[str]) -> np.ndarray:
        return np.stack([LABEL_VECS[LABELS.index(x)] for x in labels])


@pytest.fixture(params=["edge", "server"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SearchService]:
    store: Store
    if request.param == "edge":
        store = EdgeStore(tmp_path / "index")
    else:  # the server code path, through qdrant-client's local mode
        store = ServerStore(QdrantClient(":memory:"), "memory://test")
    store.ensure_collections({"devise": DIM}, DIM)
    payloads = [
        image_payload(
            tmp_path / "photos" / label / f"{name}.png",
            label=label,
            width=8,
            height=8,
            size_bytes=1,
            mtime=0.0,
            sha256=name,
        )  # fmt: skip
        for name, label, _ in POINTS
    ]
    ids = [image_point_id(p["path"]) for p in payloads]
    store.upsert_images(ids, payloads, {"devise": np.stack([v for _, _, v in POINTS])})
    words = ["boot", "sandal", "bag"]
    store.upsert_words([1, 2, 3], words, LABEL_VECS, "toy")
    meta = store.get_meta()
    meta["models"] = {"devise": {"dim": DIM, "id": "fake", "words": "toy"}}
    meta["words"] = {"source": "toy", "dim": DIM, "count": len(words)}
    store.set_meta(meta)

    def factory(model: str, rec: dict[str, Any]) -> FakeDevise:
        if model != "devise":
            raise ModelMissingError(model)
        return FakeDevise()

    yield SearchService(store, embedder_factory=factory)  # type: ignore[arg-type]
    store.close()


def hand_margins(label: str, gamma: float) -> dict[str, float]:
    i = LABELS.index(label)
    offset = np.array([gamma, 0.0, gamma])  # seen: boot, bag
    out = {}
    for name, _, v in POINTS:
        c = LABEL_VECS @ v - offset
        out[name] = float(c[i] - np.delete(c, i).max())
    return out


@pytest.mark.parametrize("bias", ["auto", "off", 0.1])
def test_label_query_ranks_by_the_calibrated_margin(service: SearchService, bias: Any) -> None:
    gamma = {"auto": GAMMA, "off": 0.0}.get(bias, bias) if isinstance(bias, str) else bias
    want = hand_margins("sandal", gamma)
    a = service.search_text("sandal", k=6, zero_shot_bias=bias)
    got = {Path(r.path).stem: r.score for r in a.results}
    assert got.keys() == want.keys()
    for name, score in got.items():
        assert score == pytest.approx(want[name], abs=1e-5)
    assert [r.score for r in a.results] == sorted(got.values(), reverse=True)
    assert "margin over the next label" in a.query


def test_the_unseen_label_finds_its_images_first(service: SearchService) -> None:
    # by plain cosine to `sandal`, a boot outranks a sandal; calibrated, both sandals lead
    cos = {n: float(LABEL_VECS[1] @ v) for n, _, v in POINTS}
    assert min(cos["boot_a"], cos["boot_b"]) > max(cos["sandal_a"], cos["sandal_b"])
    top = [r.label for r in service.search_text("Sandal", k=2).results]
    assert top == ["sandal", "sandal"]


def test_min_score_and_filters_apply_to_the_margin(service: SearchService) -> None:
    a = service.search_text("sandal", k=6, min_score=0.2)
    want = {n for n, m in hand_margins("sandal", GAMMA).items() if m >= 0.2}
    assert want and len(want) < len(POINTS)
    assert {Path(r.path).stem for r in a.results} == want
    only_bags = service.search_text("sandal", k=6, labels=["bag"])
    assert {r.label for r in only_bags.results} == {"bag"}


def test_other_queries_keep_the_word_vector_search(service: SearchService) -> None:
    # a phrase with a weight or two terms is not a label query: plain cosine order
    a = service.search_text("2:sandal", k=6)
    assert "margin" not in a.query
    assert a.results[0].score == pytest.approx(max(float(LABEL_VECS[1] @ v) for *_, v in POINTS))


def test_cli_flag(service: SearchService, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["search", "sandal", "--zero-shot-bias", "nope"])
    assert e.value.code == 2
    assert "--zero-shot-bias takes auto, off or a number" in capsys.readouterr().err
