"""The page's tabs, one function each (`app/web/page.py` calls them in order): each builds its
tab's components and wires its events to the plain handlers of `app/web/handlers.py`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.search.duplicates import DEFAULT_THRESHOLDS, DUP_MODEL
from app.search.service import MODELS
from app.web.handlers import (
    COMPARE_KINDS,
    DEFAULT_K,
    DUPLICATE_COLUMNS,
    MAX_UI_GROUPS,
    MAX_UI_K,
    TAG_HEADERS,
    CompareOut,
    GalleryOut,
    PhotoArgs,
    TagsOut,
    WebHandlers,
    evaluation_markdown,
)

if TYPE_CHECKING:
    import gradio as gr

    from app.search.service import SearchService

#: Gradio lays a gallery out in a fixed number of columns, each at least 100 px wide: on a
#: phone (390 px) six columns overflowed and the right half of every row was cut off, out of
#: sight. These galleries keep their columns where they fit and take as many 100 px columns
#: as fit where they do not. The People tab's captions (id, name, photos) wrap: on one line
#: a tile cut them off at "2 · not named · 5…", the count out of sight.
GALLERY_CLASS = "devise-gallery"
CSS = f"""
.{GALLERY_CLASS} .grid-container {{
    grid-template-columns: repeat(auto-fill, minmax(max(100px,
        calc((100% - (var(--grid-cols) - 1) * var(--spacing-lg)) / var(--grid-cols))), 1fr))
        !important;
}}
#people-gallery .caption-label {{
    white-space: normal;
}}
"""


@dataclass
class Controls:
    """What every tab's search reads, above the tabs: the model, the filters and the
    overview line of what the index holds."""

    overview: gr.Markdown
    model: gr.Dropdown
    labels: gr.Dropdown
    folder: gr.Textbox
    min_score: gr.Slider
    k: gr.Slider
    after: gr.Textbox
    before: gr.Textbox
    cameras: gr.Dropdown
    near: gr.Textbox
    radius_km: gr.Number

    @property
    def filters(self) -> list[Any]:
        return [self.model, self.labels, self.folder, self.min_score, self.k]

    @property
    def photo_filters(self) -> list[Any]:
        # after `filters` in every event: API clients that send only the older parameters
        # keep working, and the new ones are named
        return [self.after, self.before, self.cameras, self.near, self.radius_km]


def controls(h: WebHandlers, models: list[str]) -> Controls:
    """The row of search controls and the Filters accordion, above the tabs."""
    import gradio as gr

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
    with gr.Accordion("Filters: date taken, camera, place (from the photos' EXIF)", open=False):
        with gr.Row():
            after = gr.Textbox(
                label="Taken on or after", placeholder="YYYY-MM-DD", scale=1, elem_id="after"
            )
            before = gr.Textbox(
                label="Taken before", placeholder="YYYY-MM-DD", scale=1, elem_id="before"
            )
            cameras = gr.Dropdown(
                h.camera_choices(), value=[], multiselect=True, allow_custom_value=True,
                label="Cameras (any of; a part of a name matches)", scale=2,
                elem_id="cameras",
            )  # fmt: skip
            near = gr.Textbox(
                label="Near", placeholder="LAT,LON  e.g. 48.8566,2.3522", scale=1,
                elem_id="near",
            )  # fmt: skip
            radius_km = gr.Number(
                value=None, label="Radius (km, default 10)", minimum=0, scale=1,
                elem_id="radius-km",
            )  # fmt: skip
    return Controls(
        overview, model, labels, folder, min_score, k, after, before, cameras, near, radius_km
    )


# ---------------------------------------------------------------------------- pieces


def _warn(ok: bool, status: str) -> None:
    import gradio as gr

    if not ok:
        gr.Warning(status.removeprefix("⚠️ "))


def _gallery_out(r: GalleryOut) -> tuple[list[tuple[str, str]], list[str], str]:
    _warn(r.ok, r.status)
    return r.items, r.paths, r.status


def _results_gallery(label: str, elem_id: str, columns: int = 6) -> gr.Gallery:
    import gradio as gr

    # fit_columns=False: one or two results keep a tile's size, not the row's
    # width (Gradio widens the columns to fill it by default: one photo came out
    # 1,200 px wide, cropped by the page)
    return gr.Gallery(
        label=label, columns=columns, height="auto", allow_preview=False,
        object_fit="contain", elem_id=elem_id, fit_columns=False,
        elem_classes=[GALLERY_CLASS],
    )  # fmt: skip


def _image_input(h: WebHandlers, elem_id: str | None, height: int = 240) -> gr.Image:
    """An image query: upload, webcam or clipboard, kept as a file path. An upload
    a browser cannot draw (an iPhone's HEIC) is swapped for a JPEG of it."""
    import gradio as gr

    box = gr.Image(
        type="filepath", sources=["upload", "webcam", "clipboard"],
        image_mode=None, label="Image", height=height, elem_id=elem_id,
    )  # fmt: skip

    def preview(path: str | None) -> Any:
        drawn = h.upload_preview(path)
        return gr.skip() if drawn is None else drawn

    box.upload(
        preview, box, box, api_visibility="private", show_progress="hidden",
        concurrency_limit=None,
    )  # fmt: skip
    return box


def _more_like_this(
    h: WebHandlers, gallery: gr.Gallery, paths: gr.State, c: Controls, outputs: list[Any]
) -> None:
    """A click on a result shows the images like it, with the same filters."""
    import gradio as gr

    def on_select(
        paths: list[str], m: str, ls: list[str], f: str, s: float, n: float,
        a: str | None, b: str | None, cs: list[str] | None, w: str | None, r: float | None,
        evt: gr.SelectData,
    ) -> tuple[list[tuple[str, str]], list[str], str]:  # fmt: skip
        idx = evt.index if isinstance(evt.index, int) else None
        photo = PhotoArgs(a, b, cs, w, r)
        return _gallery_out(h.more_like_this(paths, idx, m, ls, f, s, n, photo))

    # Gradio finds the event argument by its annotation; under postponed annotations it
    # would see the string "gr.SelectData" (gr is imported here, not at module level).
    on_select.__annotations__["evt"] = gr.SelectData
    gallery.select(
        on_select, [paths, *c.filters, *c.photo_filters], outputs, api_visibility="private"
    )


# ---------------------------------------------------------------------------- tabs
# The parameters of the event functions are named for what they are, and every optional one
# has a default: gradio_client callers see these names (`query`, `model`, `labels`, ...).


def text_tab(h: WebHandlers, c: Controls) -> None:
    """Words -> images (`/search_text`); a click on a result shows more like it."""
    import gradio as gr

    with gr.Tab("Search by text"):
        with gr.Row():
            text = gr.Textbox(
                label="Words", placeholder="ankle boot   or   beach 2:dog -people", scale=4,
                elem_id="query", info='weigh a term with 2:dog, subtract one with -people, '
                'quote a phrase: "ankle boot"',
            )  # fmt: skip
            text_btn = gr.Button("Search", variant="primary", scale=1, elem_id="search")
        text_status = gr.Markdown()
        text_gallery = _results_gallery("Results (click one for more like it)", "text-results")
        text_paths = gr.State([])

    def on_text(
        query: str, model: str = "devise", labels: list[str] | None = None,
        folder: str | None = None, min_score: float | None = None, k: float = DEFAULT_K,
        after: str | None = None, before: str | None = None,
        cameras: list[str] | None = None, near: str | None = None,
        radius_km: float | None = None,
    ) -> tuple[list[tuple[str, str]], list[str], str]:  # fmt: skip
        photo = PhotoArgs(after, before, cameras, near, radius_km)
        return _gallery_out(h.search_text(query, model, labels, folder, min_score, k, photo))

    text_inputs = [text, *c.filters, *c.photo_filters]
    text_outputs = [text_gallery, text_paths, text_status]
    text_btn.click(on_text, text_inputs, text_outputs, api_name="search_text")
    text.submit(on_text, text_inputs, text_outputs, api_visibility="private")
    _more_like_this(h, text_gallery, text_paths, c, text_outputs)


def image_tab(h: WebHandlers, c: Controls) -> None:
    """An image, with words or not -> images (`/search_image`)."""
    import gradio as gr

    with gr.Tab("Search by image"):
        with gr.Row():
            image = _image_input(h, "image-query")
            with gr.Column():
                image_words = gr.Textbox(
                    value="", label="Words (optional)", placeholder="at night  or  2:bag -shoe",
                    elem_id="image-words", info="terms added to the image, as in a text search",
                )  # fmt: skip
                image_btn = gr.Button("Find similar", variant="primary")
        image_status = gr.Markdown()
        image_gallery = _results_gallery("Similar images (click for more)", "image-results")
        image_paths = gr.State([])

    def on_image(
        image: str | None, model: str = "devise", labels: list[str] | None = None,
        folder: str | None = None, min_score: float | None = None, k: float = DEFAULT_K,
        query: str | None = None, after: str | None = None, before: str | None = None,
        cameras: list[str] | None = None, near: str | None = None,
        radius_km: float | None = None,
    ) -> tuple[list[tuple[str, str]], list[str], str]:  # fmt: skip
        # `query` comes after the filters with a default (the box's ""), so API clients
        # that send the image and the filters only (before image-plus-words existed)
        # keep working; the EXIF filters came later still
        photo = PhotoArgs(after, before, cameras, near, radius_km)
        return _gallery_out(
            h.search_image(image, model, labels, folder, min_score, k, query, photo)
        )

    image_outputs = [image_gallery, image_paths, image_status]
    image_inputs = [image, *c.filters, image_words, *c.photo_filters]
    image_btn.click(on_image, image_inputs, image_outputs, api_name="search_image")
    image_words.submit(on_image, image_inputs, image_outputs, api_visibility="private")
    _more_like_this(h, image_gallery, image_paths, c, image_outputs)


def tag_tab(h: WebHandlers, c: Controls, models: list[str]) -> gr.Radio:
    """The Tag tab; returns its model choice, which a page load refreshes."""
    import gradio as gr

    with gr.Tab("Tag an image"):
        with gr.Row():
            tag_image = _image_input(h, "tag-query")
            with gr.Column():
                tag_btn = gr.Button("Tag", variant="primary")
                tag_model = gr.Radio(
                    models,
                    value=h.tag_model(models),
                    label="Tag with",
                    info="conse: ImageNet's 1,000 classes and their WordNet hypernyms, so "
                    "it names what is in most photos; devise: its checkpoint's own labels, "
                    "then the words nearest to the picture",
                    elem_id="tag-model",
                )
                generality = gr.Radio(
                    ["specific", "general"],
                    value="specific",
                    label="Tags",
                    info="conse: a breed before 'dog' (specific), or 'dog' and 'animal' "
                    "first (general). Labels and hypernyms are marked.",
                )
                tag_status = gr.Markdown()
                # in the service's order (hedged), each with its kind: gr.Label would
                # re-sort them by score
                tags = gr.Dataframe(
                    headers=TAG_HEADERS,
                    datatype=["markdown", "str", "number"],
                    label="Tags, in order: labels bold, hypernyms italic, a detector's both",
                    interactive=False,
                    elem_id="tag-table",
                )
        # the photo with the parts its region tags come from outlined and named; hidden
        # where no tag is a part
        parts = gr.Image(
            type="pil", label="Parts of the photo the tags marked 'part' come from",
            interactive=False, visible=False, elem_id="tag-parts", height=480,
        )  # fmt: skip
        drawn = gr.State(None)

    def on_tag(
        image: str | None, model: str = "devise", k: float = DEFAULT_K,
        min_score: float | None = None, generality: str = "specific",
    ) -> tuple[list[list[Any]], str, Any]:  # fmt: skip
        r = h.tag(image, model, k, min_score, generality)
        _warn(r.ok, r.status)
        return r.rows, r.status, r.parts

    def show_parts(picture: Any) -> Any:
        return gr.update(value=picture, visible=picture is not None)

    # the outlined photo goes through a State, which API clients do not see: /tag answers
    # the table and the status line, as before
    tag_btn.click(
        on_tag,
        [tag_image, tag_model, c.k, c.min_score, generality],
        [tags, tag_status, drawn],
        api_name="tag",
    ).then(show_parts, drawn, parts, api_visibility="private")
    return tag_model


def compare_tab(h: WebHandlers, c: Controls, models: list[str], service: SearchService) -> None:
    """One query answered by every model side by side (`/compare`), and the evaluation
    recorded in the index."""
    import gradio as gr

    with gr.Tab("Compare models"):
        with gr.Row():
            kind = gr.Radio(list(COMPARE_KINDS), value="text", label="Query")
            cmp_text = gr.Textbox(label="Words", placeholder="sneaker", scale=3)
            cmp_image = _image_input(h, None, height=160)
            cmp_btn = gr.Button("Compare", variant="primary")
        cmp_status = gr.Markdown()
        _evaluation_box(service)
        slots = _compare_slots(models)

    def on_compare(
        kind: str = "text", query: str | None = None, image: str | None = None,
        labels: list[str] | None = None, folder: str | None = None,
        min_score: float | None = None, k: float = DEFAULT_K,
        after: str | None = None, before: str | None = None,
        cameras: list[str] | None = None, near: str | None = None,
        radius_km: float | None = None,
    ) -> list[Any]:  # fmt: skip
        photo = PhotoArgs(after, before, cameras, near, radius_km)
        out = h.compare(kind, query, image, labels, folder, min_score, k, photo)
        _warn(out.ok, out.status)
        return _compare_updates(h, out, models)

    cmp_outputs: list[Any] = [x for slot in slots for x in slot] + [cmp_status]
    cmp_btn.click(
        on_compare,
        [kind, cmp_text, cmp_image, c.labels, c.folder, c.min_score, c.k, *c.photo_filters],
        cmp_outputs,
        api_name="compare",
    )


def _evaluation_box(service: SearchService) -> None:
    import gradio as gr

    with gr.Accordion("Evaluation: the same models, measured (devise eval)", open=False):
        # a callable value is read again at each page load: a table recorded while
        # the app runs (`devise eval --record`, sent here) shows on the next reload
        gr.Markdown(lambda: evaluation_markdown(service))


def _compare_slots(models: list[str]) -> list[tuple[gr.Column, gr.Gallery, gr.Dataframe]]:
    """A column with a gallery and a table of tags for each model the app knows; those the
    index lacks are hidden until an answer comes from them (a model ingested while the app
    runs shows at its first comparison, not at the next start)."""
    import gradio as gr

    slots: list[tuple[gr.Column, gr.Gallery, gr.Dataframe]] = []
    with gr.Row():
        for m in MODELS:
            # a model the index lacks takes no room; side by side, 3 images a row
            with gr.Column(visible=m in models) as col:
                g = _results_gallery(m, f"compare-{m}", columns=3)
                g.visible = m in models
                # tags in each model's own order, as in the Tag tab
                lab = gr.Dataframe(
                    headers=TAG_HEADERS,
                    datatype=["markdown", "str", "number"],
                    label=m,
                    interactive=False,
                    visible=False,
                )
                slots.append((col, g, lab))
    return slots


def _compare_updates(h: WebHandlers, out: CompareOut, models: list[str]) -> list[Any]:
    """Each model's slot shown or hidden and filled with its answer (gallery, tags), then the
    status line."""
    import gradio as gr

    updates: list[Any] = []
    for m in MODELS:
        slot = h.compare_slot(out, m)
        present = slot is not None or (not out.ok and m in models)
        updates.append(gr.update(visible=present))  # the column
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
                value=tg.rows, label=f"{m} · {tg.status}" if slot else m,
                visible=present and out.kind == "tag",
            )
        )  # fmt: skip
    updates.append(out.status)
    return updates


def duplicates_tab(h: WebHandlers) -> None:
    """Groups of near-duplicate and identical files (`/duplicates`); deletes nothing."""
    import gradio as gr

    with gr.Tab("Duplicates"):
        gr.Markdown(
            "Near-duplicates (resized, recompressed or slightly cropped copies) and "
            "identical files, each group side by side with every file's dimensions and "
            "size, the largest first; the table below gives every file's date and full "
            "path, so you can choose what to keep. **Nothing is deleted here.**"
        )
        with gr.Row():
            dup_threshold = gr.Slider(
                0.3, 1.0, value=DEFAULT_THRESHOLDS[DUP_MODEL], step=0.01, scale=2,
                label="Threshold (cosine)", elem_id="dup-threshold",
                info="higher: only closer copies; 1.0: identical files only",
            )  # fmt: skip
            dup_folder = gr.Textbox(
                label="Folder", placeholder="/photos/2024", scale=3, elem_id="dup-folder"
            )
            dup_btn = gr.Button(
                "Find duplicates", variant="primary", scale=1, elem_id="find-duplicates"
            )
        dup_status = gr.Markdown(elem_id="dup-status")
        dup_galleries = [
            gr.Gallery(
                label=f"group {i + 1}",
                columns=6,
                height=270,
                fit_columns=False,
                elem_classes=[GALLERY_CLASS],
                allow_preview=True,
                object_fit="contain",
                visible=False,
                elem_id=f"dup-group-{i}",
            )  # fmt: skip
            for i in range(MAX_UI_GROUPS)
        ]
        dup_table = gr.Dataframe(
            headers=DUPLICATE_COLUMNS, label="The files of these groups, in full",
            interactive=False, wrap=True, visible=False, elem_id="dup-table",
        )  # fmt: skip

    def on_duplicates(threshold: float | None = None, folder: str | None = None) -> list[Any]:
        out = h.duplicates(threshold, folder)
        _warn(out.ok, out.status)
        updates: list[Any] = []
        for i in range(MAX_UI_GROUPS):
            if i < len(out.groups):
                heading, items = out.groups[i]
                updates.append(gr.update(value=items, label=heading, visible=True))
            else:
                updates.append(gr.update(value=None, visible=False))
        updates.append(gr.update(value=out.rows or None, visible=bool(out.rows)))
        updates.append(out.status)
        return updates

    dup_btn.click(
        on_duplicates,
        [dup_threshold, dup_folder],
        [*dup_galleries, dup_table, dup_status],
        api_name="duplicates",
    )


def index_box(h: WebHandlers, c: Controls, ingest_roots: Sequence[Path] | None) -> None:
    """Index a folder, in the background; hidden where the app may index nothing."""
    import gradio as gr

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

    def on_index(path: str) -> Iterator[tuple[str, Any, Any, str]]:
        for line in h.index_progress(path):
            labels_now = gr.update(choices=h.label_choices())
            yield line, labels_now, gr.update(choices=h.camera_choices()), h.overview()

    index_btn.click(
        on_index, [index_folder], [index_status, c.labels, c.cameras, c.overview],
        api_name="index_folder",
        api_visibility="public" if ingest_roots is not None else "private",
    )  # fmt: skip
