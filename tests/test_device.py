"""The device choice and the GPU path's CPU-testable parts: `auto` picks the CPU here, a GPU
asked for where there is none is a one-line error naming `--device cpu`, the decode pool
follows the core count, out-of-memory halves the batch, and the GPU decoder's orientation,
preprocessing and loader agree with the CPU path (run here with torchvision's CPU decoder)."""

from __future__ import annotations

import argparse
import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app import cli
from model import device as dev
from model.data import loader
from model.data.images import ImageError, Preprocess, decode_image_info, jpeg_for_gpu, to_array
from model.device import (
    CPU,
    Device,
    DeviceError,
    GpuJpegDecoder,
    OomBackoff,
    crop_resize_normalise,
    decode_workers,
    resolve_device,
    rotate_chw,
)


@pytest.fixture(autouse=True)
def _restore_default() -> object:
    saved = dev.set_default_device(None)
    yield
    dev.set_default_device(saved)


def test_auto_picks_the_cpu_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVISE_DEVICE", raising=False)
    assert resolve_device("auto", cuda_count=lambda: 0).kind == "cpu"
    assert resolve_device(None, cuda_count=lambda: 0).kind == "cpu"
    # and with one, the GPU
    assert resolve_device("auto", cuda_count=lambda: 1).torch_name == "cuda:0"
    assert resolve_device("cuda:1", cuda_count=lambda: 2).torch_name == "cuda:1"
    monkeypatch.setenv("DEVISE_DEVICE", "cpu")
    assert resolve_device(None, cuda_count=lambda: 1).kind == "cpu"


def test_the_cli_chooses_once_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("DEVISE_DEVICE", raising=False)
    monkeypatch.setattr(dev, "_cuda_count", lambda: 0)
    monkeypatch.setattr(dev, "_logged", set())
    with caplog.at_level(logging.INFO, logger="model.device"):
        cli._choose_device(argparse.Namespace(device=None))
        cli._choose_device(argparse.Namespace(device="auto"))
    assert dev.default_device().kind == "cpu"
    said = [r.getMessage() for r in caplog.records if r.name == "model.device"]
    assert len(said) == 1 and "cpu" in said[0] and "no CUDA GPU" in said[0]


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_a_one_line_error(
    spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(dev, "_cuda_count", lambda: 0)
    code = cli.main(["search", "dog", "--device", spec, "--index", str(tmp_path / "index")])
    err = capsys.readouterr().err.strip()
    assert code == cli.EXIT_ERROR
    assert len(err.splitlines()) == 1 and "--device cpu" in err and spec in err
    assert not (tmp_path / "index").exists()  # nothing was opened first


def test_a_gpu_index_beyond_the_count_and_bad_names_are_refused() -> None:
    with pytest.raises(DeviceError, match="only 1 CUDA GPU"):
        resolve_device("cuda:1", cuda_count=lambda: 1)
    for bad in ("gpu", "cpu:1", "cuda:x", "auto:0"):
        with pytest.raises(DeviceError, match="auto, cpu, cuda"):
            resolve_device(bad, cuda_count=lambda: 1)


def test_batch_sizes_are_larger_on_a_gpu() -> None:
    gpu = Device("cuda", 0)
    assert dev.default_batch_size(CPU) == 32
    assert dev.default_batch_size(gpu) > dev.default_batch_size(CPU)
    assert dev.default_batch_size(None, cpu=64) == 64


def test_decode_pool_follows_the_core_count(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = Device("cuda", 0)
    for cores, cpu_want, gpu_want in [(1, 1, 1), (2, 2, 2), (6, 6, 6), (16, 8, 16), (64, 8, 32)]:
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert decode_workers(CPU) == cpu_want
        assert decode_workers(gpu) == gpu_want
        assert loader.default_workers() == cpu_want
    # without an affinity call (macOS, Windows): the core count
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 12)
    assert decode_workers(gpu) == 12 and decode_workers(CPU) == 8
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert decode_workers(gpu) == 1


def _fake_forward(limit: int, calls: list[int]) -> object:
    x = np.arange(100, dtype=np.float32)

    def forward(start: int, stop: int) -> np.ndarray:
        calls.append(stop - start)
        if stop - start > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x[start:stop] * 2

    return forward


def test_out_of_memory_halves_the_batch_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    backoff = OomBackoff(64, what="resnet50 batch")
    with caplog.at_level(logging.WARNING, logger="model.device"):
        out = backoff.run(_fake_forward(20, calls), 100)  # type: ignore[arg-type]
    assert np.array_equal(np.concatenate(out), np.arange(100, dtype=np.float32) * 2)
    assert backoff.batch_size == 16  # 64 -> 32 -> 16, then kept
    assert calls[:3] == [64, 32, 16] and max(calls[3:]) <= 16
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and "out of GPU memory" in said[0] and "64" in said[0]
    # the smaller size is remembered: the next call does not pay for the discovery again
    calls.clear()
    backoff.run(_fake_forward(20, calls), 40)  # type: ignore[arg-type]
    assert calls == [16, 16, 8]


def test_out_of_memory_at_one_item_and_other_errors_are_raised() -> None:
    with pytest.raises(torch.cuda.OutOfMemoryError):
        OomBackoff(8).run(_fake_forward(0, []), 10)  # type: ignore[arg-type]

    def broken(start: int, stop: int) -> None:
        raise RuntimeError("not memory")

    backoff = OomBackoff(8)
    with pytest.raises(RuntimeError, match="not memory"):
        backoff.run(broken, 10)
    assert backoff.batch_size == 8


def _asymmetric(w: int = 40, h: int = 24) -> Image.Image:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    arr[:4, :8] = 255  # a corner that shows any wrong flip
    return Image.fromarray(arr)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_gpu_orientation_matches_pil(orientation: int) -> None:
    from model.data.images import _ORIENT

    im = _asymmetric()
    want = im.transpose(_ORIENT[orientation]) if orientation in _ORIENT else im
    chw = torch.from_numpy(np.array(im)).permute(2, 0, 1)
    got = rotate_chw(chw, orientation).permute(1, 2, 0).numpy()
    assert np.array_equal(got, np.asarray(want))


def _jpeg(path: Path, size: tuple[int, int], orientation: int = 1, quality: int = 95) -> Path:
    # smooth content, as photos are, with a bright corner that shows a wrong rotation
    im = _asymmetric(8, 6).resize(size, Image.Resampling.BICUBIC)
    im.paste((255, 255, 255), (0, 0, size[0] // 5, size[1] // 5))
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    im.save(path, "JPEG", quality=quality, exif=exif.tobytes())
    return path


def test_jpeg_headers_are_checked_like_the_cpu_decoder(tmp_path: Path) -> None:
    found = jpeg_for_gpu(_jpeg(tmp_path / "r.jpg", (64, 40), orientation=6))
    assert found is not None
    data, w, h, orientation = found
    info = decode_image_info(tmp_path / "r.jpg")
    assert (w, h, orientation) == (info.width, info.height, 6) == (40, 64, 6)
    # not for the GPU: other formats, and a truncated JPEG (the CPU decoder refuses it)
    Image.new("RGB", (8, 8)).save(tmp_path / "p.png")
    assert jpeg_for_gpu(tmp_path / "p.png") is None
    (tmp_path / "cut.jpg").write_bytes(data[:-100])  # cut inside the picture data
    assert jpeg_for_gpu(tmp_path / "cut.jpg") is None
    with pytest.raises(ImageError) as e:
        decode_image_info(tmp_path / "cut.jpg")
    assert e.value.reason == "truncated or corrupt"
    # refused outright, with the CPU decoder's reasons
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_bytes(b"not a picture at all")
    for name, reason in [
        ("empty.jpg", "empty"),
        ("text.jpg", "not an image"),
        ("gone.jpg", "missing"),
    ]:
        with pytest.raises(ImageError) as e:
            jpeg_for_gpu(tmp_path / name)
        assert e.value.reason == reason
    # over the pixel budget: the CPU decodes it at a reduced scale (draft mode), or refuses
    # it when even 1/8 scale is over; the GPU never decodes the whole
    assert jpeg_for_gpu(tmp_path / "r.jpg", max_pixels=100) is None
    with pytest.raises(ImageError) as e:
        decode_image_info(tmp_path / "r.jpg", max_pixels=100)
    assert e.value.reason == "too many pixels"


def test_gpu_preprocessing_agrees_with_to_array() -> None:
    spec = Preprocess()
    rng = np.random.default_rng(1)
    # smooth content, as photos are: a noise image would exaggerate filter differences
    base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    im = Image.fromarray(base).resize((800, 600), Image.Resampling.BICUBIC)
    want = to_array(im, spec)
    chw = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
    got = crop_resize_normalise(chw, spec.size, spec.resize, spec.mean, spec.std).numpy()
    assert got.shape == want.shape
    cos = float((got.ravel() @ want.ravel()) / np.linalg.norm(got) / np.linalg.norm(want))
    assert cos > 0.999
    assert float(np.abs(got - want).mean()) < 0.05


def test_the_gpu_loader_path_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA loader's logic, run with torchvision's CPU JPEG decoder: input order, sizes,
    orientation, PNGs through PIL, and bad files failing as on the CPU path."""
    monkeypatch.setattr(GpuJpegDecoder, "available", staticmethod(lambda d: True))
    good = _jpeg(tmp_path / "a.jpg", (300, 200), orientation=8)
    Image.new("RGB", (50, 70), (200, 10, 10)).save(tmp_path / "b.png")
    cut = tmp_path / "c.jpg"
    cut.write_bytes(good.read_bytes()[:400])
    plain = _jpeg(tmp_path / "d.jpg", (120, 90))
    (tmp_path / "e.jpg").write_bytes(b"")
    sources = [good, tmp_path / "b.png", cut, plain, tmp_path / "e.jpg"]
    spec = Preprocess()
    batches = list(
        loader._iter_batches_cuda(sources, [spec], 8, 2, 1, CPU, True)  # CPU stands in for cuda
    )
    assert len(batches) == 1
    b = batches[0]
    assert b.indices == [0, 1, 3]
    assert b.sizes == [(200, 300), (50, 70), (120, 90)]
    assert isinstance(b.array, torch.Tensor) and tuple(b.array.shape) == (3, 3, 224, 224)
    cpu = next(loader.iter_batches(sources, spec, 8, 2))
    assert cpu.indices == b.indices and cpu.sizes == b.sizes
    reasons = {i: e.reason for i, e in b.failures}
    assert reasons == {i: e.reason for i, e in cpu.failures} and set(reasons) == {2, 4}
    for k in range(3):  # the same pictures, upright, within filter differences
        g, c = b.array[k].numpy().ravel(), cpu.array[k].ravel()
        assert float(g @ c / np.linalg.norm(g) / np.linalg.norm(c)) > 0.98


def test_the_gpu_decoder_hands_refused_files_back(tmp_path: Path) -> None:
    from model.device import JpegJob

    data = _jpeg(tmp_path / "a.jpg", (32, 16)).read_bytes()
    jobs = [JpegJob(data, 32, 16, 1), JpegJob(b"\xff\xd8garbage\xff\xd9", 8, 8, 1)]
    dec = GpuJpegDecoder(CPU)
    out = dec.decode(jobs)
    assert out[0] is not None and tuple(out[0].shape) == (3, 16, 32)
    assert out[1] is None and dec.refused == 1
    # a size other than the header's is refused too, never silently used
    assert dec.decode([JpegJob(data, 16, 32, 1)]) == [None]


def test_the_feature_cache_key_ignores_the_device(tmp_path: Path) -> None:
    from model.backbones import load_backbone
    from model.data.features import _cache_key

    p = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(p)
    bb = load_backbone("resnet18", None, "fp32", runtime="torch")
    key = _cache_key(bb, [p])
    bb.device = Device("cuda", 0)  # only the attribute: no GPU is touched
    assert _cache_key(bb, [p]) == key


def test_buffers_are_not_jpeg(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    assert jpeg_for_gpu(buf.getvalue()) is None


def test_the_loaders_inspect_hook_sees_each_picture_upright(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook at ingest (the face detector) sees every decoded picture, upright, on both
    paths: PIL's, and the CUDA path's small copy of an nvJPEG-decoded one."""
    monkeypatch.setattr(GpuJpegDecoder, "available", staticmethod(lambda d: True))
    sources = [
        _jpeg(tmp_path / "a.jpg", (300, 200), orientation=8),
        tmp_path / "b.png",
        _jpeg(tmp_path / "c.jpg", (900, 600)),
    ]
    Image.new("RGB", (50, 70), (200, 10, 10)).save(tmp_path / "b.png")

    def size(im: Image.Image) -> dict[str, float]:
        return {"w": float(im.width), "h": float(im.height)}

    spec = Preprocess()
    gpu = next(loader._iter_batches_cuda(sources, [spec], 8, 2, 1, CPU, True, size))
    cpu = next(loader.iter_batches(sources, spec, 8, 2, inspect=size))
    assert cpu.inspected[:2] == [{"w": 200, "h": 300}, {"w": 50, "h": 70}]
    assert gpu.inspected[:2] == cpu.inspected[:2]
    # the large one: at most INSPECT_SIDE on the GPU path, its shape kept
    w, h = gpu.inspected[2]["w"], gpu.inspected[2]["h"]
    assert max(w, h) <= loader.INSPECT_SIDE and abs(w / h - 1.5) < 0.02
    assert next(loader.iter_batches(sources, spec, 8, 2)).inspected == [{}, {}, {}]
