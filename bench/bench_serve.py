"""The app under load: concurrent clients of `/search_json`, with and without an ingest.

    python bench/bench_serve.py [--checkpoint CKPT] [--index DIR] [--seconds 8]
                                [--clients 1,4,16,32] [--ingest 300]

Starts `devise serve` on loopback over an index (by default one built here from Debian
darknet's and scikit-image's photos and 200 Fashion-MNIST test images, with DeViSE when
--checkpoint is given, else ConSE), then for each number of clients runs that
many threads, each calling a door back to back for a bounded time: the app's direct
`POST /search_json`, then Gradio's queued API (POST the call, read its event stream).
Then the same while `devise ingest` of `--ingest` Fashion-MNIST images runs, sent by the
CLI to the app's background job. Prints requests/s, p50/p95/p99 latency and failed
requests. Goals (issue 22): no failed request; p95 <= 250 ms at 16 clients without ingest;
searches keep answering during the ingest.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import report
from report import add_json_flag

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_tags import cpu_name  # noqa: E402

QUERIES = ["dog", "horse", "bird", "cat", "coffee", "rocket", "person", "kite", "giraffe",
           "dress", "bag", "sneaker", "coat", "ankle boot"]  # fmt: skip


def devise(*args: str, **kw: Any) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env, text=True, **kw)


def model_flags(checkpoint: str | None) -> list[str]:
    return (
        ["--models", "devise", "--checkpoint", checkpoint] if checkpoint else ["--models", "conse"]
    )


def build_index(where: Path, checkpoint: str | None) -> Path:
    photos = where / "photos"
    dark = photos / "darknet"
    dark.mkdir(parents=True)
    for f in Path("/usr/share/darknet/data").glob("*.jpg"):
        shutil.copy(f, dark / f.name)
    import skimage

    sk = photos / "skimage"
    sk.mkdir(parents=True)
    for f in Path(skimage.__file__).parent.joinpath("data").iterdir():
        if f.suffix in (".png", ".jpg"):
            shutil.copy(f, sk / f.name)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run(
        [sys.executable, "-m", "app.cli", "datasets", "fashion-mnist", str(photos / "fm"),
         "--split", "test", "--limit", "200"], env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    index = where / "index"
    p = devise("ingest", str(photos), *model_flags(checkpoint), "--index", str(index))
    assert p.wait(600) == 0
    return index


class Client:
    """One keep-alive connection. door "direct": `POST /search_json`, the app's plain JSON
    route; door "gradio": Gradio's queued API, as gradio_client calls it (POST the call to
    /gradio_api/call/search_json, then read its event stream)."""

    def __init__(self, url: str, model: str, door: str = "direct") -> None:
        u = urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=60)
        self.model = model
        self.door = door

    def search(self, query: str) -> bool:
        headers = {"Content-Type": "application/json"}
        if self.door == "direct":
            body = json.dumps({"query": query, "model": self.model, "k": 10})
            self.conn.request("POST", "/search_json", body, headers)
            r = self.conn.getresponse()
            data = r.read()
            return r.status == 200 and isinstance(json.loads(data).get("results"), list)
        body = json.dumps({"data": [query, self.model, None, None, None, 10] + [None] * 5})
        self.conn.request("POST", "/gradio_api/call/search_json", body, headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            return False
        event = json.loads(data)["event_id"]
        self.conn.request("GET", f"/gradio_api/call/search_json/{event}")
        r = self.conn.getresponse()
        text = r.read().decode()
        if r.status != 200 or "event: complete" not in text:
            return False
        payload = text.split("data:", 1)[1].strip().splitlines()[0]
        answer = json.loads(json.loads(payload)[0])
        return isinstance(answer.get("results"), list)


def load(
    url: str, clients: int, seconds: float, model: str, door: str = "direct"
) -> dict[str, Any]:
    lat: list[float] = []
    failed = [0]
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def worker(i: int) -> None:
        c = Client(url, model, door)
        n = i
        while time.monotonic() < end:
            t = time.perf_counter()
            try:
                ok = c.search(QUERIES[n % len(QUERIES)])
            except Exception:  # noqa: BLE001 - a failed request is counted, not raised
                ok = False
                c = Client(url, model, door)
            dt = time.perf_counter() - t
            with lock:
                if ok:
                    lat.append(dt)
                else:
                    failed[0] += 1
            n += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    wall = time.monotonic() - t0
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [0.0] * 99
    return {
        "door": door, "clients": clients, "requests": len(lat), "failed": failed[0],
        "rps": len(lat) / wall, "p50": q[49] * 1000, "p95": q[94] * 1000, "p99": q[98] * 1000,
    }  # fmt: skip


def service_times(index: Path, checkpoint: str | None, model: str) -> str:
    """p50 ms of each query through the search service in this process, with no HTTP: what
    the app's CPU spends on the search itself."""
    from app.search.service import SearchService
    from qdrant.edge import EdgeStore

    store = EdgeStore(index)
    try:
        service = SearchService(store, checkpoint=Path(checkpoint) if checkpoint else None)
        out = []
        for q in QUERIES:
            service.search_text(q, model=model)
            times = []
            for _ in range(20):
                t = time.perf_counter()
                service.search_text(q, model=model)
                times.append(time.perf_counter() - t)
            out.append(f"{q} {statistics.median(times) * 1000:.1f}")
        return ", ".join(out)
    finally:
        store.close()


def burst(index: Path, staging: Path, watched: Path, n: int) -> None:
    """Copies the n new photos in `staging` into the watched folder at once; prints how long
    until the app's index holds them all."""
    from app.remote import RemoteIndex, find_server

    record = find_server(index)
    assert record is not None
    remote = RemoteIndex(record)
    before = int(remote.status()["images"])
    t0 = time.monotonic()
    shutil.copytree(staging, watched / "burst")
    copied = time.monotonic() - t0
    while int(remote.status()["images"]) < before + n:
        if time.monotonic() - t0 > 900:
            print(f"burst: not all {n} indexed after 900 s")
            return
        time.sleep(0.5)
    took = time.monotonic() - t0
    print(
        f"burst of {n} photos into --watch: copied in {copied:.1f} s, all searchable after "
        f"{took:.0f} s ({n / took:.1f} img/s)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default=None)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clients", default="1,4,16,32")
    ap.add_argument("--ingest", type=int, default=300)
    ap.add_argument("--checkpoint", default=None, help="a DeViSE checkpoint (else ConSE)")
    ap.add_argument(
        "--burst", type=int, default=1000, help="then copy this many photos into the watched "
        "folder at once and time until all are searchable (0: skip)",
    )  # fmt: skip
    add_json_flag(ap)
    args = ap.parse_args()
    args.model = "devise" if args.checkpoint else "conse"
    levels = [int(x) for x in args.clients.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    server = None
    try:
        index = Path(args.index) if args.index else build_index(tmp, args.checkpoint)
        per_query = service_times(index, args.checkpoint, args.model)
        print(f"service ms per query (p50, in process): {per_query}")
        port = free_port()
        watched = tmp / "watched"
        watched.mkdir()
        server = devise(
            "serve", "--index", str(index), "--port", str(port), "--watch", str(watched),
            *(["--checkpoint", args.checkpoint] if args.checkpoint else []),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while not (index / "serve.json").exists():
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("devise serve did not start")
            time.sleep(0.3)
        url = json.loads((index / "serve.json").read_text())["url"]
        for door in ("direct", "gradio"):  # warm: the first query loads the words
            assert Client(url, args.model, door).search("dog"), f"the {door} door failed"
        print(f"CPU: {cpu_name()}; app at {url}; model {args.model}; {args.seconds:g} s a level")
        rows = [
            ("idle", load(url, n, args.seconds, args.model, door))
            for door in ("direct", "gradio")
            for n in levels
        ]
        # Each level runs during an ingest of its own new photos (copies of indexed ones
        # would reuse their vectors, not embed), sent by the CLI to the app's job.
        fm = tmp / "fm"
        subprocess.run(
            [sys.executable, "-m", "app.cli", "datasets", "fashion-mnist", str(fm), "--limit",
             str(args.ingest * len(levels) + args.burst)],
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        files = sorted(fm.rglob("*.png"))
        for i, n in enumerate(levels):
            part = tmp / f"ingest-{n}"
            for f in files[i * args.ingest : (i + 1) * args.ingest]:
                dest = part / f.parent.name / f.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(f, dest)
            ing = devise(
                "ingest", str(part), *model_flags(args.checkpoint), "--json", "--index",
                str(index), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            t_ing = time.monotonic()
            time.sleep(1.5)  # the CLI's start; then the app's job walks, hashes and embeds
            r = load(url, n, args.seconds, args.model)
            r["ingesting"] = ing.poll() is None
            rows.append(("ingest", r))
            out, _ = ing.communicate(timeout=900)
            summary = json.loads(out)
            print(
                f"ingest of {args.ingest} images during {n} client(s): indexed "
                f"{summary['indexed']}, failed {sum(summary['failed'].values())}, "
                f"{time.monotonic() - t_ing:.0f} s"
            )
        if args.burst:
            staging = tmp / "staging"
            for f in files[len(levels) * args.ingest :]:
                dest = staging / f.parent.name / f.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(f, dest)
            burst(index, staging, watched, args.burst)
        print(
            "| while | door | clients | req/s | p50 ms | p95 ms | p99 ms | failed "
            "| ingest running |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for what, r in rows:
            print(
                f"| {what} | {r['door']} | {r['clients']:.0f} | {r['rps']:.1f} | {r['p50']:.0f} | "
                f"{r['p95']:.0f} | {r['p99']:.0f} | {r['failed']:.0f} | "
                f"{'yes' if r.get('ingesting') else ('-' if what == 'idle' else 'ended')} |"
            )
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    report.run(__file__, main)
