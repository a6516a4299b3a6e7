"""Promises backed by tests: bad input gets a clear error, kills lose nothing, locks hold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from functools import partial
from pathlib import Path

import pytest

from app.search.service import ModelMissingError, SearchService
from ingest.pipeline import ingest
from model.checkpoint import load_checkpoint
from model.data.images import ImageError
from qdrant.edge import EdgeStore
from tests.cli import run
from tests.corpus import build_corpus, png_bomb
from tests.fakes import FakeEmbedder
from tests.test_ingest import make_tree

REPO = Path(__file__).resolve().parents[1]


#: the CLI in a process of its own, output as bytes, 60 s at most
devise = partial(run, timeout=60, text=False)


@pytest.fixture
def fake_index(tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "photos"
    make_tree(root)
    emb = FakeEmbedder()
    store = EdgeStore(tmp_path / "index")
    ingest(store, [root], [emb], progress=False, model_meta={"devise": {"words": "toy"}})  # type: ignore[list-item]
    yield store, root, emb
    store.close()


def test_bad_images_give_clear_errors_on_tag_and_similar(fake_index, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, _, emb = fake_index
    service = SearchService(store, embedder_factory=lambda m, r: emb)
    good, bad = build_corpus(tmp_path / "corpus")
    tried = 0
    for path, reason in bad.items():
        for call in (service.similar, service.tag):
            with pytest.raises(ImageError) as e:
                call(path, k=3)
            assert e.value.reason == reason and str(path.name) in str(e.value)
            tried += 1
    for path in good:  # every odd-but-good file answers
        assert len(service.similar(path, k=3).results) == 3
    assert tried == 2 * len(bad)


def test_decompression_bomb_keeps_memory_bounded(tmp_path: Path) -> None:
    from model.data.images import decode_image

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb())
    tracemalloc.start()
    with pytest.raises(ImageError, match="too many pixels"):
        decode_image(bomb)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 1024 * 1024  # 40000x40000 RGB would be 4.8 GB


def test_cli_bad_input_exit_codes(fake_index, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, root, _ = fake_index
    store.close()  # let the CLI processes open it
    idx = ("--index", str(tmp_path / "index"))
    cases: list[tuple[tuple[str | bytes, ...], str]] = [
        (("search", "", *idx), "empty"),
        (("search", "x" * 10_000, *idx), "limit"),
        (("search", "ball", "-k", "0", *idx), "k must be"),
        (("search", "ball", "-k", "100000", *idx), "k must be"),
        (("search", "ball", "--min-score", "-0.5", *idx), "min score"),
        (("tag", os.fsencode(tmp_path) + b"/\xff\xfe.jpg", *idx), "image not found"),
        (("similar", str(root), *idx), "is a folder"),
        (
            ("ingest", str(root), "--checkpoint", str(tmp_path / "missing.safetensors"), *idx),
            "checkpoint not found",
        ),
        (("search", "ball", "--model", "clip", *idx), "no 'clip' vectors"),
    ]
    for argv, message in cases:
        r = devise(*argv)
        err = r.stderr.decode(errors="replace")
        assert r.returncode == 1, (argv, err)
        assert message in err and "Traceback" not in err, (argv, err)
    r = devise("search", "ball", "--bogus")
    assert r.returncode == 2 and b"unrecognized arguments" in r.stderr


def test_index_from_another_version_is_refused(fake_index, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, _, _ = fake_index
    meta = store.get_meta()
    meta["schema"] = 99
    store.set_meta(meta)
    store.close()
    r = devise("status", "--index", str(tmp_path / "index"))
    assert r.returncode == 1 and b"another version" in r.stderr


def test_checkpoint_for_another_model_or_word_space(fake_index) -> None:  # type: ignore[no-untyped-def]
    store, root, _ = fake_index
    other = SearchService(store, embedder_factory=lambda m, r: FakeEmbedder(content_id="other"))
    with pytest.raises(ModelMissingError, match="would be wrong"):
        other.similar(b"", k=3)  # checked before the upload is even decoded
    from tests.test_service import toy_vocabulary

    toy_vocabulary(store, FakeEmbedder())
    meta = store.get_meta()
    meta["words"]["source"] = "glove-6b-50d"
    store.set_meta(meta)
    with pytest.raises(ModelMissingError, match="live in toy"):
        SearchService(store).search_text("ball")


def test_two_processes_on_one_embedded_index(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[1]);"
            "from pathlib import Path; from qdrant.edge import EdgeStore;"
            "s = EdgeStore(Path(sys.argv[2]));"
            "print('open', flush=True); time.sleep(60)",
            str(REPO),
            str(tmp_path / "index"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        t = time.perf_counter()
        r = devise("status", "--index", str(tmp_path / "index"), timeout=30)
        assert time.perf_counter() - t < 30
        assert r.returncode == 1
        assert f"in use by PID {holder.pid}".encode() in r.stderr
    finally:
        holder.kill()
        holder.wait()
    assert devise("status", "--index", str(tmp_path / "index")).returncode == 0


def test_server_down_is_reported_with_the_url() -> None:
    r = devise("status", "--qdrant-url", "http://127.0.0.1:1", timeout=30)
    assert r.returncode == 1 and b"http://127.0.0.1:1" in r.stderr and b"Traceback" not in r.stderr


@pytest.mark.slow
def test_sigkill_during_training_leaves_the_old_checkpoint(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    from tests.conftest import make_image_folder

    data = make_image_folder(tmp_path / "data", {"cat": "disc", "truck": "stripes"}, 12)
    out = tmp_path / "ck.safetensors"
    out.write_bytes(tiny_checkpoint.read_bytes())
    before = load_checkpoint(out).content_id
    env = dict(os.environ, PYTHONPATH=str(REPO))
    script = (
        "import sys; from pathlib import Path; from model.train import TrainConfig, train;"
        "train(Path(sys.argv[1]), Path(sys.argv[2]), TrainConfig(backbone='resnet18',"
        " weights=None, epochs=100000, batch_size=4, cache_dir=Path(sys.argv[3])))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(data), str(out), str(tmp_path / "cache")],
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stderr is not None
    seen = b""
    deadline = time.time() + 120
    while b"devise:" not in seen and time.time() < deadline:  # wait for the epochs to run
        seen += proc.stderr.read1(4096)  # type: ignore[attr-defined]
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert b"devise:" in seen
    assert load_checkpoint(out).content_id == before
    assert json.dumps(load_checkpoint(out).meta)  # still whole


def test_cli_output_piped_into_a_reader_that_quits_is_not_an_error(  # type: ignore[no-untyped-def]
    fake_index, tmp_path: Path
) -> None:
    """`devise search ... --json | head`: the reader closes the pipe before the answer is
    written; the CLI stops quietly instead of printing a BrokenPipeError."""
    store, _, _ = fake_index
    store.close()
    argv = [sys.executable, "-m", "app.cli", "status", "--json", "--index", str(tmp_path / "index")]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # long before the interpreter has imported anything and answered
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 1
    assert "BrokenPipe" not in err and "Traceback" not in err and err == ""
