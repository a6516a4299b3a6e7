"""The face stage's quick path (issue #37): dlib's descriptor run by torch gives dlib's own
numbers, a 12-megapixel JPEG decodes only as large as the detection needs, and a face small
in that copy is described from a larger one. Real faces (the face_recognition 1.3.0 test
photos, see tests/test_people.py), no timings asserted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

dlib_faces = pytest.importorskip("model.detectors.dlib_faces")
if dlib_faces.available() is not None:
    pytest.skip(f"faces need dlib: {dlib_faces.available()}", allow_module_level=True)
pytest.importorskip("torch")

import dlib  # noqa: E402

from model.data.images import decode_image_info  # noqa: E402
from model.detectors import face_net  # noqa: E402
from model.detectors.dlib_faces import FaceFinder, distance, dlib_descriptor  # noqa: E402
from tests.real_faces import faces_dir, missing  # noqa: E402

NAMES = ["obama.jpg", "obama2.jpg", "biden.jpg"]


@pytest.fixture(scope="module")
def real_faces() -> Path:
    why = missing(NAMES)
    if why:
        pytest.skip(why)
    return faces_dir()


def test_the_torch_descriptor_gives_dlib_s_numbers(real_faces: Path) -> None:
    finder = FaceFinder()
    models = finder._models()
    assert models["net"] is not None
    net, dlib_own = models["net"], dlib_descriptor()
    chips, want = [], []
    for name in NAMES:
        rgb = np.asarray(Image.open(real_faces / name).convert("RGB"))
        (rect,) = models["detect"](rgb, 1)
        shape = models["landmarks"](rgb, rect)
        chips.append(dlib.get_face_chip(rgb, shape, face_net.CHIP, face_net.CHIP_PADDING))
        want.append(np.asarray(dlib_own.compute_face_descriptor(rgb, shape)))
    got = face_net.describe(net, chips)
    assert got.shape == (3, 128) and got.dtype == np.float32
    assert np.abs(got - np.asarray(want)).max() < 1e-4
    # and it still tells people apart: the two of Obama close, Biden far
    assert distance(got[0], got[1]) < 0.6 < distance(got[0], got[2])


def test_without_torch_dlib_describes_the_same_faces(
    real_faces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where torch is absent, dlib's own network (loaded only then) describes the faces:
    the same boxes and the same numbers as torch's copy."""
    with_torch = FaceFinder().find_in_file(real_faces / "obama.jpg")
    monkeypatch.setattr(dlib_faces, "_torch_net", lambda path: None)
    finder = FaceFinder()
    assert finder._models()["net"] is None and finder._models()["descriptor"] is not None
    without = finder.find_in_file(real_faces / "obama.jpg")
    assert [f.box for f in without.faces] == [f.box for f in with_torch.faces] != []
    got, want = without.faces[0].descriptor, with_torch.faces[0].descriptor
    assert np.abs(np.asarray(got) - np.asarray(want)).max() < 1e-4


def test_a_file_that_is_not_dlib_s_network_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "net.dat"
    bad.write_bytes(b"\x01\x05con_4" + b"\x00" * 64)
    with pytest.raises(face_net.BadModelFile):
        face_net.read_weights(bad)


def twelve_megapixel(path: Path, face: Path, face_px: int) -> None:
    canvas = Image.new("RGB", (4000, 3000), (120, 140, 100))
    im = Image.open(face).convert("RGB")
    canvas.paste(im.resize((round(im.width * face_px / im.height), face_px)), (600, 300))
    canvas.save(path, quality=90)


def test_a_12_megapixel_jpeg_decodes_at_a_quarter_for_its_large_face(
    real_faces: Path, tmp_path: Path
) -> None:
    path = tmp_path / "big.jpg"
    twelve_megapixel(path, real_faces / "obama.jpg", 2400)
    info = decode_image_info(str(path), max_side=2048, draft_size=921, draft_longest=True)
    assert info.decoded_size == (1000, 750)
    assert (info.width, info.height) == (4000, 3000)
    found = FaceFinder().find_in_file(path)
    assert found.decoded == (1000, 750)
    (face,) = found.faces
    assert face.size > 400  # in the photo's own pixels
    small = FaceFinder().find(Image.open(real_faces / "obama.jpg"))[0]
    assert distance(face.descriptor, small.descriptor) < 0.45


def test_a_face_small_in_the_detection_copy_is_described_from_a_larger_one(
    real_faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "small.jpg"
    # a face about 320 px wide in 4,000: 80 px in the 1,000 px copy, under DETAIL
    twelve_megapixel(path, real_faces / "obama.jpg", 1000)
    finder = FaceFinder()
    sizes: list[tuple[int, int]] = []
    real = finder._described

    def spy(align: Image.Image, *a: object) -> object:
        sizes.append(align.size)
        return real(align, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(finder, "_described", spy)
    (face,) = finder.find_in_file(path).faces
    assert sizes == [(2000, 1500)]
    reference = FaceFinder().find(Image.open(real_faces / "obama.jpg"))[0]
    assert distance(face.descriptor, reference.descriptor) < 0.45
