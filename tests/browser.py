"""Chromium, through playwright, on an app a test launched: offline (only the app's own files
load) and logged in where `--auth` asks, so each browser test holds only what it does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_missing() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def offline_page(browser: Any, url: str) -> Any:
    """A 1280x900 page that loads only the app's own files: anything else (web fonts, say)
    is refused, not awaited, as there is no network here."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith(url) else route.abort(),
    )
    return page


@contextmanager
def app_page(url: str, login: tuple[str, str] | None = None) -> Iterator[Any]:
    """The app at `url` open in headless Chromium (`offline_page`), logged in as `login`
    (user, password) first where given; the test is skipped, with the reason, where
    playwright or Chromium is absent."""
    why = chromium_missing()
    if why is not None:
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = offline_page(browser, url)
            page.goto(url, wait_until="domcontentloaded")
            if login is not None:
                page.get_by_label("username").fill(login[0])
                page.get_by_label("password").fill(login[1])
                page.get_by_role("button", name="Login").click()
            yield page
        finally:
            browser.close()


def search_text(page: Any, query: str, k: int | None = None) -> Any:
    """Search the page's text tab for `query` (with `k` results, where given, set first):
    the result images, as a locator to wait on."""
    if k is not None:
        box = page.locator("#k input[type=number]")
        box.wait_for(timeout=30_000)
        box.fill(str(k))
        box.press("Enter")
    page.locator("#query textarea").fill(query)
    page.locator("#search").click()
    return page.locator("#text-results img")
