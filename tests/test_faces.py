"""The face detector that gives ConSE the `person` ImageNet-1k lacks: a face of a
reasonable size on a real portrait, none on photos without a person nor on Fashion-MNIST."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model.detectors.faces import PERSON_SCORE, FaceDetector, grey_copy
from model.vocab.hierarchy import imagenet_concepts
from model.vocab.rules import DETECTED, PERSON

# scikit-image's photos with no person in them (the cameraman's face is in profile: no
# frontal face to find either, so it is left out of both lists)
NO_PERSON = ["chelsea", "coffee", "rocket", "horse", "motorcycle", "brick", "grass", "moon"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Image.Image]:
    pytest.importorskip("skimage.data", reason="scikit-image's photos are absent")
    from model.data.datasets import export_photos

    out = tmp_path_factory.mktemp("photos")
    export_photos(out, names=["astronaut", *NO_PERSON])
    return {p.stem: Image.open(p).convert("RGB") for p in out.glob("*.png")}


def test_the_astronaut_has_a_face_of_a_reasonable_size(photos: dict[str, Image.Image]) -> None:
    faces = FaceDetector().faces(photos["astronaut"])
    assert len(faces) == 1, faces
    face = faces[0]
    w, h = face.image_size
    assert max(w, h) <= 160  # it ran on the small grey copy
    assert 0.15 <= face.width / min(w, h) <= 0.8
    # Eileen Collins's face sits in the photo's upper middle
    assert face.row < h / 2 and w / 4 < face.col + face.width / 2 < 3 * w / 4
    assert FaceDetector().concepts(photos["astronaut"]) == {PERSON: PERSON_SCORE}


def test_no_face_on_photos_without_a_person(photos: dict[str, Image.Image]) -> None:
    detector = FaceDetector()
    found = {name: detector.faces(photos[name]) for name in NO_PERSON}
    assert not any(found.values()), found


def test_no_face_on_fashion_mnist() -> None:
    from model.data.datasets import read_fashion_mnist

    try:
        images, _ = read_fashion_mnist("test", progress=False)
    except Exception as e:  # noqa: BLE001 - the data set is optional here
        pytest.skip(f"Fashion-MNIST is absent: {e}")
    detector = FaceDetector()
    picked = images[:: len(images) // 200][:200]  # 200 spread over the test split
    hits = [i for i, a in enumerate(picked) if detector.faces(Image.fromarray(a).convert("RGB"))]
    assert hits == []


def test_the_grey_copy_is_bounded_and_never_enlarged() -> None:
    assert grey_copy(Image.new("RGB", (1600, 900))).size == (160, 90)
    assert grey_copy(Image.new("RGB", (28, 28))).size == (28, 28)
    assert grey_copy(Image.new("RGB", (40, 30))).mode == "L"
    assert FaceDetector().faces(Image.new("RGB", (20, 20))) == []  # below the window


def test_a_detected_person_is_a_tag_of_its_own_kind() -> None:
    """The detector's score lifts `person` above its (zero) class mass; it shows as
    `detected`, and a class's own mass is never lowered by it."""
    cs = imagenet_concepts()
    probs = np.zeros(1000, np.float32)
    probs[0] = 0.9  # a tench
    tags = cs.ranked(probs, 5, detected={PERSON: PERSON_SCORE})
    by_name = {c.name: (c.kind, m) for c, m in tags}
    assert by_name["person"] == (DETECTED, pytest.approx(PERSON_SCORE))
    assert by_name["tench"][1] == pytest.approx(0.9)
    # without the detector, no person
    assert "person" not in {c.name for c, _ in cs.ranked(probs, 5)}


def test_the_gpu_path_hands_the_detector_a_small_picture() -> None:
    torch = pytest.importorskip("torch")
    from model.device import small_picture

    x = torch.zeros((3, 600, 900), dtype=torch.uint8)
    x[0] = 200
    small = small_picture(x, 320)
    assert small.size == (320, 213) and small.mode == "RGB"
    assert small.getpixel((10, 10)) == (200, 0, 0)


class SureTench:
    """A stand-in backbone whose classifier always says tench."""

    name = "sure-tench"
    weights_id = "x"
    precision = "fp32"

    def logits(self, features: np.ndarray) -> np.ndarray:
        out = np.full((len(features), 1000), -10.0, np.float32)
        out[:, 0] = 10.0
        return out


def test_conse_files_a_detected_face_under_person() -> None:
    """What the loader's hook found reaches ConSE's payload, and the classifier runs once
    for the vectors and the payload."""
    from model.embedders.conse import ConseEmbedder

    backbone = SureTench()
    calls = []
    logits = backbone.logits
    backbone.logits = lambda f: calls.append(len(f)) or logits(f)  # type: ignore[method-assign]
    vectors = np.eye(1000, 4, dtype=np.float32)
    emb = ConseEmbedder(backbone=backbone, class_vectors=vectors)  # type: ignore[arg-type]
    vecs, payload = emb.embed_payload(np.zeros((2, 8), np.float32), [{PERSON: PERSON_SCORE}, {}])
    assert calls == [2] and vecs.shape == (2, 4)
    tench = imagenet_concepts().concepts[0].key
    assert payload[0]["detected"] == {PERSON: PERSON_SCORE}
    assert PERSON in payload[0]["concepts"] and tench in payload[0]["concepts"]
    assert payload[1]["detected"] == {} and PERSON not in payload[1]["concepts"]
