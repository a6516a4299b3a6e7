"""`POST|GET /search_json` straight on the app's own server (Gradio's Starlette app), beside
Gradio's queued `/gradio_api/call/search_json`.

Why a second door to the same handler: a Gradio API call is two HTTP requests (the call,
then its event stream) through the queue, about 30 ms of the app's CPU for a 2 ms search,
so on two cores it tops out near 30 searches a second and 16 clients wait over a second
(bench/bench_serve.py). This route is one request and one thread-pool hop (two searches at a
time: SEARCH_THREADS) into the same query (`QueryRequest`) and `SearchService.run` that every
face uses; the answer is `devise search --json`'s.

Access follows the app's: open where the app has no --auth (as its Gradio API is);
with --auth it needs the index's token (`Authorization: Bearer TOKEN`, from serve.json).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.remote import token_ok
from app.search.filters import read_people
from app.search.request import QueryRequest
from app.web.guard import uploaded_bytes
from app.web.handlers import USER_ERRORS, PhotoArgs

if TYPE_CHECKING:
    from app.web.handlers import WebHandlers

PATH = "/search_json"
#: searches of this route run at once; the rest wait their turn in the server's loop, first
#: come first served. A search is a few ms of CPU, mostly under the GIL: with Starlette's
#: pool of 40 threads, 16 clients made 16 threads take turns at the GIL, and the unlucky
#: ones waited (Zen 4, 2 cores, bench/bench_serve.py: p95 171 ms, 244 req/s); two at a
#: time gave p95 67 ms at 327 req/s, and kept 288 req/s at 32 clients.
SEARCH_THREADS = 2
MAX_BODY = 64 * 1024
_LISTS = ("labels", "cameras", "people")
_FIELDS = (
    "query", "model", "labels", "folder", "min_score", "k", "after", "before", "cameras",
    "near", "radius_km", "people",
)  # fmt: skip


def parse_params(raw: dict[str, Any]) -> dict[str, Any]:
    """The search's parameters from a JSON body or a query string; ValueError names the bad
    one."""
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
    out: dict[str, Any] = {}
    for name in _FIELDS:
        v = raw.get(name)
        if v is None or v == "":
            continue
        if name in _LISTS:
            out[name] = [str(x) for x in v] if isinstance(v, list) else [str(v)]
        elif name == "k":
            try:
                out[name] = int(v)
            except (TypeError, ValueError):
                raise ValueError(f"k must be a whole number, got {v!r}") from None
        elif name in ("min_score", "radius_km"):
            try:
                out[name] = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number, got {v!r}") from None
        else:
            out[name] = str(v)
    if "query" not in out:
        raise ValueError('query is missing: send {"query": "dog"} or ?query=dog')
    return out


class SearchRoute:
    """ASGI middleware that answers PATH itself and passes every other request on."""

    def __init__(self, app: Any, handlers: WebHandlers, token: str, needs_token: bool) -> None:
        self.app = app
        self.h = handlers
        self.token = token
        self.needs_token = needs_token
        self._limiter: Any = None  # made on the first request, inside the server's loop

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("path") != PATH:
            await self.app(scope, receive, send)
            return
        import anyio.to_thread
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        request = Request(scope, receive)
        response: JSONResponse
        if self.needs_token and not self._authorised(request):
            response = JSONResponse({"error": "this app has --auth: send the token"}, 401)
        elif request.method not in ("GET", "POST"):
            response = JSONResponse({"error": "use GET or POST"}, 405)
        else:
            try:
                if request.method == "POST":
                    body = await request.body()
                    if len(body) > MAX_BODY:
                        raise ValueError("the request body is too large")
                    raw = json.loads(body or b"{}")
                    if not isinstance(raw, dict):
                        raise ValueError("send a JSON object")
                else:
                    q = request.query_params
                    raw = {k: (q.getlist(k) if k in _LISTS else q[k]) for k in q}
                params = parse_params(raw)
                if self._limiter is None:
                    self._limiter = anyio.CapacityLimiter(SEARCH_THREADS)
                answer = await anyio.to_thread.run_sync(self._search, params, limiter=self._limiter)
                response = JSONResponse(answer)
            except json.JSONDecodeError as e:
                response = JSONResponse({"error": f"the body is not JSON: {e}"}, 400)
            except Exception as e:  # noqa: BLE001 - a user's error is a 400 with its line
                if not isinstance(e, USER_ERRORS):
                    raise
                response = JSONResponse({"error": str(e)}, 400)
        await response(scope, receive, send)

    def _authorised(self, request: Any) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and token_ok(given.strip(), self.token)

    def _search(self, p: dict[str, Any]) -> dict[str, Any]:
        # as /search_json on Gradio's API asks it (WebHandlers.search_json): `model` "" is
        # the service's choice, the filters read here, once
        request = QueryRequest.typed(
            "search", text=p["query"], model=p.get("model") or None,
            labels=p.get("labels") or (), folder=p.get("folder"), min_score=p.get("min_score"),
            k=int(p.get("k", 10)), after=p.get("after"), before=p.get("before"),
            cameras=p.get("cameras") or (), near=p.get("near"), radius_km=p.get("radius_km"),
            people=read_people(p.get("people") or ()),
        )  # fmt: skip
        return self.h.service.run(request).to_json()


def add_json_api(h: WebHandlers) -> None:
    """Endpoints made for programs, beside the UI's galleries: `/search_json`, `/similar_json`
    and `/tag_json` answer with the JSON text that the CLI's --json prints. Call inside Blocks.

    Text, not an object: gradio_client takes any dict with a "path" key for a file and
    downloads it in its place, which would swap every result for a copy of its image."""
    from typing import get_type_hints

    import gradio as gr
    from gradio.data_classes import FileData

    def answer(call: Callable[[], dict[str, Any]]) -> str:
        try:
            return json.dumps(call())
        except (*USER_ERRORS, OSError) as e:
            raise gr.Error(str(e)) from e  # the client raises with this one line

    def search_json(
        query: str, model: str = "", labels: list[str] | None = None,
        folder: str | None = None, min_score: float | None = None, k: int = 10,
        after: str | None = None, before: str | None = None, cameras: list[str] | None = None,
        near: str | None = None, radius_km: float | None = None,
    ) -> str:  # fmt: skip
        """Text -> images: {"model", "took_ms", "results": [{"path", "score", "label",
        "folder"}]} (with "taken" and "camera" where the photo's EXIF has them), as `devise
        search --json` prints it. model: devise, conse or clip; "" (the default) is devise
        where the index holds its vectors, else the first model it holds, as on the CLI.
        after / before: ISO dates taken; cameras: names or parts of names, any of; near:
        "LAT,LON" with radius_km (default 10)."""
        photo = PhotoArgs(after, before, cameras, near, radius_km)
        return answer(lambda: h.search_json(query, model, labels, folder, min_score, k, photo))

    def similar_json(
        image: FileData, model: str = "", labels: list[str] | None = None,
        folder: str | None = None, min_score: float | None = None, k: int = 10,
        after: str | None = None, before: str | None = None, cameras: list[str] | None = None,
        near: str | None = None, radius_km: float | None = None,
    ) -> str:  # fmt: skip
        """Image -> images (send the image with gradio_client.handle_file), as `devise
        similar --json` prints it; the same filters as /search_json."""
        photo = PhotoArgs(after, before, cameras, near, radius_km)
        return answer(
            lambda: h.similar_json(
                uploaded_bytes(image), model, labels, folder, min_score, k, photo
            )
        )

    def tag_json(
        image: FileData, model: str = "", k: int = 10, min_score: float | None = None
    ) -> str:
        """Image -> tags: {"model", "took_ms", "results": [{"word", "score"}]}, as `devise
        tag --json` prints it."""
        return answer(lambda: h.tag_json(uploaded_bytes(image), model, k, min_score))

    def duplicates_json(
        threshold: float | None = None, folder: str | None = None, model: str = "dup"
    ) -> str:
        """Groups of near-duplicate and identical images: {"model", "threshold", "took_ms",
        "scanned", "groups": [{"kind", "images": [{"path", "score", "width", "height",
        "bytes", "mtime"}]}]}, as `devise duplicates --json` prints it. Deletes nothing."""
        return answer(lambda: h.duplicates_json(threshold, folder, model))

    for fn in (search_json, similar_json, tag_json, duplicates_json):
        # Gradio reads the types from the annotations, which postponed evaluation left as text
        fn.__annotations__ = get_type_hints(fn, localns={"FileData": FileData, "Any": Any})
        gr.api(fn, api_name=fn.__name__)
