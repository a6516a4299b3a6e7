"""The Gradio 6 web app: search by text or image, tag an image, compare models, find
duplicates, index a folder.

`app/web/page.py` lays out the page (`build_demo`) over the plain handlers of
`app/web/handlers.py`; `app/web/launch.py` starts it (`launch_app`, `serve`); `app/web/routes.py`
holds the JSON routes for programs. This package re-exports what the CLI and the tests import.
"""

from __future__ import annotations

from app.web.launch import WebApp, _lone_slot, is_loopback, launch_app, parse_auth, serve
from app.web.page import build_demo

__all__ = ["WebApp", "_lone_slot", "build_demo", "is_loopback", "launch_app", "parse_auth", "serve"]
