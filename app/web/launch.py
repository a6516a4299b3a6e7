"""Launching the app: `launch_app` starts it without blocking (the tests' way in), `serve` is
`devise serve` (launch flags, the file guard of `app/web/guard.py`, the store's lifetime, a
clean stop on Ctrl-C or SIGTERM); `app/jobs/index.py` runs the Index box's background job."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.jobs.graph import GraphJob
from app.jobs.index import IndexJob, default_embedders, devise_meta
from app.web.guard import FileGuard, ServedRoots, roots_from_index
from app.web.handlers import WebHandlers
from app.web.page import build_demo
from app.web.tabs import CSS

if TYPE_CHECKING:
    import gradio as gr

    from app.jobs.watch import FolderWatcher
    from app.search.service import SearchService
    from app.settings import Settings
    from app.web.cliapi import CliApi
    from ingest.pipeline import ArrayEmbedder
    from model.data.thumbs import Thumbnails

log = logging.getLogger(__name__)

MAX_UPLOAD = "20mb"  # Gradio refuses larger uploads; decode_image then bounds the pixels


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    """`user:pass` (the password may hold colons); None when unset."""
    if not auth:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth / DEVISE_AUTH must look like user:password")
    return user, password


@dataclass
class WebApp:
    """A launched app: what tests and `serve` need to reach and stop it."""

    demo: gr.Blocks
    url: str
    service: SearchService
    served: ServedRoots
    job: IndexJob | None
    cli: CliApi | None = None
    watcher: FolderWatcher | None = None
    graphs: GraphJob | None = None

    def close(self) -> None:
        if self.graphs is not None:
            self.graphs.stop()  # a build under way ends, and its copy goes
        if self.watcher is not None:
            self.watcher.stop()
        if self.job is not None:
            self.job.wait(timeout=600)
        self.demo.close()


def launch_app(
    service: SearchService,
    *,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    auth: tuple[str, str] | None = None,
    ingest_roots: Sequence[Path] | None = None,
    embedders: Callable[[], Sequence[ArrayEmbedder]] | None = None,
    model_meta: Callable[[], dict[str, dict[str, Any]]] | None = None,
    max_file_size: str | int = MAX_UPLOAD,
    quiet: bool = True,
    cli_token: str | None = None,
    watch: Sequence[Path] | None = None,
    rescan_s: float | None = None,
) -> WebApp:
    """Builds and starts the app without blocking; the caller owns the store. `cli_token`:
    serve the `devise` CLI's endpoints (app/web/cliapi.py), ingest allowed with this token;
    `watch`: folders to index as they change (app/jobs/watch.py), rescanned every `rescan_s`."""
    from app.jobs.watch import RESCAN_S, FolderWatcher
    from app.remote import new_token
    from app.web.cliapi import CliApi

    thumbs, served = _served(service)
    demo_ref: list[gr.Blocks] = []

    def indexed(paths: list[Path]) -> None:
        new = served.add(paths)
        if demo_ref and new:
            demo_ref[0].allowed_paths.extend(new)

    job = None
    if ingest_roots is not None or cli_token is not None or watch:
        # the CLI's ingests run in the same job as the Index box's, one at a time
        job = IndexJob(
            service,
            embedders or (lambda: default_embedders(service)),
            allowed=ingest_roots or [],
            model_meta=model_meta,
            on_done=indexed,
        )
    handlers = WebHandlers(service, served=served, job=job, thumbnails=thumbs)
    # the graphs an index lacks, or has from older settings, are built in another process
    # while the app answers (app/jobs/graph.py): at open, and after each write
    graphs = GraphJob(service.store, job.write_slot if job is not None else _lone_slot())
    handlers.graphs = graphs
    if job is not None:
        job.after_write.append(graphs.poke)
    cli = watcher = None
    login: Any = auth
    if job is not None:
        cli = CliApi(handlers, job, token=cli_token or new_token(), loopback=is_loopback(host))
    if cli_token is not None and auth is not None:
        login = _login(auth, cli_token)
    if watch and job is not None and cli is not None:
        watcher = FolderWatcher(
            job, watch, cli.watch_runner, rescan_s=RESCAN_S if rescan_s is None else rescan_s
        )
    demo = build_demo(
        service, handlers=handlers, ingest_roots=ingest_roots,
        cli_api=cli if cli_token is not None else None,
        watch_status=watcher.describe if watcher is not None else None,
    )  # fmt: skip
    demo_ref.append(demo)
    url = _start(
        demo, handlers, served, [str(r) for r in served.roots] + [str(thumbs.folder)],
        host=host, port=port, login=login, max_file_size=max_file_size, quiet=quiet,
        token=cli.token if cli else new_token(), needs_token=auth is not None,
    )  # fmt: skip
    if watcher is not None:
        watcher.start()
    graphs.start()
    return WebApp(demo, url, service, served, job, cli, watcher, graphs)


def _served(service: SearchService) -> tuple[Thumbnails, ServedRoots]:
    """The gallery's thumbnails, and the folders the app may serve files from: the
    index's, and Gradio's own for the uploads."""
    from gradio import utils as gr_utils

    from model.data.thumbs import Thumbnails, default_folder

    # the gallery's thumbnails (model/data/thumbs.py): where ingest keeps those of HEIC files
    thumbs = Thumbnails(default_folder())
    cache_dirs = {str(gr_utils.get_upload_folder()), str(gr_utils.get_cache_folder())}
    return thumbs, ServedRoots(roots_from_index(service), extra=sorted(cache_dirs))


def _start(
    demo: gr.Blocks,
    handlers: WebHandlers,
    served: ServedRoots,
    allowed: list[str],
    *,
    host: str,
    port: int | None,
    login: Any,
    max_file_size: str | int,
    quiet: bool,
    token: str,
    needs_token: bool,
) -> str:
    """Starts the server without blocking, behind the file guard and the JSON search route;
    returns its URL."""
    from starlette.middleware import Middleware

    from app.web.routes import SearchRoute

    demo.queue(default_concurrency_limit=2)
    _, url, _ = demo.launch(
        css=CSS,
        server_name=host,
        server_port=port,
        auth=login,
        allowed_paths=allowed,
        max_file_size=max_file_size,
        prevent_thread_lock=True,
        share=False,
        ssr_mode=False,
        quiet=quiet,
        footer_links=["api"],
        app_kwargs={
            "middleware": [
                Middleware(FileGuard, served=served),
                # POST|GET /search_json: one request into the same handler, no queue
                Middleware(SearchRoute, handlers=handlers, token=token, needs_token=needs_token),
            ]
        },  # fmt: skip
    )
    return str(url)


def _lone_slot() -> Callable[[str], AbstractContextManager[Any]]:
    """A write slot for an app that takes no writes (no index job): the graph build alone
    holds it."""
    lock = threading.Lock()

    @contextlib.contextmanager
    def slot(doing: str) -> Iterator[None]:
        del doing
        with lock:
            yield

    return slot


def _login(auth: tuple[str, str], token: str) -> Callable[[str, str], bool]:
    """The app's --auth, and the CLI's login: its user name with the index's token."""
    import secrets

    from app.remote import CLI_USER, token_ok

    def check(user: str, password: str) -> bool:
        if user == CLI_USER:
            return token_ok(password, token)
        return secrets.compare_digest(f"{user}\0{password}", f"{auth[0]}\0{auth[1]}")

    return check


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: str | None = None,
    ingest_roots: Sequence[Path] | None = None,
    env: dict[str, str] | None = None,
    on_ready: Callable[[str], None] | None = None,
    watch: Sequence[Path] | None = None,
    rescan_s: float | None = None,
) -> int:
    """`devise serve`: opens the store for the app's lifetime and blocks until Ctrl-C."""
    from app.search.service import SearchService

    env = dict(os.environ) if env is None else env
    credentials = parse_auth(auth or env.get("DEVISE_AUTH"))
    if not is_loopback(host) and credentials is None:
        log.warning(
            "serving on %s with no password: anyone who can reach this address can search "
            "the index and see its images; pass --auth user:pass or set DEVISE_AUTH",
            host,
        )
        print(
            f"warning: binding {host} beyond loopback with no --auth / DEVISE_AUTH",
            flush=True,
        )
    if ingest_roots is None:
        # The Index box may index the user's own files when only they can reach the app.
        ingest_roots = [Path.home()] if is_loopback(host) else []
    from app.remote import ServeRecord, connect_host, new_token, remove_record, write_record

    store = settings.open_store()
    # The embedded index admits this process only: the CLI finds where it listens in the
    # index folder, beside the lock, and sends its commands here (app/remote.py).
    embedded = settings.qdrant_url is None
    token = new_token()
    try:
        service = SearchService(store, checkpoint=settings.checkpoint, precision=settings.precision)
        app = launch_app(
            service,
            host=host,
            port=port,
            auth=credentials,
            ingest_roots=ingest_roots or None,
            model_meta=lambda: devise_meta(service),
            cli_token=token if embedded else None,
            watch=watch,
            rescan_s=rescan_s,
        )
        if embedded:
            bound = app.url.split("//", 1)[-1].rsplit(":", 1)
            record = ServeRecord(
                pid=os.getpid(), url=f"http://{connect_host(host)}:{bound[-1].rstrip('/')}/",
                token=token, auth=credentials is not None, host=host,
                checkpoint=str(settings.checkpoint.resolve()) if settings.checkpoint else None,
            )  # fmt: skip
            write_record(settings.index, record)
        print(f"devise-search is running at {app.url} (Ctrl-C to stop)", flush=True)
        if on_ready is not None:
            on_ready(app.url)
        if watch:
            print(f"watching {', '.join(str(w) for w in watch)} for new photos", flush=True)
        # `kill` (SIGTERM) stops the app as Ctrl-C does: the record goes, the store closes
        previous = _on_sigterm_interrupt()
        try:
            app.demo.block_thread()
        finally:
            if previous is not None:
                import signal

                signal.signal(signal.SIGTERM, previous)
            if embedded:
                remove_record(settings.index, os.getpid())
            app.close()
    finally:
        store.close()
    return 0


def _on_sigterm_interrupt() -> Any:
    """Makes SIGTERM raise KeyboardInterrupt in the main thread; returns the old handler
    (None off the main thread, where no handler can be set)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)
