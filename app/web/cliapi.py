"""The app's endpoints for the `devise` CLI (see app/remote.py): while the app holds the
index, the CLI's search, similar, tag, status, duplicates, ingest, words and eval --record
come here and run on the app's own search service and background index job, so they print
what they print with the app down.

The writes (ingest, words, eval --record) need the token from the index folder's
serve.json and run one at a time in the ingest slot; an app bound beyond loopback indexes
only folders inside its --ingest-root, token or not.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.remote import image_digest, token_ok
from app.search.evaluation import record_in

if TYPE_CHECKING:
    from app.jobs.index import IndexJob, IngestRequest
    from app.web.handlers import WebHandlers
    from ingest.pipeline import ArrayEmbedder, IngestSummary

log = logging.getLogger(__name__)


class CliApi:
    """What the CLI asks of the app; plain methods (tests call them), registered on the
    page by `register()` as `/cli_status`, `/cli_query`, `/cli_duplicates`, `/cli_ingest`,
    `/cli_words`, `/cli_record_evaluation` and `/cli_ingest_status`."""

    def __init__(
        self,
        handlers: WebHandlers,
        job: IndexJob | None,
        *,
        token: str,
        loopback: bool,
    ) -> None:
        self.h = handlers
        self.job = job
        self.token = token
        self.loopback = loopback
        self._embedders: dict[str, list[ArrayEmbedder]] = {}
        self._meta: dict[str, dict[str, dict[str, Any]]] = {}
        self._embedders_lock = threading.Lock()

    # ---------------------------------------------------------------- reading

    def status(self, pending: bool = False) -> dict[str, Any]:
        """`devise status --json`; with `pending`, also the vectors that wait for their
        graph (`graph_pending`) and the background build's state (`graph_build`), which the
        text form prints."""
        out: dict[str, Any] = self.h.service.status()
        if pending:
            out["graph_pending"] = self.h.service.graph_pending()
            if self.h.graphs is not None:
                out["graph_build"] = self.h.graphs.describe()
        return out

    def query(
        self, kind: str, params: dict[str, Any], image: bytes | None, image_name: str = ""
    ) -> dict[str, Any]:
        """search / similar / tag as the CLI runs them; the answer's JSON."""
        from app.search.request import QueryRequest

        picture: bytes | Path | None = image
        if image is not None and image_name:
            picture = self._indexed(image, image_name)
        request = QueryRequest.from_json({**params, "kind": kind}, picture)
        return self.h.service.run(request).to_json()

    def _indexed(self, data: bytes, name: str) -> bytes | Path:
        """The CLI's own file as the CLI would query it: an indexed file (same path, same
        content) by its path, so its stored vector is reused and it is left out of its own
        results; any other file by its bytes. The app never reads a path it is sent."""
        from qdrant.schema import abs_posix

        path = abs_posix(name)
        rec = self.h.service.store.find_by_path([path]).get(path)
        if rec is not None and rec.payload.get("sha256") == image_digest(data):
            return Path(path)
        return data

    def duplicates(
        self, threshold: float | None, folder: str | None, model: str = "dup"
    ) -> dict[str, Any]:
        """`devise duplicates --json`, and the note the CLI prints when nothing matched."""
        report = self.h.service.duplicates(model=model or "dup", threshold=threshold, folder=folder)
        out: dict[str, Any] = report.to_json()
        out["note"] = report.note
        return out

    def people(self, token: str, action: str, values: Sequence[str]) -> dict[str, Any]:
        """`devise people`: a list or show at once; a write (name, merge, remove) with the
        token, in the ingest slot, so it never interleaves with an ingest's face pass."""
        from app.search import people

        store = self.h.service.store
        if action not in people.WRITES:
            return people.run(store, action, values)
        job = self._writer(token, f"people {action}")
        with job.write_slot(f"people {action}"):
            return people.run(store, action, values)

    # ---------------------------------------------------------------- ingest

    def ingest(self, token: str, paths: Sequence[str], options: dict[str, Any]) -> int:
        """Queues an ingest in the app's background job; returns its id."""
        job = self._writer(token, "ingest")
        checked = [self.check_path(p) for p in paths]
        if not checked:
            raise ValueError("name at least one folder to index")
        opts = dict(options)
        run = self._runner(opts)
        return job.submit(checked, run, source="cli").id

    def words(self, token: str, source: str | None, top: int | None) -> int:
        """Queues `devise words` (the vocabulary reloaded) in the ingest slot; its id."""
        from ingest.vocabulary import reload_vocabulary

        job = self._writer(token, "words")
        store = self.h.service.store
        label = f"loading the words of {source}" if source else "loading the words"
        return job.submit(
            [], lambda _req, _on: reload_vocabulary(store, source, top), label=label
        ).id

    def record_evaluation(self, token: str, data: dict[str, Any]) -> int:
        """Queues `devise eval --record` (the table kept in the meta) in the ingest slot,
        so it cannot interleave with an ingest's own writes to the meta; its id."""
        job = self._writer(token, "eval --record")
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise ValueError("send an evaluation report's JSON (with its models)")
        store = self.h.service.store
        return job.submit(
            [], lambda _req, _on: record_in(store, data), label="recording the evaluation"
        ).id

    def _writer(self, token: str, command: str) -> IndexJob:
        """The job that writes to the index, for a caller with the token."""
        if not token_ok(token, self.token):
            raise PermissionError(
                f"{command} through the app needs the token in its index folder's serve.json"
            )
        if self.job is None:
            raise PermissionError("this app indexes nothing: start it with --ingest-root DIR")
        return self.job

    def check_path(self, path: str) -> Path:
        """A path the CLI may have indexed: any existing one on a loopback app (the token
        shows the caller can read the index itself); inside --ingest-root otherwise."""
        p = Path(os.path.abspath(os.path.expanduser(path)))
        if not p.exists():
            raise ValueError(f"not found: {path}")
        if self.loopback:
            return p
        assert self.job is not None
        real = Path(os.path.realpath(p))
        if not any(real == a or real.is_relative_to(a) for a in self.job.allowed):
            where = ", ".join(str(a) for a in self.job.allowed) or "nowhere"
            raise PermissionError(
                f"this app is bound beyond loopback and indexes folders under {where} only, not {p}"
            )
        return p

    def _runner(
        self, opts: dict[str, Any]
    ) -> Callable[[IngestRequest, Callable[[IngestSummary], None]], IngestSummary]:
        def run(req: IngestRequest, on_batch: Callable[[IngestSummary], None]) -> IngestSummary:
            from app.jobs.faces import face_stage_shown
            from ingest.pipeline import ingest

            embedders, meta = self.embedders(opts)
            store = self.h.service.store
            summary = ingest(
                store, req.paths, embedders, prune=bool(opts.get("prune")),
                reembed=bool(opts.get("reembed")), batch_size=opts.get("batch_size"),
                workers=opts.get("workers"), progress=False, model_meta=meta,
                on_batch=on_batch,
            )  # fmt: skip
            if not opts.get("no_faces"):

                def show(message: str) -> None:
                    req.message = message

                summary.faces = face_stage_shown(
                    store, req.paths, show, detector=str(opts.get("face_detector") or "hog"),
                    side=opts.get("face_side"),
                )  # fmt: skip
            # Not optimize(), which `devise ingest` runs: it holds the GIL for its whole
            # run, and every search of the app would wait (OFFLINE.md, "The GIL"). The
            # app's GraphJob builds the graph in another process once this job has ended.
            self.h.service.ensure_vocabulary()
            return summary

        return run

    def embedders(
        self, opts: dict[str, Any]
    ) -> tuple[list[ArrayEmbedder], dict[str, dict[str, Any]]]:
        """The models `devise ingest` would choose with these flags, loaded once per set of
        flags and kept: a watcher's many small ingests must not reload a backbone each."""
        from app.search.embedders import ModelOptions, build_embedders
        from app.settings import Settings

        key = json.dumps(
            {k: opts.get(k) for k in ("models", "checkpoint", "weights", "clip_weights",
                                      "clip_model", "clip_pretrained", "precision", "cache")},
            sort_keys=True,
        )  # fmt: skip
        with self._embedders_lock:
            if key in self._embedders:
                return self._with_regions(opts, self._embedders[key], self._meta[key])
            ckpt = opts.get("checkpoint")
            settings = Settings(
                index=Path(self.h.service.store.describe()),
                checkpoint=Path(ckpt) if ckpt else None,
                precision=opts.get("precision") or self.h.service.precision,
            )
            clip_weights, cache = opts.get("clip_weights"), opts.get("cache")
            options = ModelOptions(
                weights=opts.get("weights"),
                clip_model=opts.get("clip_model") or "ViT-B-32",
                clip_pretrained=opts.get("clip_pretrained") or "laion2b_s34b_b79k",
                clip_weights=Path(clip_weights) if clip_weights else None,
                cache_dir=Path(cache) if cache else None,
            )
            embedders, meta = build_embedders(opts.get("models"), settings, options)
            self._embedders[key] = embedders
            self._meta[key] = meta
        return self._with_regions(opts, embedders, meta)

    def _with_regions(
        self, opts: dict[str, Any], embedders: list[ArrayEmbedder], meta: dict[str, Any]
    ) -> tuple[list[ArrayEmbedder], dict[str, dict[str, Any]]]:
        """conse reads regions where asked (`--regions`), or where the index was made with
        them (as `devise ingest` on its own keeps them)."""
        recorded = (self.h.service.meta().get("models") or {}).get("conse") or {}
        regions = bool(opts.get("regions")) or bool(recorded.get("regions"))
        for emb in embedders:
            if emb.name == "conse":
                emb.regions = regions  # type: ignore[attr-defined]
                meta.setdefault("conse", {})["regions"] = regions
        return embedders, meta

    def watch_runner(
        self,
    ) -> Callable[[IngestRequest, Callable[[IngestSummary], None]], IngestSummary]:
        """How the folder watcher ingests: with the models the index holds (so a new photo
        gets every vector its neighbours have), pruning what is gone."""
        from model.embedders.factory import INGEST_NAMES

        recorded = self.h.service.meta().get("models") or {}
        models = [m for m in INGEST_NAMES if m in recorded] or None
        ckpt = self.h.service.checkpoint or (recorded.get("devise") or {}).get("checkpoint")
        return self._runner(
            {"models": models, "checkpoint": str(ckpt) if ckpt else None, "prune": True}
        )

    def ingest_status(self, req_id: int) -> dict[str, Any]:
        req = self.job.request(int(req_id)) if self.job is not None else None
        if req is None:
            raise ValueError(f"no ingest {req_id} in this app (it may have restarted)")
        return req.to_json()

    # ---------------------------------------------------------------- Gradio

    def register(self) -> None:
        """Adds the endpoints to the Blocks being built (call inside `with gr.Blocks()`)."""
        from typing import get_type_hints

        import gradio as gr
        from gradio.data_classes import FileData

        from app.web.guard import uploaded_bytes

        def answer(call: Callable[[], Any]) -> str:
            try:
                return json.dumps(call())
            except gr.Error:
                raise
            except Exception as e:  # noqa: BLE001 - every failure reaches the CLI as one line
                from app.search.errors import known_errors

                known = isinstance(e, (*known_errors(), ValueError, PermissionError, OSError))
                raise gr.Error(str(e) if known else f"{type(e).__name__}: {e}") from e

        def cli_status(pending: bool = False) -> str:
            """`devise status --json`, for the CLI while this app holds the index (with
            `pending`: and graph_pending, for its text form)."""
            return answer(lambda: self.status(bool(pending)))

        def cli_query(
            kind: str, params: str, image: FileData | None = None, image_name: str = ""
        ) -> str:
            """`devise search|similar|tag --json` for the CLI: params is the JSON of the
            command's flags; the image travels as an upload."""
            return answer(
                lambda: self.query(
                    kind, json.loads(params or "{}"),
                    uploaded_bytes(image) if image is not None else None, image_name,
                )
            )  # fmt: skip

        def cli_duplicates(
            threshold: float | None = None, folder: str | None = None, model: str = "dup"
        ) -> str:
            """`devise duplicates --json` for the CLI, with the report's note."""
            return answer(lambda: self.duplicates(threshold, folder, model))

        def cli_ingest(token: str, paths: str, options: str = "{}") -> str:
            """Queues `devise ingest` in the app's background job: {"id"}."""
            return answer(
                lambda: {"id": self.ingest(token, json.loads(paths), json.loads(options))}
            )

        def cli_words(token: str, source: str | None = None, top: int | None = None) -> str:
            """Queues `devise words` in the app's ingest slot: {"id"}; follow it with
            /cli_ingest_status."""
            return answer(lambda: {"id": self.words(token, source or None, top)})

        def cli_record_evaluation(token: str, report: str) -> str:
            """Queues `devise eval --record` (report: the evaluation's JSON): {"id"}."""
            return answer(lambda: {"id": self.record_evaluation(token, json.loads(report))})

        def cli_people(token: str, action: str, values: str = "[]") -> str:
            """`devise people ACTION VALUES --json` for the CLI (writes need the token)."""
            return answer(lambda: self.people(token, action, json.loads(values)))

        def cli_ingest_status(job_id: int) -> str:
            """How a queued ingest goes: {"state", "message", "done", "total", "summary"}."""
            return answer(lambda: self.ingest_status(job_id))

        for fn in (
            cli_status, cli_query, cli_duplicates, cli_ingest, cli_words, cli_record_evaluation,
            cli_ingest_status, cli_people,
        ):  # fmt: skip
            fn.__annotations__ = get_type_hints(fn, localns={"FileData": FileData, "Any": Any})
            # no queue slot for these: the web page's searches have theirs (2), and a
            # program's quick call should not wait behind a page's long one
            gr.api(fn, api_name=fn.__name__, concurrency_limit=None)
