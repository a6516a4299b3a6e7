"""The decoder on every file of the corpus, the bomb guard, draft mode and preprocessing."""

from __future__ import annotations

import io
import os
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile, ImageOps

from ingest.exif import read_exif
from model.data.images import (
    MAX_SIDE,
    DecodedImage,
    ImageError,
    Preprocess,
    decode_image,
    decode_image_info,
    is_image_path,
    jpeg_for_gpu,
    load_array,
    to_array,
)
from tests import corpus


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], dict[Path, str]]:
    root = tmp_path_factory.mktemp("corpus")
    good, bad = corpus.build_corpus(root)
    return root, good, bad


def _good(files: tuple[Path, list[Path], dict[Path, str]], name: str) -> Image.Image:
    return decode_image(files[0] / "good" / name)


def _close(pixel: object, colour: tuple[int, int, int], tol: int = 30) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(int(a) - b) <= tol for a, b in zip(pixel, colour, strict=True))


def test_corpus_is_quick_and_deterministic(tmp_path: Path) -> None:
    start = time.perf_counter()
    good_a, bad_a = corpus.build_corpus(tmp_path / "a")
    assert time.perf_counter() - start < 1.0
    good_b, bad_b = corpus.build_corpus(tmp_path / "b")
    assert [p.name for p in good_a] == [p.name for p in good_b]
    for a, b in zip(good_a, good_b, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert sorted(p.name for p in bad_a) == sorted(p.name for p in bad_b)
    assert len(good_a) >= 15 and len(bad_a) >= 6


def test_every_good_file_decodes_to_bounded_rgb(
    files: tuple[Path, list[Path], dict[Path, str]],
) -> None:
    _, good, _ = files
    for path in good:
        info = decode_image_info(path)
        im = info.image
        assert im.mode == "RGB", path.name
        assert 1 <= min(im.size) and max(im.size) <= MAX_SIDE, path.name
        assert not isinstance(im, ImageFile.ImageFile), "detached from the file"
        assert "exif" not in im.info and len(im.getexif()) == 0, path.name
        assert info.width >= im.size[0] and info.height >= im.size[1], path.name
        arr = to_array(im, Preprocess())
        assert arr.shape == (3, 224, 224) and np.isfinite(arr).all(), path.name


def test_every_bad_file_gives_its_reason_and_names_the_file(
    files: tuple[Path, list[Path], dict[Path, str]],
) -> None:
    _, _, bad = files
    assert set(bad.values()) >= {"empty", "truncated or corrupt", "not an image", "too many pixels"}
    for path, reason in bad.items():
        with pytest.raises(ImageError) as caught:
            decode_image(path)
        assert caught.value.reason == reason, (path.name, str(caught.value))
        assert path.name in str(caught.value)
        assert caught.value.source == str(path)


def test_odd_names_decode_from_str_and_path(
    files: tuple[Path, list[Path], dict[Path, str]],
) -> None:
    root = files[0] / "good"
    for name in ("with space.png", "ünïcødé 猫.png", "new\nline.png"):
        assert decode_image(root / name).size == (12, 12)
        assert decode_image(str(root / name)).size == (12, 12)


def test_messages_stay_one_printable_line(tmp_path: Path) -> None:
    odd = tmp_path / "two\nlines.jpg"
    odd.write_bytes(b"")
    raw = os.fsencode(tmp_path) + b"/latin1-\xe9t\xe9.jpg"  # not UTF-8: surrogates in str
    with open(raw, "wb") as f:
        f.write(b"plain text")
    for path, reason in ((str(odd), "empty"), (os.fsdecode(raw), "not an image")):
        with pytest.raises(ImageError) as caught:
            decode_image(path)
        message = str(caught.value)
        assert caught.value.reason == reason and caught.value.source == path
        assert "\n" not in message and message.encode("utf-8")
    assert "two\\nlines.jpg: empty" in str(ImageError(str(odd), "empty"))
    assert "猫.png: empty" in str(ImageError("猫.png", "empty"))


def test_exif_orientation_6_is_applied_once(
    files: tuple[Path, list[Path], dict[Path, str]],
) -> None:
    info = decode_image_info(files[0] / "good" / "rotated_exif6.jpg")
    im = info.image
    # Stored 64x32 with red top-left and blue bottom-left; turned 90 degrees clockwise.
    assert im.size == (32, 64) and (info.width, info.height) == (32, 64)
    assert _close(im.getpixel((31, 0)), corpus.RED)
    assert _close(im.getpixel((0, 0)), corpus.BLUE)
    assert _close(im.getpixel((31, 63)), corpus.GREEN)
    # No orientation is left in the result for a second transpose to act on.
    assert ImageOps.exif_transpose(im).size == (32, 64)


def test_a_broken_exif_block_does_not_lose_the_picture(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), corpus.GREEN).save(buf, "JPEG", exif=b"Exif\x00\x00garbage!")
    im = decode_image(buf.getvalue())
    assert im.size == (20, 10) and _close(im.getpixel((5, 5)), corpus.GREEN)


def test_sixteen_bit_keeps_its_contrast(files: tuple[Path, list[Path], dict[Path, str]]) -> None:
    row = np.asarray(_good(files, "gray16.png"))[8, :, 0].astype(int)
    assert row[0] <= 2 and row[-1] >= 253
    assert (np.diff(row) >= 0).all() and len(set(row.tolist())) > 50


def test_transparency_is_composited_on_white(
    files: tuple[Path, list[Path], dict[Path, str]],
) -> None:
    pal = _good(files, "palette_transparent.png")
    assert pal.getpixel((4, 8)) == corpus.BLUE and pal.getpixel((28, 8)) == (255, 255, 255)
    la = _good(files, "gray_alpha.png")
    assert la.getpixel((10, 2)) == (40, 40, 40) and la.getpixel((10, 17)) == (255, 255, 255)
    half = _good(files, "rgba.png").getpixel((4, 4))
    expected = tuple(round((c * 128 + 255 * 127) / 255) for c in corpus.RED)
    assert _close(half, expected, tol=2)  # type: ignore[arg-type]


def test_cmyk_becomes_plausible_rgb(files: tuple[Path, list[Path], dict[Path, str]]) -> None:
    r, g, b = _good(files, "cmyk.jpg").getpixel((16, 12))  # type: ignore[misc]
    assert r < 40 and g > 215 and b > 215  # pure cyan ink


def test_other_modes(files: tuple[Path, list[Path], dict[Path, str]]) -> None:
    assert _good(files, "bilevel.png").getpixel((3, 3)) == (255, 255, 255)
    assert _close(_good(files, "gray.jpg").getpixel((3, 3)), (128, 128, 128), tol=2)
    ramp = np.asarray(_good(files, "float.tif"))[..., 0]
    assert ramp.min() == 0 and ramp.max() == 255
    assert decode_image(files[0] / "good" / "png_named.jpg").size == (16, 16)


def test_first_frame_of_animations_and_pages(
    files: tuple[Path, list[Path], dict[Path, str]],
) -> None:
    gif = _good(files, "animated.gif")
    assert _close(gif.getpixel((8, 8)), corpus.RED, tol=8)
    tif = _good(files, "multipage.tif")
    assert tif.size == (40, 30) and tif.getpixel((5, 5)) == corpus.GREEN


def test_tiny_and_extreme_aspect_images(files: tuple[Path, list[Path], dict[Path, str]]) -> None:
    one = _good(files, "one_pixel.png")
    assert one.size == (1, 1)
    strip = decode_image_info(files[0] / "good" / "strip_20000x10.png")
    assert (strip.width, strip.height) == (20000, 10) and strip.image.size == (MAX_SIDE, 1)
    spec = Preprocess()
    for im in (one, strip.image, strip.image.transpose(Image.Transpose.TRANSPOSE)):
        start = time.perf_counter()
        arr = to_array(im, spec)
        assert time.perf_counter() - start < 0.5  # no 262144x256 intermediate
        assert arr.shape == (3, 224, 224) and arr.dtype == np.float32
    green = (np.asarray(corpus.GREEN) / 255 - np.asarray(spec.mean)) / np.asarray(spec.std)
    np.testing.assert_allclose(to_array(one, spec)[:, 100, 100], green, atol=1e-5)


def test_bomb_is_refused_before_any_pixel_is_decoded(
    files: tuple[Path, list[Path], dict[Path, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = files[0] / "bad" / "bomb_40000x40000.png"
    # Switch PIL's own guard off: ours must stop it from the header alone.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    def no_load(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ImageError) as caught:
            decode_image(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "too many pixels" and "40000x40000" in str(caught.value)
    assert time.perf_counter() - start < 0.5
    assert peak < 2_000_000
    # Under PIL's own guard but over ours: 9000x9000 is 81 megapixels.
    with pytest.raises(ImageError, match="too many pixels"):
        decode_image(corpus.png_bomb(9000, 9000))
    with pytest.raises(ImageError, match="too many pixels"):
        decode_image(files[0] / "good" / "blocks.png", max_pixels=100)


def test_draft_mode_decodes_a_big_jpeg_at_reduced_scale(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    big = Image.effect_mandelbrot((2048, 1536), (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB")
    big.save(path, "JPEG", quality=85)
    drafted = decode_image_info(path, draft_size=256)
    full = decode_image_info(path, draft_size=None)
    assert (drafted.width, drafted.height) == (full.width, full.height) == (2048, 1536)
    assert full.decoded_size == (2048, 1536)
    # 1536 // 256 = 6, so libjpeg decodes at 1/4 and both sides stay >= 256.
    assert drafted.decoded_size == (512, 384) and drafted.image.size == (512, 384)
    assert full.image.size == (1024, 768)
    # The model sees nearly the same input either way.
    spec = Preprocess()
    diff = np.abs(to_array(drafted.image, spec) - to_array(full.image, spec)).mean()
    assert diff < 0.1
    np.testing.assert_allclose(load_array(path, spec), to_array(drafted.image, spec))


def test_to_array_matches_a_hand_computation() -> None:
    spec = Preprocess()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    arr = to_array(Image.fromarray(pixels), spec)
    # Short side already 256: the result is the central 224x224, scaled and normalised.
    crop = pixels[16:240, 16:240].astype(np.float64) / 255.0
    expected = ((crop - np.asarray(spec.mean)) / np.asarray(spec.std)).transpose(2, 0, 1)
    assert arr.shape == (3, 224, 224) and arr.dtype == np.float32 and arr.flags.c_contiguous
    np.testing.assert_allclose(arr, expected, atol=1e-5)
    # A flat picture of any size and mode stays flat at the normalised value of its colour.
    flat = to_array(Image.new("L", (5, 3), 51), spec)
    grey = (0.2 - np.asarray(spec.mean)) / np.asarray(spec.std)
    np.testing.assert_allclose(flat, np.broadcast_to(grey[:, None, None], flat.shape), atol=1e-5)


def test_bytes_and_file_system_oddities(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (3, 2), corpus.BLUE).save(buf, "PNG")
    assert isinstance(decode_image_info(buf.getvalue()), DecodedImage)
    with pytest.raises(ImageError, match="<upload>: empty"):
        decode_image(b"")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError) as caught:
        decode_image(fifo)  # would block forever if opened for a plain read
    assert caught.value.reason == "not an image"
    with pytest.raises(ImageError) as caught:
        decode_image(str(tmp_path / "nul\0byte.png"))
    assert caught.value.reason == "unreadable"
    with pytest.raises(ImageError) as caught:
        decode_image(corpus.make_symlink_loop(tmp_path))
    assert caught.value.reason == corpus.SYMLINK_LOOP_REASON
    with pytest.raises(ImageError) as caught:
        decode_image(corpus.make_vanished(tmp_path))
    assert caught.value.reason == corpus.VANISHED_REASON


def test_eps_is_not_handed_to_ghostscript(tmp_path: Path) -> None:
    eps = tmp_path / "drawing.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageError, match="not an image"):
        decode_image(eps)


@pytest.mark.skipif(not corpus.permissions_enforced(), reason=corpus.ROOT_SKIP_REASON)
def test_unreadable_file(files: tuple[Path, list[Path], dict[Path, str]], tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    path.write_bytes((files[0] / "good" / "blocks.png").read_bytes())
    with pytest.raises(ImageError) as caught:
        decode_image(corpus.make_unreadable(path))
    assert caught.value.reason == corpus.UNREADABLE_REASON


def test_is_image_path() -> None:
    assert is_image_path("a/B.JPG") and is_image_path(Path("x.tiff"))
    assert is_image_path("DCIM/IMG_0001.HEIC") and is_image_path("x.heif")
    assert is_image_path("DSCF0001.HIF") and is_image_path("x.avif")
    assert not is_image_path("notes.txt") and not is_image_path("jpg")


def test_to_array_normalises_like_the_plain_formula() -> None:
    from model.data.images import Preprocess, to_array

    rng = np.random.default_rng(3)
    im = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    spec = Preprocess(224, 256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    got = to_array(im, spec)
    side = 300 * 224 / 256
    box = ((400 - side) / 2, (300 - side) / 2, (400 + side) / 2, (300 + side) / 2)
    px = np.asarray(im.resize((224, 224), Image.Resampling.BILINEAR, box=box), np.float64)
    ref = ((px / 255.0 - spec.mean) / spec.std).transpose(2, 0, 1)
    assert got.shape == (3, 224, 224) and got.dtype == np.float32 and got.flags.c_contiguous
    assert np.allclose(got, ref, atol=1e-5)


def _phone_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F], exif[0x0110] = "Apple", "iPhone 15"
    exif.get_ifd(0x8769)[0x9003] = "2024:07:01 09:30:00"  # DateTimeOriginal
    return exif.tobytes()


@pytest.mark.parametrize("suffix", [".HEIC", ".avif"])
def test_phone_formats_decode_upright_with_their_exif(tmp_path: Path, suffix: str) -> None:
    """An iPhone's HEIC (and an AVIF) of a real photo, stored sideways with the rotation in
    the file and EXIF orientation 6, as iPhones write them: decoded upright, turned once,
    and their date and camera read, like the same JPEG's."""
    pytest.importorskip("pillow_heif", reason="pillow-heif absent")
    skdata = pytest.importorskip("skimage.data", reason="scikit-image's photos are absent")
    cat = Image.fromarray(skdata.chelsea())  # 451x300
    jpeg, other = tmp_path / "cat.jpg", tmp_path / f"IMG_0001{suffix}"
    cat.save(jpeg, quality=95, exif=_phone_exif(6))
    cat.save(other, quality=95, exif=_phone_exif(6))
    want = decode_image_info(jpeg)
    got = decode_image_info(other)
    assert got.format == {".HEIC": "HEIF", ".avif": "AVIF"}[suffix]
    assert (got.width, got.height) == (want.width, want.height) == (300, 451)
    diff = np.abs(np.asarray(got.image, np.float32) - np.asarray(want.image, np.float32))
    assert diff.mean() < 4  # the same picture up to the codecs; turned twice would be ~60
    assert read_exif(other) == read_exif(jpeg)
    assert read_exif(other)["camera"] == "Apple iPhone 15"


def test_a_200_megapixel_phone_jpeg_decodes_at_an_eighth(tmp_path: Path) -> None:
    """A 16320x12240 JPEG (a phone's 200-megapixel mode) is over the pixel budget and over
    PIL's own guard (which refuses 179 megapixels, and warns over 89): it was skipped as
    "too many pixels", and its EXIF lost. Draft mode decodes it at 1/8 scale, 3 megapixels,
    which the budget counts; its EXIF is read; no bomb warning is printed."""
    path = tmp_path / "big.jpg"
    im = Image.new("L", (16320, 12240), 200)
    ImageDraw.Draw(im).ellipse((4000, 3000, 12000, 9000), fill=30)
    im.save(path, quality=50, exif=_phone_exif(1))
    del im
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = decode_image_info(path)
        assert read_exif(path)["taken_iso"] == "2024-07-01T09:30:00"
    assert (info.width, info.height) == (16320, 12240)
    assert info.decoded_size == (2040, 1530) and max(info.image.size) == MAX_SIDE
    # the GPU decoder would decode the whole: the CPU's draft mode takes it
    assert jpeg_for_gpu(path) is None
    # without draft mode, or when even 1/8 is over the budget, it is refused, and says how
    for kwargs, detail in [
        ({"draft_size": None}, "16320x12240 is over the budget of 64,000,000 pixels"),
        ({"max_pixels": 1_000_000}, "over the budget of 1,000,000 pixels even at 1/8 scale"),
    ]:
        with pytest.raises(ImageError) as e:
            decode_image_info(path, **kwargs)  # type: ignore[arg-type]
        assert e.value.reason == "too many pixels" and detail in str(e.value)


def test_the_cli_prints_a_path_with_a_newline_on_its_own_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A file named with a newline (seen in a real folder of odd files) split its result
    across two lines of `devise search`, as if a second result began with 'line.jpg'."""
    from app.cli import _print_answer
    from app.search.service import Answer, ImageResult

    results = [
        ImageResult("/p/new\nline.jpg", 0.9, "odd\tfolder", "/p"),
        ImageResult("/p/ünïcødé 猫.jpg", 0.8, "odd", "/p"),
    ]
    _print_answer(Answer("conse", 1.0, results), as_json=False, kind="images")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4, lines  # the header, a line per result, the summary
    assert lines[1].endswith("/p/new\\nline.jpg") and "odd\\tfolder" in lines[1]
    assert lines[2].endswith("/p/ünïcødé 猫.jpg")  # other Unicode is kept
