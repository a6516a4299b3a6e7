"""One index, many hands: the record `devise serve` leaves beside its lock, and the CLI's
client that sends a command to the app holding the index.

The embedded store admits one process. While `devise serve` holds an index it writes
`serve.json` next to the store's `store.pid` lock: its PID, where it listens on loopback,
and a random token. A CLI command that finds the index locked by a live app sends its
request there (search, similar, tag, status, duplicates, ingest) through Gradio's own API,
and the app answers with the same search service the CLI would have run. The token proves
the caller can read the index folder (the record is 0600), so it stands in for the app's
`--auth` and lets the CLI index folders the web box may not.

A record whose PID is dead, or that no longer holds the lock, is stale: it is removed and
the command opens the store itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORD_FILE = "serve.json"
PID_FILE = "store.pid"  # qdrant/edge_files.py's lock file, whose PID the record must match
#: the user name the CLI logs in with when the app has --auth; its password is the token
CLI_USER = "devise-cli"
#: how long a forwarded command waits for the app to answer one call
CALL_TIMEOUT_S = 120.0


class RemoteError(Exception):
    """The app holding the index refused a forwarded command, or could not be reached."""


@dataclass(frozen=True)
class ServeRecord:
    pid: int
    url: str  # where a CLI on this machine reaches the app (loopback when bound there)
    token: str
    auth: bool  # the app asks for --auth: the CLI logs in as CLI_USER with the token
    host: str  # the address the app is bound to
    checkpoint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid, "url": self.url, "token": self.token, "auth": self.auth,
            "host": self.host, "checkpoint": self.checkpoint,
        }  # fmt: skip


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_ok(given: str | None, token: str) -> bool:
    return bool(given) and secrets.compare_digest(str(given), token)


def connect_host(host: str) -> str:
    """The address a CLI on this machine dials: loopback when the app listens there or on
    every address; otherwise the one address it is bound to (still this machine)."""
    if host in ("", "0.0.0.0", "localhost", "127.0.0.1"):
        return "127.0.0.1"
    if host in ("::", "::1"):
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def write_record(index: Path, record: ServeRecord) -> Path:
    """Writes root/serve.json readable by its owner only (it holds the token), atomically."""
    path = Path(index) / RECORD_FILE
    tmp = path.with_name(f".{RECORD_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record.to_json(), f)
    os.replace(tmp, path)
    return path


def remove_record(index: Path, pid: int | None = None) -> None:
    """Removes root/serve.json (only if it is `pid`'s, when given)."""
    path = Path(index) / RECORD_FILE
    if pid is not None:
        rec = _read(path)
        if rec is not None and rec.pid != pid:
            return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _read(path: Path) -> ServeRecord | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ServeRecord(
            pid=int(data["pid"]), url=str(data["url"]), token=str(data["token"]),
            auth=bool(data.get("auth")), host=str(data.get("host", "")),
            checkpoint=data.get("checkpoint"),
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _lock_holder(index: Path) -> int | None:
    try:
        text = (Path(index) / PID_FILE).read_text(encoding="ascii").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def find_server(index: Path) -> ServeRecord | None:
    """The live app holding `index`, or None. A stale record (its PID dead, or no longer the
    lock's holder) is removed, so the caller opens the store as usual."""
    path = Path(index) / RECORD_FILE
    if not path.exists():
        return None
    rec = _read(path)
    if rec is None or not _alive(rec.pid) or _lock_holder(index) not in (None, rec.pid):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    if _lock_holder(index) is None:
        return None  # the app is starting or stopping: its lock is not taken
    if rec.pid == os.getpid():
        return None  # this very process holds the index (tests, the demo)
    return rec


def app_holding(settings: Any) -> RemoteIndex | None:
    """The app that holds `settings`' embedded index (`devise serve`), to send a command to;
    None when none does (the command opens the store itself) or the index is a server's."""
    if settings.qdrant_url is not None:
        return None
    record = find_server(settings.index)
    return RemoteIndex(record) if record is not None else None


# ---------------------------------------------------------------------------- the client


class RemoteIndex:
    """The CLI's side: sends commands to the app that holds the index."""

    def __init__(self, record: ServeRecord, *, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.record = record
        self.timeout_s = timeout_s
        self._client: Any = None

    @property
    def url(self) -> str:
        return self.record.url

    def client(self) -> Any:
        if self._client is None:
            import httpx
            from gradio_client import Client

            auth = (CLI_USER, self.record.token) if self.record.auth else None
            try:
                self._client = Client(
                    self.record.url, auth=auth, verbose=False, download_files=False,
                    httpx_kwargs={"timeout": httpx.Timeout(self.timeout_s)},
                )  # fmt: skip
            except Exception as e:  # noqa: BLE001 - any failure to connect is one line
                raise RemoteError(
                    f"the app holding this index (PID {self.record.pid}, {self.record.url}) "
                    f"does not answer: {_reason(e)}"
                ) from e
        return self._client

    def call(self, api_name: str, *args: Any) -> Any:
        try:
            job = self.client().submit(*args, api_name=api_name)
            return job.result(timeout=self.timeout_s)
        except RemoteError:
            raise
        except Exception as e:  # noqa: BLE001 - the app's error text, as one line
            raise RemoteError(_reason(e)) from e

    def call_json(self, api_name: str, *args: Any) -> Any:
        return json.loads(self.call(api_name, *args))

    # ------------------------------------------------------------ commands

    def status(self, pending: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = self.call_json("/cli_status", pending)
        return out

    def query(self, kind: str, params: dict[str, Any], image: Path | None) -> dict[str, Any]:
        """search / similar / tag: the answer's JSON, as `--json` prints it."""
        from gradio_client import handle_file

        upload = handle_file(str(image)) if image is not None else None
        name = os.path.abspath(image) if image is not None else ""
        out: dict[str, Any] = self.call_json("/cli_query", kind, json.dumps(params), upload, name)
        return out

    def people(self, action: str, values: list[str]) -> dict[str, Any]:
        """`devise people ACTION`'s answer, from the app (a write sends the token)."""
        out: dict[str, Any] = self.call_json(
            "/cli_people", self.record.token, action, json.dumps(values)
        )
        return out

    def duplicates(self, threshold: float | None, folder: str | None, model: str) -> Any:
        return self.call_json("/cli_duplicates", threshold, folder, model)

    def ingest(
        self,
        dirs: list[str],
        options: dict[str, Any],
        *,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        poll_s: float = 0.5,
    ) -> dict[str, Any]:
        """Starts an ingest in the app's background job and follows it to its end; returns
        the job's last state ({"state": "done", "summary": {...}, "line": ...}); RemoteError
        when it failed."""
        started = self.call_json(
            "/cli_ingest", self.record.token, json.dumps([os.path.abspath(d) for d in dirs]),
            json.dumps(options),
        )  # fmt: skip
        return self.follow(int(started["id"]), on_progress=on_progress, poll_s=poll_s)

    def words(
        self,
        source: str | None,
        top: int | None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """`devise words` run by the app, in its ingest slot; the finished job's state."""
        started = self.call_json("/cli_words", self.record.token, source, top)
        return self.follow(int(started["id"]), on_progress=on_progress, poll_s=0.2)

    def record_evaluation(
        self, report: dict[str, Any], on_progress: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """`devise eval --record` run by the app, in its ingest slot; the finished job's
        state."""
        started = self.call_json("/cli_record_evaluation", self.record.token, json.dumps(report))
        return self.follow(int(started["id"]), on_progress=on_progress, poll_s=0.1)

    def follow(
        self,
        job_id: int,
        *,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        poll_s: float = 0.5,
    ) -> dict[str, Any]:
        """A queued job's states until it ends: the finished one, or RemoteError with the
        job's message when it failed."""
        while True:
            state: dict[str, Any] = self.call_json("/cli_ingest_status", job_id)
            if on_progress is not None:
                on_progress(state)
            if state["state"] == "failed":
                raise RemoteError(state["message"])
            if state["state"] == "done":
                return state
            time.sleep(poll_s)


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def image_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
