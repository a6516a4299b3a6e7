"""One index, many hands: with `devise serve` up, the CLI's commands run in the app and
print what they print with it down; ingests are one at a time and survive SIGKILL; the
watcher indexes a copied photo. Real app (a subprocess on loopback), real models (ConSE on
the packaged EfficientNet-Lite0), real photos (Debian darknet's, scikit-image's)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.remote import RECORD_FILE, ServeRecord, find_server, write_record
from tests.cli import free_port, run, spawn, stop, wait_for_server

DARKNET = Path("/usr/share/darknet/data")
FASHION = Path("/usr/share/datasets/fashion-mnist")
SKIMAGE = Path(__import__("skimage").__file__).parent / "data"

pytestmark = pytest.mark.skipif(
    not (DARKNET / "dog.jpg").exists(), reason="Debian's darknet photos are not installed"
)


#: the CLI in a process of its own, output as text, 180 s at most
devise = run


def images(index: Path) -> int:
    r = devise("status", "--json", "--index", str(index))
    assert r.returncode == 0, r.stderr
    return int(json.loads(r.stdout)["images"])


def copy_photos(dest: Path, names: list[str], src: Path = DARKNET) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(src / n, dest / n)
    return dest


def no_took(data: Any) -> Any:
    return {k: v for k, v in data.items() if k != "took_ms"}


@dataclass
class Served:
    index: Path
    watched: Path
    tmp: Path
    proc: subprocess.Popen[str]
    down: dict[str, str]
    record: ServeRecord


# the outputs compared with the app down and up
COMMANDS = {
    "search_json": ["search", "dog", "--model", "conse", "-k", "3", "--json"],
    "search": ["search", "dog", "--model", "conse", "-k", "3"],
    "status": ["status"],
    "status_json": ["status", "--json"],
    "similar_json": ["similar", str(DARKNET / "dog.jpg"), "--model", "conse", "--json"],
    "duplicates_json": ["duplicates", "--model", "conse", "--json"],
    "bad_model": ["search", "dog", "--model", "clip"],
    "people_json": ["people", "--json"],
    "people_bad_id": ["people", "name", "999", "Alice"],
}


@dataclass
class Animals:
    photos: Path  # photos/animals/{dog,horses,eagle}.jpg
    index: Path  # `devise ingest photos --models conse`


@pytest.fixture(scope="module")
def animals(tmp_path_factory: pytest.TempPathFactory) -> Animals:
    """Three darknet photos and a conse index of them, made once by `devise ingest` for the
    tests that start from it. READ-ONLY by convention: neither the photos nor the index are
    ever written; a test that writes to the index works on its own copy (`index_copy`)."""
    tmp = tmp_path_factory.mktemp("animals")
    photos = copy_photos(tmp / "photos" / "animals", ["dog.jpg", "horses.jpg", "eagle.jpg"])
    index = tmp / "index"
    r = devise("ingest", str(photos.parent), "--models", "conse", "--index", str(index))
    assert r.returncode == 0, r.stderr
    return Animals(photos, index)


def index_copy(animals: Animals, dest: Path) -> Path:
    """A copy of the animals' index of one's own, to write to."""
    shutil.copytree(animals.index, dest, symlinks=True)
    return dest


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, animals: Animals) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("served")
    index = index_copy(animals, tmp / "index")
    down = {}
    for name, cmd in COMMANDS.items():
        out = devise(*cmd, "--index", str(index))
        down[name] = f"{out.returncode}\n{out.stdout}\n{out.stderr if out.returncode else ''}"
    watched = tmp / "watched"
    (watched / "new").mkdir(parents=True)
    proc = spawn(
        "serve", "--index", str(index), "--port", str(free_port()), "--watch", str(watched),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        record = wait_for_server(proc, index)
        assert record.url.startswith("http://127.0.0.1:")
        assert (index / RECORD_FILE).stat().st_mode & 0o077 == 0  # it holds the token
        yield Served(index, watched, tmp, proc, down, record)
    finally:
        stop(proc)


def test_every_command_prints_the_same_with_the_app_up(served: Served) -> None:
    for name, cmd in COMMANDS.items():
        out = devise(*cmd, "--index", str(served.index))
        up = f"{out.returncode}\n{out.stdout}\n{out.stderr if out.returncode else ''}"
        down = served.down[name]
        if name.endswith("_json"):
            assert out.returncode == 0, out.stderr
            assert no_took(json.loads(out.stdout)) == no_took(json.loads(down.split("\n")[1]))
        elif name == "search":  # the last line says how long it took
            assert up.split("\n")[:-3] == down.split("\n")[:-3], (up, down)
            assert "dog.jpg" in up
        else:
            assert up == down, name
    assert served.proc.poll() is None


def test_ingest_through_the_app_and_the_app_sees_it(served: Served) -> None:
    new = copy_photos(served.tmp / "more" / "birds", ["kite.jpg", "giraffe.jpg"])
    before = images(served.index)
    r = devise("ingest", str(new), "--models", "conse", "--json", "--index", str(served.index))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["indexed"] == 2 and summary["failed"] == {}
    # the face stage's own summary beside the embedding's, where dlib is installed
    assert set(summary) - {"faces"} == {"indexed", "unchanged", "moved", "pruned", "failed",
                                        "seconds"}  # fmt: skip
    if "faces" in summary:  # the app searched the two new photos for faces
        assert summary["faces"]["photos"] == 2 and summary["faces"]["failed"] == {}
    assert images(served.index) == before + 2
    # the web app's own endpoint, no restart: the new photo is found
    from gradio_client import Client

    client = Client(served.record.url, verbose=False, download_files=False)
    found = json.loads(
        client.predict("giraffe", "conse", None, None, None, 20, api_name="/search_json")
    )
    assert any(x["path"].endswith("giraffe.jpg") for x in found["results"])
    again = devise("ingest", str(new), "--models", "conse", "--index", str(served.index))
    assert again.returncode == 0 and again.stdout.startswith("indexed 0, unchanged 2")
    gone = devise("ingest", str(served.tmp / "nowhere"), "--index", str(served.index))
    assert gone.returncode == 1 and gone.stderr.strip().endswith(
        "not found: " + str(served.tmp / "nowhere")
    )


def test_two_ingests_at_once_through_the_app_lose_nothing(served: Served) -> None:
    a = copy_photos(served.tmp / "two" / "a", ["person.jpg", "scream.jpg"])
    b = copy_photos(
        served.tmp / "two" / "b", ["astronaut.png", "coffee.png", "rocket.jpg"], SKIMAGE
    )
    before = images(served.index)
    procs = [
        spawn("ingest", str(d), "--models", "conse", "--json", "--index", str(served.index),
              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for d in (a, b)
    ]  # fmt: skip
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(json.loads(o[0])["indexed"] for o in outs) == [2, 3]
    assert images(served.index) == before + 5


def test_the_watcher_indexes_a_copied_photo(served: Served) -> None:
    before = images(served.index)
    t0 = time.monotonic()
    shutil.copy(SKIMAGE / "chelsea.png", served.watched / "new" / "chelsea.png")
    deadline = t0 + 90  # the first batch loads the models; later ones take seconds
    while images(served.index) != before + 1:
        assert time.monotonic() < deadline, "the watcher did not index the copied photo"
        time.sleep(0.5)
    r = devise("search", "cat", "--model", "conse", "--json", "--index", str(served.index))
    assert any(x["path"].endswith("chelsea.png") for x in json.loads(r.stdout)["results"])
    # a delete is pruned
    (served.watched / "new" / "chelsea.png").unlink()
    deadline = time.monotonic() + 60
    while images(served.index) != before:
        assert time.monotonic() < deadline, "the watcher did not prune the deleted photo"
        time.sleep(0.5)


def test_words_and_eval_record_go_through_the_app(served: Served) -> None:
    """The two other commands that write to the index: run by the app, in its ingest slot,
    printing what they print with the app down; the app answers as before after them."""
    r = devise("words", "--top", "3000", "--index", str(served.index), timeout=240)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(
        r"\d+ words and \d+ labels and hypernyms from glove-6b-50d \(50 d\) in [\d.]+s\n",
        r.stdout,
    ), r.stdout
    again = devise("search", "dog", "--model", "conse", "-k", "3", "--json", "--index",
                   str(served.index))  # fmt: skip
    assert again.returncode == 0 and "dog.jpg" in again.stdout
    bad = devise("words", "--words", "no-such-words", "--index", str(served.index))
    assert bad.returncode == 1 and "no-such-words" in bad.stderr, bad.stderr

    data = served.tmp / "evaldata"
    copy_photos(data / "dog", ["dog.jpg"])
    copy_photos(data / "horse", ["horses.jpg"])
    copy_photos(data / "bird", ["eagle.jpg"])
    r = devise(
        "eval", str(data), "--models", "conse", "--record", "--index", str(served.index),
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith(f"recorded in {served.index}")
    meta = json.loads((served.index / "meta.json").read_text())
    assert meta["evaluation"]["data"] == str(data.resolve())
    assert "conse" in meta["evaluation"]["models"]
    assert served.proc.poll() is None


def test_a_second_serve_on_the_index_names_the_first(served: Served) -> None:
    r = devise("serve", "--index", str(served.index), "--port", str(free_port()))
    assert r.returncode == 1
    assert f"already serves {served.index} at {served.record.url}" in r.stderr, r.stderr
    assert served.proc.poll() is None


# ---------------------------------------------------------------------------- no app


def test_a_stale_record_is_ignored_and_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(30)
    index = tmp_path / "index"
    index.mkdir()
    write_record(index, ServeRecord(dead.pid, "http://127.0.0.1:9/", "t", False, "127.0.0.1"))
    assert find_server(index) is None
    assert not (index / RECORD_FILE).exists()
    r = devise("status", "--index", str(index), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["images"] == 0


def wait_progress(proc: subprocess.Popen[str], log: Path, at_least: int) -> None:
    """Until the progress bar on stderr has counted `at_least` images (bounded)."""
    deadline = time.monotonic() + 180
    done = 0
    while done < at_least:
        assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-500:]
        time.sleep(0.1)
        found = re.findall(r"(\d+)/\d+ \[", log.read_text())
        done = max((int(x) for x in found), default=0)


@pytest.mark.skipif(not FASHION.exists(), reason="Debian's dataset-fashion-mnist is absent")
def test_sigkill_mid_ingest_then_again_loses_nothing(tmp_path: Path) -> None:
    data, index = tmp_path / "fm", tmp_path / "index"
    assert devise("datasets", "fashion-mnist", str(data), "--limit", "300").returncode == 0
    total = sum(1 for _ in data.rglob("*.png"))
    cmd = ["ingest", str(data), "--models", "conse", "--batch-size", "4", "--progress"]
    procs: list[subprocess.Popen[str]] = []
    try:
        log1 = tmp_path / "first.err"
        first = spawn(*cmd, "--index", str(index), stdout=subprocess.DEVNULL, stderr=log1.open("w"))
        procs.append(first)
        wait_progress(first, log1, 8)
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
        log2 = tmp_path / "again.err"
        again = spawn(
            *cmd, "--json", "--index", str(index), stdout=subprocess.PIPE, stderr=log2.open("w")
        )
        procs.append(again)
        wait_progress(again, log2, 4)
        # a second ingest meanwhile is refused in one line, naming the holder
        second = devise("ingest", str(data), "--models", "conse", "--index", str(index))
        assert second.returncode == 1
        assert second.stderr.strip().count("\n") == 0
        assert f"in use by PID {again.pid}" in second.stderr
        out, _ = again.communicate(timeout=300)
        assert again.returncode == 0, log2.read_text()[-500:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)
    summary = json.loads(out)
    assert summary["failed"] == {}
    assert summary["unchanged"] >= 8  # what was upserted before the kill survived it
    assert summary["unchanged"] + summary["indexed"] == total
    assert images(index) == total


def _synthetic_points(index: Path, n: int) -> None:
    """n more image points, with random unit vectors for each of the index's vectors, as a
    large library would hold: past the size where the index gets its graph."""
    import numpy as np

    from qdrant.edge import EdgeStore
    from qdrant.schema import image_payload, image_point_id

    rng = np.random.default_rng(3)
    paths = [f"/library/{i // 1000}/{i}.jpg" for i in range(n)]
    payloads = [
        image_payload(p, label="street", width=8, height=8, size_bytes=1, mtime=0.0, sha256=p)
        for p in paths
    ]
    with EdgeStore(index) as s:
        vectors = {}
        for name, dim in s.vector_sizes().items():
            x = rng.standard_normal((n, dim)).astype(np.float32)
            vectors[name] = x / np.linalg.norm(x, axis=1, keepdims=True)
        s.upsert_images([image_point_id(p) for p in paths], payloads, vectors)


@pytest.mark.slow
def test_serve_builds_the_graph_in_the_background_and_answers_meanwhile(
    tmp_path: Path, animals: Animals
) -> None:
    """An index whose graph is not built (1,000 points past the size that gets one, as an
    older app's ingests left them): `devise serve` builds it in another process at open, while
    the CLI's searches and `devise status` are answered, and swaps it in."""
    from qdrant.schema import INDEX_FROM_POINTS

    EXTRA = 1_000  # any number past the threshold: the build's time grows with it
    index = index_copy(animals, tmp_path / "index")  # the three photos, ingested
    photos = animals.photos
    _synthetic_points(index, INDEX_FROM_POINTS + EXTRA)
    down = devise("status", "--index", str(index))
    assert "wait for their graph (the next `devise ingest` builds it)" in down.stdout
    search = ["search", "dog", "--model", "conse", "-k", "3", "--json", "--index", str(index)]
    in_photos = [*search, "--folder", str(photos)]

    def top(cmd: list[str]) -> list[str]:
        out = devise(*cmd)
        assert out.returncode == 0, out.stderr
        return [x["path"] for x in json.loads(out.stdout)["results"]]

    exact = {"all": top(search), "photos": top(in_photos)}
    assert len(exact["photos"]) == 3
    proc = spawn(
        "serve", "--index", str(index), "--port", str(free_port()),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    said: list[str] = []
    answered_while_building = 0
    try:
        wait_for_server(proc, index)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            st = devise("status", "--index", str(index))
            assert st.returncode == 0, st.stderr
            said.append(st.stdout)
            if "search  exact for now" not in st.stdout:
                break
            if "images in the background (" in st.stdout:
                # answered meanwhile, exactly as before
                assert top(search) == exact["all"] and top(in_photos) == exact["photos"]
                answered_while_building += 1
            time.sleep(2)  # each round is three `devise` processes: leave the build the cores
        else:
            pytest.fail(f"the graph was not built in 300 s: {said[-1]}")
        # from the graph now: the same answers
        assert top(search)[:1] == exact["all"][:1] and top(in_photos) == exact["photos"]
    finally:
        stop(proc)
    building = f"is building the search graph of {INDEX_FROM_POINTS + EXTRA + 3} images in the"
    assert any(building in s for s in said), said
    assert answered_while_building >= 1
    assert not (index / ".graph-build").exists()
    # the app is down: the index holds the graph, and nothing waits for it
    down = devise("status", "--index", str(index))
    assert down.returncode == 0 and "search" not in down.stdout, down.stdout
    assert images(index) == INDEX_FROM_POINTS + EXTRA + 3


# ---------------------------------------------------------------------------- in process


@pytest.fixture
def bare_api(tmp_path: Path) -> Iterator[Any]:
    from app.jobs.index import IndexJob
    from app.search.service import SearchService
    from app.web.cliapi import CliApi
    from app.web.handlers import WebHandlers
    from qdrant.edge import EdgeStore

    store = EdgeStore(tmp_path / "index")
    service = SearchService(store)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    job = IndexJob(service, lambda: [], allowed=[allowed])
    try:
        yield CliApi(WebHandlers(service), job, token="right", loopback=False), job, tmp_path
    finally:
        job.wait(30)
        store.close()


def test_ingest_needs_the_token_and_beyond_loopback_the_ingest_root(bare_api: Any) -> None:
    api, _, tmp = bare_api
    (tmp / "outside").mkdir()
    with pytest.raises(PermissionError, match="token"):
        api.ingest("wrong", [str(tmp / "allowed")], {})
    with pytest.raises(PermissionError, match=r"under .*allowed only, not .*outside"):
        api.ingest("right", [str(tmp / "outside")], {})
    with pytest.raises(PermissionError, match="only"):  # a symlink out of the root
        os.symlink(tmp / "outside", tmp / "allowed" / "link")
        api.check_path(str(tmp / "allowed" / "link"))
    assert api.check_path(str(tmp / "allowed")) == tmp / "allowed"
    api.loopback = True  # on loopback, the token's holder may index what it can read
    assert api.check_path(str(tmp / "outside")) == tmp / "outside"


def test_a_second_ingest_waits_for_the_first_and_says_so(bare_api: Any) -> None:
    from ingest.pipeline import IngestSummary

    _, job, tmp = bare_api
    release = threading.Event()
    order: list[int] = []

    def run(req: Any, on_batch: Any) -> IngestSummary:
        order.append(req.id)
        if len(order) == 1:  # the first one holds the slot until released
            assert release.wait(30)
        s = IngestSummary(indexed=req.id)
        on_batch(s)
        return s

    first = job.submit([tmp], run)
    deadline = time.monotonic() + 10
    while first.state != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    second = job.submit([tmp], run)
    deadline = time.monotonic() + 10
    while not second.message.startswith("waiting"):
        assert time.monotonic() < deadline, second.message
        time.sleep(0.01)
    assert second.state == "queued" and order == [first.id]
    release.set()
    deadline = time.monotonic() + 10
    while second.state != "done":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert order == [first.id, second.id] and first.state == "done"
    assert job.request(second.id) is second and second.summary["indexed"] == second.id


def http_json(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    """(status, JSON) of a GET (no body) or POST to the app's /search_json route."""
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_the_direct_search_route_answers_as_the_cli_does(served: Served) -> None:
    cli = devise(
        "search", "dog", "--model", "conse", "-k", "3", "--json", "--index", str(served.index)
    )
    want = no_took(json.loads(cli.stdout))
    url = served.record.url + "search_json"
    code, posted = http_json(url, {"query": "dog", "model": "conse", "k": 3})
    assert code == 200 and no_took(posted) == want
    code, got = http_json(url + "?query=dog&model=conse&k=3")
    assert code == 200 and no_took(got) == want
    code, bad = http_json(url + "?query=dog&k=many")
    assert code == 400 and bad == {"error": "k must be a whole number, got 'many'"}
    code, bad = http_json(url, {"query": "dog", "colour": "red"})
    assert code == 400 and "colour" in bad["error"]
    code, bad = http_json(url, {"query": "dog", "model": "clip"})
    assert code == 400 and "clip" in bad["error"]


def test_with_auth_the_cli_logs_in_with_the_token_only(tmp_path: Path) -> None:
    from dataclasses import replace

    from app.remote import RemoteError, RemoteIndex
    from app.search.service import SearchService
    from app.web import launch_app
    from qdrant.edge import EdgeStore

    store = EdgeStore(tmp_path / "index")
    app = launch_app(
        SearchService(store), port=free_port(), auth=("ann", "secret"), cli_token="tok"
    )
    try:
        rec = ServeRecord(os.getpid(), app.url, "tok", True, "127.0.0.1")
        assert RemoteIndex(rec, timeout_s=30).status()["images"] == 0
        with pytest.raises(RemoteError):
            RemoteIndex(replace(rec, token="nope"), timeout_s=30).status()
        url = app.url + "search_json?query=dog"
        assert http_json(url)[0] == 401
        assert http_json(url, token="nope")[0] == 401
        code, answer = http_json(url, token="tok")  # let in: the empty index says so
        assert code == 400 and "holds no images yet" in answer["error"]
    finally:
        app.close()
        store.close()


def test_a_burst_of_1000_files_is_indexed_in_a_few_batches(tmp_path: Path) -> None:
    """The watcher with real file events and a counting runner in place of the models: a
    burst of 1,000 copies becomes a few ingests of the folder, not 1,000."""
    from app.jobs.index import IndexJob
    from app.jobs.watch import FolderWatcher
    from ingest.pipeline import IngestSummary

    watched = tmp_path / "watched"
    (watched / "burst").mkdir(parents=True)
    seen: set[str] = set()
    calls: list[list[Path]] = []

    def runner() -> Any:
        def run(req: Any, on_batch: Any) -> IngestSummary:
            calls.append(list(req.paths))
            now = {str(p) for p in watched.rglob("*.png")}
            s = IngestSummary(indexed=len(now - seen), pruned=len(seen - now))
            seen.clear()
            seen.update(now)
            return s

        return run

    job = IndexJob(None, lambda: [], allowed=[])  # type: ignore[arg-type]
    w = FolderWatcher(job, [watched], runner, settle_s=0.5, max_wait_s=3.0, rescan_s=None)
    w.start()
    try:
        deadline = time.monotonic() + 20
        while w.batches < 1:  # the first scan at start
            assert time.monotonic() < deadline
            time.sleep(0.05)
        photo = (SKIMAGE / "camera.png").read_bytes()
        for i in range(1000):
            (watched / "burst" / f"{i:04d}.png").write_bytes(photo)
        deadline = time.monotonic() + 60
        while w.indexed < 1000:
            assert time.monotonic() < deadline, w.describe()
            time.sleep(0.1)
        assert 1 <= w.batches - 1 <= 6, w.describe()  # a handful of ingests, not 1,000
        assert all(c == [watched] for c in calls)
        assert "indexed 1000" in w.describe() and w.counts()["failed"] == 0
        shutil.rmtree(watched / "burst")
        deadline = time.monotonic() + 30
        while w.removed < 1000:
            assert time.monotonic() < deadline, w.describe()
            time.sleep(0.1)
    finally:
        w.stop()
