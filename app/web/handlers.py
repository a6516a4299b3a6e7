"""The web app's behaviour as plain typed handlers (`WebHandlers`) that tests call directly;
`app/web/page.py` only lays them out on the page and adapts them to Gradio's components."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.jobs.graph import BUSY
from app.search.duplicates import DuplicateReport, describe, human_date, human_size, small_note
from app.search.filters import PhotoFilter
from app.search.request import Kind, QueryRequest
from app.search.service import Answer, ImageResult, ServiceError, TagResult
from app.web.parts import outlined_items, tag_parts
from model.data.images import ImageError

if TYPE_CHECKING:
    from PIL import Image

    from app.jobs.graph import GraphJob
    from app.jobs.index import IndexJob
    from app.search.service import SearchService
    from app.web.guard import ServedRoots
    from model.data.thumbs import Thumbnails


DEFAULT_K = 12
MAX_UI_K = 100
COMPARE_KINDS = ("text", "image", "tag")
#: groups the Duplicates tab shows, each in a gallery of its own (the CLI lists them all)
MAX_UI_GROUPS = 20


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


#: how the Tag tab names each kind of tag: a detector's is said to be one
KIND_SHOWN = {
    "label": "label",
    "hypernym": "hypernym",
    "detected": "face detector",
    "word": "word",
}
TAG_HEADERS = ["tag", "kind", "score"]


def tag_row(r: TagResult) -> list[Any]:
    """A tag as a row of the Tag tab's table (markdown): labels in bold, hypernyms in
    italics and a detector's tag in bold italics stand out from plain words."""
    mark = {"label": "**", "hypernym": "_", "detected": "***"}.get(r.kind, "")
    word = f"{mark}{r.word}{mark}"
    if r.box is not None:  # a region's tag: which part of the picture shows it
        x0, y0, x1, y1 = r.box
        word += f" (part: x {x0:.2f}-{x1:.2f}, y {y0:.2f}-{y1:.2f})"
    return [word, KIND_SHOWN.get(r.kind, r.kind), round(float(r.score), 3)]


@dataclass
class TagsOut:
    #: tag -> score, for a panel that orders by score (the Compare tab's)
    tags: dict[str, float] = field(default_factory=dict)
    status: str = ""
    ok: bool = True
    #: the tags in the service's order (hedged: a breed before `dog`), as table rows
    rows: list[list[Any]] = field(default_factory=list)
    #: the photo with the region tags' boxes outlined and named; None: no tag is a part
    parts: Image.Image | None = None


@dataclass
class CompareOut:
    """One entry per model in the index: an Answer, or the error text for that model."""

    kind: str
    answers: dict[str, Answer | str] = field(default_factory=dict)
    status: str = ""
    ok: bool = True


@dataclass
class DuplicatesOut:
    """The Duplicates tab: one (heading, gallery items) per group shown, and a status line."""

    groups: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    #: every file shown, one row each, in full: group, kind, score, pixels, size, date, path
    rows: list[list[str | int]] = field(default_factory=list)
    status: str = ""
    ok: bool = True


#: the Duplicates tab's table of files
DUPLICATE_COLUMNS = ["group", "kind", "score", "pixels", "size", "modified", "path"]


def caption(r: ImageResult) -> str:
    """`label · folder · score`, then the day the photo was taken and its camera if known."""
    parts = [r.label, r.folder, f"{r.score:.2f}"]
    parts += [x for x in ((r.taken or "")[:10], r.camera or "") if x]
    if r.boxes:  # where: the best region's box, as fractions of the width and height
        x0, y0, x1, y1 = r.boxes[0]
        parts.append(f"in a part of the photo (x {x0:.2f}-{x1:.2f}, y {y0:.2f}-{y1:.2f})")
    if r.weak:
        parts.insert(0, "weaker match")  # where evidence ends: no sign of the query in it
    return " · ".join(parts)


@dataclass(frozen=True)
class PhotoArgs:
    """The Filters accordion's boxes as typed (blank boxes are no filter): the dates taken
    (ISO), cameras, a place LAT,LON and a radius in km; the service reads and checks them."""

    after: str | None = None
    before: str | None = None
    cameras: Sequence[str] | None = None
    near: str | None = None
    radius_km: float | None = None


def _request(
    kind: Kind, photo: PhotoArgs | None, labels: Sequence[str] | None, **fields: Any
) -> QueryRequest:
    """A query from the page's boxes, its filters read here, once (BadQueryError names the
    bad one); blank filters are none."""
    p = photo or PhotoArgs()
    return QueryRequest.typed(
        kind, after=p.after, before=p.before, cameras=p.cameras or (), near=p.near,
        radius_km=p.radius_km, labels=labels or (), **fields,
    )  # fmt: skip


def _read_as(answer: Answer, fallback: str) -> str:
    """How the service read a query, for the status line:
    `dog ×2 · beach · −people (ignored: a, on)`."""
    return answer.query if answer.query else fallback


def _min_score(value: float | None) -> float | None:
    # the slider's 0 means "no minimum", so negative cosines are not silently cut
    return float(value) if value else None


def _k(value: float | int | None) -> int:
    if value is None:
        return DEFAULT_K
    return int(value)


USER_ERRORS = (ServiceError, ImageError, ValueError)


class WebHandlers:
    """The app's behaviour as plain typed methods; the Gradio wiring only adapts them."""

    def __init__(
        self,
        service: SearchService,
        *,
        served: ServedRoots | None = None,
        job: IndexJob | None = None,
        thumbnails: Thumbnails | None = None,
    ) -> None:
        self.service = service
        self.served = served
        self.job = job
        #: what a gallery shows for a file a browser cannot show, or a big one (launch_app)
        self.thumbnails = thumbnails
        #: the background graph build, where the app runs one (launch_app)
        self.graphs: GraphJob | None = None

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
        line = f"`{st['index']}`: {st['images']} images, {words}; models: {models}"
        if self.graphs is not None and self.graphs.state in BUSY:
            line += " · the search graph is being built in the background: exact search meanwhile"
        return line

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

    @staticmethod
    def tag_model(models: list[str]) -> str:
        """The Tag tab's default model: conse where the index has it. A person tagging a
        photo wants what is in it, and conse knows ImageNet's 1,000 classes and their
        hypernyms; a devise checkpoint knows only its own labels (the demo's: ten kinds of
        clothing, so a cup of coffee gets `shirt` and `sandal`)."""
        return "conse" if "conse" in models else (models[0] if models else "devise")

    # ---------------------------------------------------------------- queries

    def upload_preview(self, path: str | None) -> str | None:
        """For an image input: a JPEG to show in place of an upload a browser cannot draw
        (HEIC, TIFF); None when the upload shows as it is."""
        if not path or self.thumbnails is None:
            return None
        drawn = self.thumbnails.drawable(path)
        return None if drawn == path else drawn

    def _shown(self, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """A gallery's (file, caption) items with each file as shown: itself, or its
        thumbnail (model/data/thumbs.py)."""
        if self.thumbnails is None:
            return items
        files = self.thumbnails.shown_many([path for path, _ in items])
        return [(f, c) for f, (_, c) in zip(files, items, strict=True)]

    def _gallery(self, answer: Answer, what: str) -> GalleryOut:
        out = GalleryOut()
        hidden, kept = 0, []
        for r in answer.results:
            if self.served is not None and not self.served.allows(r.path):
                hidden += 1  # a file gone since indexing, or a symlink out of the roots
                continue
            out.items.append((r.path, caption(r)))
            out.paths.append(r.path)
            kept.append(r)
        # a result found in a part of its photo is shown with that part outlined: a copy at
        # the thumbnail's size, so the photo is decoded once for it, not for a thumbnail too
        out.items = self._shown(outlined_items(self.thumbnails, kept, out.items))
        out.status = (
            f"{len(out.items)} result(s) for {what} by {answer.model} in {answer.took_ms:.0f} ms"
        )
        if hidden:
            out.status += f"; {hidden} not shown (missing, or outside the indexed folders)"
        if not answer.results:
            out.status += f": {answer.note or 'try fewer filters or a lower minimum score'}"
        elif answer.note:  # how a concept query was answered ("no image indexed under …")
            out.status += f". Note: {answer.note}"
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
        photo: PhotoArgs | None = None,
    ) -> GalleryOut:
        try:
            request = _request(
                "search", photo, labels, text=text, model=model or "devise", folder=folder,
                min_score=_min_score(min_score), k=_k(k),
            )  # fmt: skip
            answer = self.service.run(request)
        except USER_ERRORS as e:
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
        photo: PhotoArgs | None = None,
    ) -> GalleryOut:
        """Images like an uploaded image (a file Gradio wrote, or raw bytes); `query`, when
        given, adds compound-query terms to it ("at night", "2:bag -shoe")."""
        if image is None:
            return self._failed(ValueError("upload, paste or take a picture first"))
        try:
            # an upload is read as bytes, so it is decoded (pixel budget and all), never
            # matched by path against the index
            data = image if isinstance(image, bytes) else Path(image).read_bytes()
            # words beside the image make it a compound query; the image alone, a similar one
            # (which reads no text)
            request = _request(
                "search" if (query or "").strip() else "similar", photo, labels,
                text=query or "", image=data, model=model or "devise", folder=folder,
                min_score=_min_score(min_score), k=_k(k),
            )  # fmt: skip
            answer = self.service.run(request)
        except OSError as e:
            return self._failed(ValueError(f"cannot read the upload: {e.strerror or e}"))
        except USER_ERRORS as e:
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
        photo: PhotoArgs | None = None,
    ) -> GalleryOut:
        """The images like the clicked result, which is an indexed file: its stored vector
        is the query, so no model runs."""
        if not paths or index is None or not 0 <= index < len(paths):
            return self._failed(ValueError("click a result to see more like it"))
        path = paths[index]
        if self.served is not None and not self.served.allows(path):
            return self._failed(ValueError("that result is no longer available"))
        try:
            request = _request(
                "similar", photo, labels, image=path, model=model or "devise", folder=folder,
                min_score=_min_score(min_score), k=_k(k),
            )  # fmt: skip
            answer = self.service.run(request)
        except USER_ERRORS as e:
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
            # no zero_shot_bias: the service's "auto", as the page has no box for it
            request = QueryRequest(
                "tag", image=data, model=model or "devise", k=_k(k),
                min_score=_min_score(min_score), generality=generality or "specific",
            )  # fmt: skip
            answer = self.service.run(request)
        except OSError as e:
            return TagsOut(status=f"⚠️ cannot read the upload: {e.strerror or e}", ok=False)
        except USER_ERRORS as e:
            return TagsOut(status=f"⚠️ {e}", ok=False)
        results = [r for r in answer.results if isinstance(r, TagResult)]
        tags = {tag_key(r): float(r.score) for r in results}
        status = f"{len(tags)} tag(s) by {answer.model} in {answer.took_ms:.0f} ms"
        if any(r.kind == "detected" for r in results):
            status += "; `person` is from a face detector, not the classifier"
        parts = tag_parts(data, results)  # where the region tags are, outlined
        return TagsOut(tags, status, rows=[tag_row(r) for r in results], parts=parts)

    def compare(
        self,
        kind: str,
        text: str | None = None,
        image: str | bytes | None = None,
        labels: Sequence[str] | None = None,
        folder: str | None = None,
        min_score: float | None = None,
        k: float | int | None = DEFAULT_K,
        photo: PhotoArgs | None = None,
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
                min_score=_min_score(min_score), k=_k(k), photo=self._photo(photo),
            )  # fmt: skip
        except OSError as e:
            return CompareOut(kind, status=f"⚠️ cannot read the upload: {e}", ok=False)
        except USER_ERRORS as e:
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
            results = [r for r in a.results if isinstance(r, TagResult)]
            tags = {tag_key(r): float(r.score) for r in results}
            return GalleryOut(), TagsOut(
                tags, f"{a.took_ms:.0f} ms", rows=[tag_row(r) for r in results]
            )
        return self._gallery(a, "the query"), TagsOut()

    def duplicates(
        self, threshold: float | None = None, folder: str | None = None
    ) -> DuplicatesOut:
        """Groups of near-duplicate and identical images, each a gallery captioned with every
        file's dimensions, size and date. Shows; never deletes."""
        try:
            report = self.service.duplicates(threshold=threshold, folder=folder)
        except USER_ERRORS as e:
            return DuplicatesOut(status=f"⚠️ {e}", ok=False)
        return self._duplicate_groups(report)

    def _duplicate_groups(self, report: DuplicateReport) -> DuplicatesOut:
        out = DuplicatesOut()
        hidden = 0
        for group in report.groups:
            items: list[tuple[str, str]] = []
            for i, im in enumerate(group.images):
                if self.served is not None and not self.served.allows(im.path):
                    hidden += 1  # a file gone since indexing, or a symlink out of the roots
                    continue
                if group.kind == "exact":
                    how = "identical"
                elif i == 0:
                    how = "largest"
                else:
                    how = "-" if im.score is None else f"{im.score:.2f}"
                items.append((im.path, f"{how} · {describe(im)}"))
            if len(items) > 1 and len(out.groups) < MAX_UI_GROUPS:
                heading = f"{group.kind} · {len(group.images)} files · {group.images[0].path}"
                out.groups.append((heading, self._shown(items)))
                number = len(out.groups)
                shown = {path for path, _ in items}
                for im in group.images:
                    if im.path in shown:
                        score = "-" if im.score is None else f"{im.score:.3f}"
                        out.rows.append(
                            [number, group.kind, score, f"{im.width}x{im.height}",
                             human_size(im.bytes), human_date(im.mtime), im.path]
                        )  # fmt: skip
        files = sum(len(g.images) for g in report.groups)
        how = f"{report.model} ≥ {report.threshold:g}, {report.took_ms:.0f} ms"
        if report.note:
            out.status = f"No duplicates ({how}): {report.note}"
        elif not report.groups:
            out.status = f"No duplicates among {report.scanned} images ({how})."
        else:
            out.status = (
                f"{len(report.groups)} group(s), {files} files, among {report.scanned} images "
                f"({how}). Nothing is deleted: choose what to keep in your file manager."
            )
            if len(report.groups) > len(out.groups):
                out.status += (
                    f" The first {len(out.groups)} groups are shown; `devise duplicates` "
                    "lists them all."
                )
        if report.small:
            out.status += " " + small_note(report.small)
        if hidden:
            out.status += f" {hidden} file(s) not shown (missing, or outside the indexed folders)."
        return out

    # ---------------------------------------------------------------- for programs

    def duplicates_json(
        self, threshold: float | None = None, folder: str | None = None, model: str = "dup"
    ) -> dict[str, Any]:
        """The CLI's `duplicates --json` answer."""
        return self.service.duplicates(
            model=model or "dup", threshold=threshold, folder=folder
        ).to_json()

    def search_json(
        self, query: str, model: str | None = None, labels: Sequence[str] | None = None,
        folder: str | None = None, min_score: float | None = None, k: int = 10,
        photo: PhotoArgs | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """The CLI's `search --json` answer; raises ServiceError with the reason."""
        request = _request(
            "search", photo, labels, text=query, model=model or None, folder=folder,
            min_score=min_score, k=int(k),
        )  # fmt: skip
        return self.service.run(request).to_json()

    def similar_json(
        self, image: bytes, model: str | None = None, labels: Sequence[str] | None = None,
        folder: str | None = None, min_score: float | None = None, k: int = 10,
        photo: PhotoArgs | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """The CLI's `similar --json` answer for an uploaded image."""
        request = _request(
            "similar", photo, labels, image=image, model=model or None, folder=folder,
            min_score=min_score, k=int(k),
        )  # fmt: skip
        return self.service.run(request).to_json()

    def _photo(self, photo: PhotoArgs | None) -> PhotoFilter | None:
        """The Filters boxes read by the service; BadQueryError names the bad one."""
        if photo is None:
            return None
        return self.service.photo_filter(
            after=photo.after,
            before=photo.before,
            cameras=photo.cameras or (),
            near=photo.near,
            radius_km=photo.radius_km,
        )

    def camera_choices(self) -> list[str]:
        try:
            return self.service.cameras()
        except Exception:  # noqa: BLE001 - an empty or new index has no facet yet
            return []

    def tag_json(
        self, image: bytes, model: str | None = None, k: int = 10, min_score: float | None = None
    ) -> dict[str, Any]:
        """The CLI's `tag --json` answer for an uploaded image."""
        request = QueryRequest(
            "tag", image=image, model=model or None, k=int(k), min_score=min_score
        )
        return self.service.run(request).to_json()

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
