"""The Gradio 6 web app: search by text or image, tag an image, compare models, index a folder.

`build_demo(service)` builds the page from plain typed handlers (`WebHandlers`) that tests
call directly; `serve()` holds the launch flags, the file guard and the store's lifetime.

What the app serves from disk, and why nothing else:
- Results are copied by Gradio into its cache before the browser fetches them, and Gradio
  only copies files from `allowed_paths`: the indexed roots.
- `FileGuard` sits in front of every `file=` route and lets through image files only, whose
  real path (symlinks resolved) lies inside an indexed root or Gradio's own cache. So `../`,
  absolute paths, symlinks out of a root, a notes.txt next to the photos, and URLs are refused.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.service import MODELS, Answer, ImageResult, ServiceError, TagResult
from model.images import ImageError, is_image_path

if TYPE_CHECKING:
    import gradio as gr

    from app.service import SearchService
    from app.settings import Settings
    from ingest.pipeline import ArrayEmbedder, IngestSummary

log = logging.getLogger(__name__)

DEFAULT_K = 12
MAX_UI_K = 100
MAX_UPLOAD = "20mb"  # Gradio refuses larger uploads; decode_image then bounds the pixels
COMPARE_KINDS = ("text", "image", "tag")
_FILE_ROUTES = ("/file=", "/file/")


# ---------------------------------------------------------------------------- roots


class ServedRoots:
    """The folders whose image files the app may show. Thread-safe; grows when the app
    indexes a folder."""

    def __init__(self, roots: Sequence[str | Path] = (), extra: Sequence[str | Path] = ()) -> None:
        self._lock = threading.Lock()
        self._roots: list[Path] = []
        self._extra = [Path(os.path.realpath(p)) for p in extra]  # Gradio's cache folders
        self.add(roots)

    def add(self, roots: Sequence[str | Path]) -> list[str]:
        """Adds roots; returns the new ones (as given, absolute) for Gradio's allowed_paths."""
        added: list[str] = []
        with self._lock:
            for r in roots:
                real = Path(os.path.realpath(r))
                if real not in self._roots:
                    self._roots.append(real)
                    added.append(str(Path(os.path.abspath(r))))
        return added

    @property
    def roots(self) -> list[Path]:
        with self._lock:
            return list(self._roots)

    def allows(self, path: str | Path, *, cache_too: bool = False) -> bool:
        """True for an existing image file whose real path lies inside a root."""
        try:
            real = Path(os.path.realpath(path))
            if not is_image_path(real) or not real.is_file():
                return False
        except (OSError, ValueError):
            return False
        bases = self.roots + (self._extra if cache_too else [])
        return any(real == b or real.is_relative_to(b) for b in bases)


def roots_from_index(service: SearchService) -> list[str]:
    """The indexed roots: recorded by ingest in the index's meta; older indexes fall back to
    the folders of their points (one scroll over payloads)."""
    meta = service.meta()
    recorded = meta.get("roots")
    if isinstance(recorded, list) and recorded:
        return [str(r) for r in recorded]
    folders: set[str] = set()
    for rec in service.store.scroll_images(with_vectors=False):
        folder = rec.payload.get("folder")
        if folder:
            folders.add(str(folder))
    return _outermost(folders)


def _outermost(folders: set[str]) -> list[str]:
    out: list[str] = []
    for f in sorted(folders, key=lambda s: (s.count("/"), s)):
        if not any(f == o or f.startswith(o.rstrip("/") + "/") for o in out):
            out.append(f)
    return out


class FileGuard:
    """ASGI middleware: a `file=` request gets through only for a servable image file."""

    def __init__(self, app: Any, served: ServedRoots) -> None:
        self.app = app
        self.served = served

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            target = file_target(scope.get("path", ""))
            if target is not None and not self._ok(target):
                await _refuse(send)
                return
        await self.app(scope, receive, send)

    def _ok(self, target: str) -> bool:
        # judge exactly what Gradio will open: the path as decoded once by the server
        if "://" in target or not os.path.isabs(target):
            return False
        return self.served.allows(target, cache_too=True)


def file_target(path: str) -> str | None:
    """The file a Gradio file route would open, or None for other routes."""
    for marker in _FILE_ROUTES:
        i = path.find(marker)
        if i >= 0 and (marker == "/file=" or path[:i].endswith("/gradio_api") or i == 0):
            return path[i + len(marker) :]
    return None


async def _refuse(send: Any) -> None:
    body = b"File not allowed"
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"16")],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------- handlers


@dataclass
class GalleryOut:
    """A gallery's items, the original paths (for "more like this") and a status line."""

    items: list[tuple[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    status: str = ""
    ok: bool = True


def tag_key(r: TagResult) -> str:
    """A tag as the Tags panel shows it: labels and hypernyms stand out from plain words."""
    return r.word if r.kind == "word" else f"{r.word} ({r.kind})"


@dataclass
class TagsOut:
    tags: dict[str, float] = field(default_factory=dict)
    status: str = ""
    ok: bool = True


@dataclass
class CompareOut:
    """One entry per model in the index: an Answer, or the error text for that model."""

    kind: str
    answers: dict[str, Answer | str] = field(default_factory=dict)
    status: str = ""
    ok: bool = True


def caption(r: ImageResult) -> str:
    return f"{r.label} · {r.folder} · {r.score:.2f}"


def _read_as(answer: Answer, fallback: str) -> str:
    """How the service read a query, for the status line: `dog ×2, beach, −people`."""
    return answer.query if answer.query else fallback


def _min_score(value: float | None) -> float | None:
    # the slider's 0 means "no minimum", so negative cosines are not silently cut
    return float(value) if value else None


def _k(value: float | int | None) -> int:
    if value is None:
        return DEFAULT_K
    return int(value)


_USER_ERRORS = (ServiceError, ImageError, ValueError)


class IndexJob:
    """Indexes folders in a background thread on the app's own store; one job at a time."""

    def __init__(
        self,
        service: SearchService,
        embedders: Callable[[], Sequence[ArrayEmbedder]],
        *,
        allowed: Sequence[Path],
        model_meta: Callable[[], dict[str, dict[str, Any]]] | None = None,
        on_done: Callable[[list[Path]], None] | None = None,
    ) -> None:
        self.service = service
        self._embedders = embedders
        self._model_meta = model_meta
        self.allowed = [Path(os.path.realpath(p)) for p in allowed]
        self._on_done = on_done
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.state = "idle"  # idle | running | done | failed
        self.message = "no indexing job yet"
        self.done_files = 0

    @property
    def running(self) -> bool:
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def check_folder(self, folder: str) -> Path:
        folder = (folder or "").strip()
        if not folder:
            raise ValueError("type the folder to index, such as /home/me/Pictures")
        path = Path(os.path.abspath(os.path.expanduser(folder)))
        if not path.is_dir():
            raise ValueError(f"not a folder: {path}")
        real = Path(os.path.realpath(path))
        if not any(real == a or real.is_relative_to(a) for a in self.allowed):
            where = ", ".join(str(a) for a in self.allowed) or "nowhere (start with --ingest-root)"
            raise ValueError(f"this app may index folders under {where} only, not {path}")
        return path

    def start(self, folder: str) -> str:
        path = self.check_folder(folder)
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise ValueError(f"an indexing job is already running: {self.message}")
            self.state, self.done_files = "running", 0
            self.message = f"indexing {path}: starting"
            self._thread = threading.Thread(
                target=self._run, args=(path,), name="devise-index", daemon=True
            )
            self._thread.start()
        return self.message

    def _run(self, path: Path) -> None:
        from ingest.pipeline import ingest

        def progress(summary: IngestSummary) -> None:
            self.done_files = summary.indexed + sum(summary.failed.values())
            self.message = (
                f"indexing {path}: {summary.indexed} new, {summary.unchanged} unchanged, "
                f"{sum(summary.failed.values())} skipped so far"
            )

        try:
            embedders = list(self._embedders())
            meta = self._model_meta() if self._model_meta else {}
            summary = ingest(
                self.service.store,
                [path],
                embedders,
                progress=False,
                model_meta=meta,
                on_batch=progress,
            )
            self.message = f"indexed {path}: {summary.line()}"
            self.state = "done"
            if self._on_done is not None:
                self._on_done([path])
        except Exception as e:  # noqa: BLE001 - a job's failure is reported, never raised
            log.exception("indexing %s failed", path)
            self.message = f"indexing {path} failed: {e}"
            self.state = "failed"

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


class WebHandlers:
    """The app's behaviour as plain typed methods; the Gradio wiring only adapts them."""

    def __init__(
        self,
        service: SearchService,
        *,
        served: ServedRoots | None = None,
        job: IndexJob | None = None,
    ) -> None:
        self.service = service
        self.served = served
        self.job = job

    # ---------------------------------------------------------------- state

    def overview(self) -> str:
        """A line on what the index holds, or how to fill it when it is empty."""
        try:
            st = self.service.status()
        except Exception as e:  # noqa: BLE001 - the page must load whatever the store says
            return f"**The index cannot be read:** {e}"
        if st["images"] == 0:
            how = (
                "Use **Index a folder** below, or run "
                "`devise ingest DIR`, "
                "or `devise demo` for the Fashion-MNIST sample."
            )
            return f"**The index `{st['index']}` is empty.** {how}"
        models = ", ".join(f"{n} ({m['points']})" for n, m in st["models"].items()) or "none"
        words = f"{st['words']} words" if st["words"] else "no vocabulary yet (loads on first use)"
        return f"`{st['index']}`: {st['images']} images, {words}; models: {models}"

    def label_choices(self) -> list[str]:
        try:
            return self.service.labels()
        except Exception:  # noqa: BLE001 - an empty or new index has no facet yet
            return []

    def model_choices(self) -> list[str]:
        try:
            return self.service.models() or ["devise"]
        except Exception:  # noqa: BLE001
            return ["devise"]

    # ---------------------------------------------------------------- queries

    def _gallery(self, answer: Answer, what: str) -> GalleryOut:
        out = GalleryOut()
        hidden = 0
        for r in answer.results:
            if self.served is not None and not self.served.allows(r.path):
                hidden += 1  # a file gone since indexing, or a symlink out of the roots
                continue
            out.items.append((r.path, caption(r)))
            out.paths.append(r.path)
        out.status = (
            f"{len(out.items)} result(s) for {what} by {answer.model} in {answer.took_ms:.0f} ms"
        )
        if hidden:
            out.status += f"; {hidden} not shown (missing, or outside the indexed folders)"
        if not answer.results:
            out.status += f": {answer.note or 'try fewer filters or a lower minimum score'}"
        return out

    @staticmethod
    def _failed(e: Exception) -> GalleryOut:
        return GalleryOut(status=f"⚠️ {e}", ok=False)

    def search_text(
        self,
        text: str,
        model: str = "devise",
        labels: Sequence[str] | None = None,
        folder: str | None = None,
        min_score: float | None = None,
        k: float | int | None = DEFAULT_K,
    ) -> GalleryOut:
        try:
            answer = self.service.search_text(
                text, model=model or "devise", labels=labels or (), folder=folder,
                min_score=_min_score(min_score), k=_k(k),
            )  # fmt: skip
        except _USER_ERRORS as e:
            return self._failed(e)
        return self._gallery(answer, _read_as(answer, repr((text or "").strip())))

    def search_image(
        self,
        image: str | bytes | None,
        model: str = "devise",
        labels: Sequence[str] | None = None,
        folder: str | None = None,
        min_score: float | None = None,
        k: float | int | None = DEFAULT_K,
        query: str | None = "",
    ) -> GalleryOut:
        """Images like an uploaded image (a file Gradio wrote, or raw bytes); `query`, when
        given, adds compound-query terms to it ("at night", "2:bag -shoe")."""
        if image is None:
            return self._failed(ValueError("upload, paste or take a picture first"))
        try:
            # an upload is read as bytes, so it is decoded (pixel budget and all), never
            # matched by path against the index
            data = image if isinstance(image, bytes) else Path(image).read_bytes()
            common: dict[str, Any] = dict(
                model=model or "devise", labels=labels or (), folder=folder,
                min_score=_min_score(min_score), k=_k(k),
            )  # fmt: skip
            if (query or "").strip():
                answer = self.service.search_text(query or "", image=data, **common)
            else:
                answer = self.service.similar(data, **common)
        except OSError as e:
            return self._failed(ValueError(f"cannot read the upload: {e.strerror or e}"))
        except _USER_ERRORS as e:
            return self._failed(e)
        return self._gallery(answer, _read_as(answer, "the uploaded image"))

    def more_like_this(
        self,
        paths: Sequence[str] | None,
        index: int | None,
        model: str = "devise",
        labels: Sequence[str] | None = None,
        folder: str | None = None,
        min_score: float | None = None,
        k: float | int | None = DEFAULT_K,
    ) -> GalleryOut:
        """The images like the clicked result, which is an indexed file: its stored vector
        is the query, so no model runs."""
        if not paths or index is None or not 0 <= index < len(paths):
            return self._failed(ValueError("click a result to see more like it"))
        path = paths[index]
        if self.served is not None and not self.served.allows(path):
            return self._failed(ValueError("that result is no longer available"))
        try:
            answer = self.service.similar(
                path, model=model or "devise", labels=labels or (), folder=folder,
                min_score=_min_score(min_score), k=_k(k),
            )  # fmt: skip
        except _USER_ERRORS as e:
            return self._failed(e)
        return self._gallery(answer, f"more like {Path(path).name}")

    def tag(
        self,
        image: str | bytes | None,
        model: str = "devise",
        k: float | int | None = DEFAULT_K,
        min_score: float | None = None,
        generality: str = "specific",
    ) -> TagsOut:
        if image is None:
            return TagsOut(status="⚠️ upload, paste or take a picture first", ok=False)
        try:
            data = image if isinstance(image, bytes) else Path(image).read_bytes()
            answer = self.service.tag(
                data,
                model=model or "devise",
                k=_k(k),
                min_score=_min_score(min_score),
                generality=generality or "specific",
            )
        except OSError as e:
            return TagsOut(status=f"⚠️ cannot read the upload: {e.strerror or e}", ok=False)
        except _USER_ERRORS as e:
            return TagsOut(status=f"⚠️ {e}", ok=False)
        tags = {tag_key(r): float(r.score) for r in answer.results if isinstance(r, TagResult)}
        return TagsOut(tags, f"{len(tags)} tag(s) by {answer.model} in {answer.took_ms:.0f} ms")

    def compare(
        self,
        kind: str,
        text: str | None = None,
        image: str | bytes | None = None,
        labels: Sequence[str] | None = None,
        folder: str | None = None,
        min_score: float | None = None,
        k: float | int | None = DEFAULT_K,
    ) -> CompareOut:
        """The same query answered by every model in the index."""
        kind = kind if kind in COMPARE_KINDS else "text"
        query: str | bytes
        try:
            if kind == "text":
                query = text or ""
            elif image is None:
                raise ValueError("upload, paste or take a picture first")
            else:
                query = image if isinstance(image, bytes) else Path(image).read_bytes()
            if not self.service.models():
                self.service.require_images("devise")  # raises the empty-index message
            answers = self.service.compare(
                kind, query, labels=labels or (), folder=folder,
                min_score=_min_score(min_score), k=_k(k),
            )  # fmt: skip
        except OSError as e:
            return CompareOut(kind, status=f"⚠️ cannot read the upload: {e}", ok=False)
        except _USER_ERRORS as e:
            return CompareOut(kind, status=f"⚠️ {e}", ok=False)
        times = ", ".join(
            f"{m}: {a.took_ms:.0f} ms" if isinstance(a, Answer) else f"{m}: failed"
            for m, a in answers.items()
        )
        return CompareOut(kind, answers, f"{len(answers)} model(s): {times}")

    def compare_slot(self, out: CompareOut, model: str) -> tuple[GalleryOut, TagsOut] | None:
        """One model's column of a comparison; None when the index lacks that model."""
        if model not in out.answers:
            return None
        a = out.answers[model]
        if isinstance(a, str):
            return GalleryOut(status=f"⚠️ {a}", ok=False), TagsOut(status=f"⚠️ {a}", ok=False)
        if out.kind == "tag":
            tags = {tag_key(r): float(r.score) for r in a.results if isinstance(r, TagResult)}
            return GalleryOut(), TagsOut(tags, f"{a.took_ms:.0f} ms")
        return self._gallery(a, "the query"), TagsOut()

    # ---------------------------------------------------------------- for programs

    def search_json(
        self, query: str, model: str = "devise", labels: Sequence[str] | None = None,
        folder: str | None = None, min_score: float | None = None, k: int = 10,
    ) -> dict[str, Any]:  # fmt: skip
        """The CLI's `search --json` answer; raises ServiceError with the reason."""
        return self.service.search_text(
            query, model=model or "devise", labels=labels or (), folder=folder,
            min_score=min_score, k=int(k),
        ).to_json()  # fmt: skip

    def similar_json(
        self, image: bytes, model: str = "devise", labels: Sequence[str] | None = None,
        folder: str | None = None, min_score: float | None = None, k: int = 10,
    ) -> dict[str, Any]:  # fmt: skip
        """The CLI's `similar --json` answer for an uploaded image."""
        return self.service.similar(
            image, model=model or "devise", labels=labels or (), folder=folder,
            min_score=min_score, k=int(k),
        ).to_json()  # fmt: skip

    def tag_json(
        self, image: bytes, model: str = "devise", k: int = 10, min_score: float | None = None
    ) -> dict[str, Any]:
        """The CLI's `tag --json` answer for an uploaded image."""
        return self.service.tag(
            image, model=model or "devise", k=int(k), min_score=min_score
        ).to_json()

    # ---------------------------------------------------------------- indexing

    def start_index(self, folder: str) -> str:
        if self.job is None:
            return "⚠️ indexing from the web app is off: start it with --ingest-root DIR"
        try:
            return self.job.start(folder)
        except ValueError as e:
            return f"⚠️ {e}"

    def index_status(self) -> str:
        return self.job.message if self.job is not None else ""

    def index_progress(self, folder: str, poll_s: float = 1.0) -> Iterator[str]:
        """Starts a job and reports on it until it ends; searches keep working meanwhile."""
        first = self.start_index(folder)
        yield first
        if first.startswith("⚠️") or self.job is None:
            return
        while self.job.running:
            time.sleep(poll_s)
            yield self.job.message
        yield self.job.message


# ---------------------------------------------------------------------------- the page


def evaluation_markdown(service: SearchService) -> str:
    """The evaluation table recorded in the index (`devise eval ... --record`), as text."""
    from model.report import EvalReport

    data = (service.meta().get("evaluation") or {}) if service is not None else {}
    if not data:
        return (
            "No evaluation is recorded in this index. Run `devise eval DATA --checkpoint "
            "CKPT --models devise,conse,clip --record` to show one here."
        )
    report = EvalReport.from_json(data)
    where = data.get("data", "")
    return (
        f"Test images: `{where}`; hold-out (zero-shot) labels: "
        f"{', '.join(report.holdout) or 'none'}.\n\n```\n{report.table()}\n```"
    )


def add_json_api(h: WebHandlers) -> None:
    """Endpoints made for programs, beside the UI's galleries: `/search_json`, `/similar_json`
    and `/tag_json` answer with the JSON text that the CLI's --json prints. Call inside Blocks.

    Text, not an object: gradio_client takes any dict with a "path" key for a file and
    downloads it in its place, which would swap every result for a copy of its image."""
    import json
    from typing import get_type_hints

    import gradio as gr
    from gradio.data_classes import FileData

    def answer(call: Callable[[], dict[str, Any]]) -> str:
        try:
            return json.dumps(call())
        except (*_USER_ERRORS, OSError) as e:
            raise gr.Error(str(e)) from e  # the client raises with this one line

    def search_json(
        query: str, model: str = "devise", labels: list[str] | None = None,
        folder: str | None = None, min_score: float | None = None, k: int = 10,
    ) -> str:  # fmt: skip
        """Text -> images: {"model", "took_ms", "results": [{"path", "score", "label",
        "folder"}]}, as `devise search --json` prints it."""
        return answer(lambda: h.search_json(query, model, labels, folder, min_score, k))

    def similar_json(
        image: FileData, model: str = "devise", labels: list[str] | None = None,
        folder: str | None = None, min_score: float | None = None, k: int = 10,
    ) -> str:  # fmt: skip
        """Image -> images (send the image with gradio_client.handle_file), as `devise
        similar --json` prints it."""
        return answer(
            lambda: h.similar_json(uploaded_bytes(image), model, labels, folder, min_score, k)
        )

    def tag_json(
        image: FileData, model: str = "devise", k: int = 10, min_score: float | None = None
    ) -> str:
        """Image -> tags: {"model", "took_ms", "results": [{"word", "score"}]}, as `devise
        tag --json` prints it."""
        return answer(lambda: h.tag_json(uploaded_bytes(image), model, k, min_score))

    for fn in (search_json, similar_json, tag_json):
        # Gradio reads the types from the annotations, which postponed evaluation left as text
        fn.__annotations__ = get_type_hints(fn, localns={"FileData": FileData, "Any": Any})
        gr.api(fn, api_name=fn.__name__)


def uploaded_bytes(image: Any) -> bytes:
    """The bytes of a file uploaded to Gradio. A program endpoint gets the file's record
    unchecked, so only a file inside Gradio's upload folder is read: never one named freely."""
    from gradio import utils as gr_utils

    path = image.get("path") if isinstance(image, dict) else getattr(image, "path", None)
    if not path:
        raise ValueError("send the image as a file: gradio_client.handle_file(PATH)")
    real = Path(os.path.realpath(path))
    upload = Path(os.path.realpath(gr_utils.get_upload_folder()))
    if not real.is_relative_to(upload) or not real.is_file():
        raise ValueError("send the image as a file: gradio_client.handle_file(PATH)")
    return real.read_bytes()


def build_demo(
    service: SearchService,
    *,
    handlers: WebHandlers | None = None,
    ingest_roots: Sequence[Path] | None = None,
    title: str = "devise-search",
) -> gr.Blocks:
    """The page. `ingest_roots`: folders the Index box may index (None: no Index box)."""
    import gradio as gr

    h = handlers or WebHandlers(service)
    models = h.model_choices()
    slot_models = list(MODELS)  # devise, conse, clip; absent ones are hidden

    def warn(ok: bool, status: str) -> None:
        if not ok:
            gr.Warning(status.removeprefix("⚠️ "))

    def gallery_out(r: GalleryOut) -> tuple[list[tuple[str, str]], list[str], str]:
        warn(r.ok, r.status)
        return r.items, r.paths, r.status

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\nImages and words in one vector space (DeViSE).")
        overview = gr.Markdown(h.overview())
        with gr.Row():
            model = gr.Dropdown(models, value=models[0], label="Model", scale=1)
            labels = gr.Dropdown(
                h.label_choices(), value=[], multiselect=True, label="Labels (any of)", scale=2
            )
            folder = gr.Textbox(label="Folder prefix", placeholder="/photos/2024", scale=2)
            min_score = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Minimum score", scale=1)
            k = gr.Slider(
                1, MAX_UI_K, value=DEFAULT_K, step=1, label="Results (k)", scale=1, elem_id="k"
            )
        filters = [model, labels, folder, min_score, k]

        def results_gallery(label: str, elem_id: str) -> gr.Gallery:
            return gr.Gallery(
                label=label, columns=6, height="auto", allow_preview=False,
                object_fit="contain", elem_id=elem_id,
            )  # fmt: skip

        def image_input(elem_id: str | None, height: int = 240) -> gr.Image:
            """An image query: upload, webcam or clipboard, kept as a file path."""
            return gr.Image(
                type="filepath", sources=["upload", "webcam", "clipboard"],
                image_mode=None, label="Image", height=height, elem_id=elem_id,
            )  # fmt: skip

        with gr.Tab("Search by text"):
            with gr.Row():
                text = gr.Textbox(
                    label="Words", placeholder="ankle boot   or   beach 2:dog -people", scale=4,
                    elem_id="query", info='weigh a term with 2:dog, subtract one with -people, '
                    'quote a phrase: "ankle boot"',
                )  # fmt: skip
                text_btn = gr.Button("Search", variant="primary", scale=1, elem_id="search")
            text_status = gr.Markdown()
            text_gallery = results_gallery("Results (click one for more like it)", "text-results")
            text_paths = gr.State([])

        with gr.Tab("Search by image"):
            with gr.Row():
                image = image_input("image-query")
                with gr.Column():
                    image_words = gr.Textbox(
                        value="", label="Words (optional)", placeholder="at night  or  2:bag -shoe",
                        elem_id="image-words", info="terms added to the image, as in a text search",
                    )  # fmt: skip
                    image_btn = gr.Button("Find similar", variant="primary")
            image_status = gr.Markdown()
            image_gallery = results_gallery("Similar images (click for more)", "image-results")
            image_paths = gr.State([])

        with gr.Tab("Tag an image"):
            with gr.Row():
                tag_image = image_input("tag-query")
                with gr.Column():
                    tag_btn = gr.Button("Tag", variant="primary")
                    generality = gr.Radio(
                        ["specific", "general"],
                        value="specific",
                        label="Tags",
                        info="conse: a breed before 'dog' (specific), or 'dog' and 'animal' "
                        "first (general). Labels and hypernyms are marked.",
                    )
                    tag_status = gr.Markdown()
                    tags = gr.Label(label="Tags", num_top_classes=MAX_UI_K)

        with gr.Tab("Compare models"):
            with gr.Row():
                kind = gr.Radio(list(COMPARE_KINDS), value="text", label="Query")
                cmp_text = gr.Textbox(label="Words", placeholder="sneaker", scale=3)
                cmp_image = image_input(None, height=160)
                cmp_btn = gr.Button("Compare", variant="primary")
            cmp_status = gr.Markdown()
            with gr.Accordion("Evaluation: the same models, measured (devise eval)", open=False):
                gr.Markdown(evaluation_markdown(service))
            slots: list[tuple[gr.Gallery, gr.Label]] = []
            with gr.Row():
                for m in slot_models:
                    with gr.Column():
                        g = results_gallery(m, f"compare-{m}")
                        g.visible = m in models
                        lab = gr.Label(label=m, visible=False, num_top_classes=MAX_UI_K)
                        slots.append((g, lab))

        with gr.Accordion("Index a folder", open=False, visible=ingest_roots is not None):
            where = ", ".join(str(p) for p in ingest_roots or ())
            gr.Markdown(
                f"Indexes the images under a folder (inside {where or 'nowhere'}) with the "
                "index's DeViSE model, in the background: searches keep working meanwhile."
            )
            with gr.Row():
                index_folder = gr.Textbox(label="Folder", scale=4)
                index_btn = gr.Button("Index", scale=1)
            index_status = gr.Markdown(h.index_status())

        # ------------------------------------------------------------ events

        # The parameters are named for what they are, and every optional one has a default:
        # gradio_client callers see these names (`query`, `model`, `labels`, `folder`, ...).
        def on_text(
            query: str, model: str = "devise", labels: list[str] | None = None,
            folder: str | None = None, min_score: float | None = None, k: float = DEFAULT_K,
        ) -> tuple[list[tuple[str, str]], list[str], str]:  # fmt: skip
            return gallery_out(h.search_text(query, model, labels, folder, min_score, k))

        def on_image(
            image: str | None, model: str = "devise", labels: list[str] | None = None,
            folder: str | None = None, min_score: float | None = None, k: float = DEFAULT_K,
            query: str | None = None,
        ) -> tuple[list[tuple[str, str]], list[str], str]:  # fmt: skip
            # `query` comes last with a default (the box's ""), so API clients that send the
            # image and the filters only (before image-plus-words existed) keep working
            return gallery_out(h.search_image(image, model, labels, folder, min_score, k, query))

        def on_select(
            paths: list[str], m: str, ls: list[str], f: str, s: float, n: float,
            evt: gr.SelectData,
        ) -> tuple[list[tuple[str, str]], list[str], str]:  # fmt: skip
            idx = evt.index if isinstance(evt.index, int) else None
            return gallery_out(h.more_like_this(paths, idx, m, ls, f, s, n))

        # Gradio finds the event argument by its annotation; under postponed annotations it
        # would see the string "gr.SelectData" (gr is imported here, not at module level).
        on_select.__annotations__["evt"] = gr.SelectData

        def on_tag(
            image: str | None, model: str = "devise", k: float = DEFAULT_K,
            min_score: float | None = None, generality: str = "specific",
        ) -> tuple[dict[str, float], str]:  # fmt: skip
            r = h.tag(image, model, k, min_score, generality)
            warn(r.ok, r.status)
            return r.tags, r.status

        def on_compare(
            kind: str = "text", query: str | None = None, image: str | None = None,
            labels: list[str] | None = None, folder: str | None = None,
            min_score: float | None = None, k: float = DEFAULT_K,
        ) -> list[Any]:  # fmt: skip
            out = h.compare(kind, query, image, labels, folder, min_score, k)
            warn(out.ok, out.status)
            updates: list[Any] = []
            for m in slot_models:
                slot = h.compare_slot(out, m)
                present = slot is not None or (not out.ok and m in models)
                gal, tg = slot if slot is not None else (GalleryOut(), TagsOut())
                text_label = f"{m} · {gal.status or tg.status}" if slot is not None else m
                updates.append(
                    gr.update(
                        value=gal.items, label=text_label,
                        visible=present and out.kind != "tag",
                    )
                )  # fmt: skip
                updates.append(
                    gr.update(
                        value=tg.tags or None, label=f"{m} · {tg.status}" if slot else m,
                        visible=present and out.kind == "tag",
                    )
                )  # fmt: skip
            updates.append(out.status)
            return updates

        def on_load() -> tuple[Any, Any, str]:
            ms = h.model_choices()
            return (
                gr.update(choices=ms, value=ms[0]),
                gr.update(choices=h.label_choices()),
                h.overview(),
            )

        def on_index(path: str) -> Iterator[tuple[str, Any, str]]:
            for line in h.index_progress(path):
                yield line, gr.update(choices=h.label_choices()), h.overview()

        text_inputs = [text, *filters]
        text_outputs = [text_gallery, text_paths, text_status]
        text_btn.click(on_text, text_inputs, text_outputs, api_name="search_text")
        text.submit(on_text, text_inputs, text_outputs, api_visibility="private")
        image_outputs = [image_gallery, image_paths, image_status]
        image_inputs = [image, *filters, image_words]
        image_btn.click(on_image, image_inputs, image_outputs, api_name="search_image")
        image_words.submit(on_image, image_inputs, image_outputs, api_visibility="private")
        text_gallery.select(
            on_select, [text_paths, *filters], text_outputs, api_visibility="private"
        )
        image_gallery.select(
            on_select, [image_paths, *filters], image_outputs, api_visibility="private"
        )
        tag_btn.click(
            on_tag,
            [tag_image, model, k, min_score, generality],
            [tags, tag_status],
            api_name="tag",
        )
        cmp_outputs: list[Any] = [c for pair in slots for c in pair] + [cmp_status]
        cmp_btn.click(
            on_compare,
            [kind, cmp_text, cmp_image, labels, folder, min_score, k],
            cmp_outputs,
            api_name="compare",
        )
        demo.load(on_load, None, [model, labels, overview], api_visibility="private")
        add_json_api(h)
        index_btn.click(
            on_index, [index_folder], [index_status, labels, overview], api_name="index_folder",
            api_visibility="public" if ingest_roots is not None else "private",
        )  # fmt: skip
    return demo


# ---------------------------------------------------------------------------- serving


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

    def close(self) -> None:
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
) -> WebApp:
    """Builds and starts the app without blocking; the caller owns the store."""
    from gradio import utils as gr_utils
    from starlette.middleware import Middleware

    cache_dirs = {str(gr_utils.get_upload_folder()), str(gr_utils.get_cache_folder())}
    served = ServedRoots(roots_from_index(service), extra=sorted(cache_dirs))
    allowed = [str(r) for r in served.roots]

    demo_ref: list[gr.Blocks] = []

    def indexed(paths: list[Path]) -> None:
        new = served.add(paths)
        if demo_ref and new:
            demo_ref[0].allowed_paths.extend(new)

    job = None
    if ingest_roots is not None:
        job = IndexJob(
            service,
            embedders or (lambda: default_embedders(service)),
            allowed=ingest_roots,
            model_meta=model_meta,
            on_done=indexed,
        )
    handlers = WebHandlers(service, served=served, job=job)
    demo = build_demo(service, handlers=handlers, ingest_roots=ingest_roots)
    demo_ref.append(demo)
    demo.queue(default_concurrency_limit=2)
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        allowed_paths=allowed,
        max_file_size=max_file_size,
        prevent_thread_lock=True,
        share=False,
        ssr_mode=False,
        quiet=quiet,
        footer_links=["api"],
        app_kwargs={"middleware": [Middleware(FileGuard, served=served)]},
    )
    return WebApp(demo, url, service, served, job)


def default_embedders(service: SearchService) -> list[ArrayEmbedder]:
    """The DeViSE model that built the index (or the one the app was started with)."""
    from app.service import ModelMissingError

    if service.store.count("images") > 0:
        return [service.embedder("devise")]
    if service.checkpoint is None:
        raise ModelMissingError(
            "an empty index needs a DeViSE checkpoint: start the app with --checkpoint CKPT"
        )
    from model.embedder import DeviseEmbedder

    return [DeviseEmbedder(service.checkpoint, precision=service.precision)]


def devise_meta(service: SearchService) -> dict[str, dict[str, Any]]:
    """What ingest records about the DeViSE model, as `devise ingest` does."""
    emb = default_embedders(service)[0]
    words = getattr(emb, "words_source", None)
    ckpt = service.checkpoint or (service.meta().get("models") or {}).get("devise", {}).get(
        "checkpoint"
    )
    rec: dict[str, Any] = {}
    if words:
        rec["words"] = words
    if ckpt:
        rec["checkpoint"] = str(Path(ckpt).resolve())
    meta = getattr(emb, "meta", None)
    if isinstance(meta, dict) and "backbone" in meta:
        rec["backbone"] = meta["backbone"]
    return {"devise": rec}


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: str | None = None,
    ingest_roots: Sequence[Path] | None = None,
    env: dict[str, str] | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """`devise serve`: opens the store for the app's lifetime and blocks until Ctrl-C."""
    from app.service import SearchService

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
    store = settings.open_store()
    try:
        service = SearchService(store, checkpoint=settings.checkpoint, precision=settings.precision)
        app = launch_app(
            service,
            host=host,
            port=port,
            auth=credentials,
            ingest_roots=ingest_roots or None,
            model_meta=lambda: devise_meta(service),
        )
        print(f"devise-search is running at {app.url} (Ctrl-C to stop)", flush=True)
        if on_ready is not None:
            on_ready(app.url)
        try:
            app.demo.block_thread()
        finally:
            app.close()
    finally:
        store.close()
    return 0
