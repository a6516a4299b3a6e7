"""The page: `build_demo(service)` lays out the tabs of `app/web/tabs.py`, over the plain
handlers of `app/web/handlers.py`, and keeps what it shows of the index current."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.web.handlers import WebHandlers
from app.web.people_tab import people_tab
from app.web.routes import add_json_api
from app.web.tabs import (
    Controls,
    compare_tab,
    controls,
    duplicates_tab,
    image_tab,
    index_box,
    tag_tab,
    text_tab,
)

if TYPE_CHECKING:
    import gradio as gr

    from app.search.service import SearchService
    from app.web.cliapi import CliApi


def build_demo(
    service: SearchService,
    *,
    handlers: WebHandlers | None = None,
    ingest_roots: Sequence[Path] | None = None,
    title: str = "devise-search",
    cli_api: CliApi | None = None,
    watch_status: Callable[[], str] | None = None,
) -> gr.Blocks:
    """The page. `ingest_roots`: folders the Index box may index (None: no Index box);
    `cli_api`: the endpoints the `devise` CLI calls while this app holds the index."""
    import gradio as gr

    from model.data.images import image_formats

    image_formats()  # Gradio opens uploads with PIL itself: HEIC needs its plugin by then
    h = handlers or WebHandlers(service)
    models = h.model_choices()
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\nImages and words in one vector space (DeViSE).")
        c = controls(h, models)
        text_tab(h, c)
        image_tab(h, c)
        tag_model = tag_tab(h, c, models)
        compare_tab(h, c, models, service)
        duplicates_tab(h)
        people_tab(h)
        index_box(h, c, ingest_roots)
        _refresh_on_load(demo, h, c, tag_model)
        add_json_api(h)
        if cli_api is not None:
            cli_api.register()
        _live_counts(h, c.overview, watch_status, cli_served=cli_api is not None)
    return demo


# ---------------------------------------------------------------------------- live state


def _refresh_on_load(demo: gr.Blocks, h: WebHandlers, c: Controls, tag_model: gr.Radio) -> None:
    """Each page load reads the index again: models, labels and cameras added since the app
    started show without a restart."""
    import gradio as gr

    def on_load() -> tuple[Any, Any, Any, Any, str]:
        ms = h.model_choices()
        return (
            gr.update(choices=ms, value=ms[0]),
            gr.update(choices=ms, value=h.tag_model(ms)),
            gr.update(choices=h.label_choices()),
            gr.update(choices=h.camera_choices()),
            h.overview(),
        )

    demo.load(
        on_load, None, [c.model, tag_model, c.labels, c.cameras, c.overview],
        api_visibility="private",
    )  # fmt: skip


def _live_counts(
    h: WebHandlers,
    overview: gr.Markdown,
    watch_status: Callable[[], str] | None,
    *,
    cli_served: bool,
) -> None:
    import gradio as gr

    if watch_status is not None:
        # what `--watch` is doing, and the index's counts, without reloading the page
        watching = gr.Markdown(watch_status(), elem_id="watch-status")
        timer = gr.Timer(2.0)
        timer.tick(
            lambda: (watch_status(), h.overview()), None, [watching, overview],
            api_visibility="private", concurrency_limit=None,
        )  # fmt: skip
    elif cli_served:
        # the CLI may ingest into this app's index at any time: keep the counts current
        gr.Timer(5.0).tick(
            h.overview, None, [overview], api_visibility="private", concurrency_limit=None
        )
