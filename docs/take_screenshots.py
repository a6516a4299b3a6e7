"""The docs' screenshots from a running app, with headless Chromium.

    python docs/take_screenshots.py URL [--photo PATH] [--query Q] [--compare Q]
                                    [--model NAME] [--out docs]

The docs' own were taken of a folder a person has, not of the build's paths: scikit-image's
and Debian darknet's photos saved as camera-named JPEGs under /home/alice/Pictures (2024-summer,
pets, home, phone-backup), indexed with `devise ingest ~/Pictures --checkpoint
data/demo/devise.safetensors` and served with `devise serve`; then

    python docs/take_screenshots.py http://127.0.0.1:7860/ --model conse \
        --photo ~/Pictures/pets/IMG_0420.jpg --query "a dog on the grass" --compare dog

Needs the `playwright` package and Debian's chromium (no browser is downloaded).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page, sync_playwright

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def save_small(png: bytes, dest: Path, limit: int = 300_000) -> None:
    """A palette PNG: screenshots are mostly flat colour, so 256 colours keep them sharp."""
    im = Image.open(io.BytesIO(png)).convert("RGB")
    for width in (im.width, 1100, 960):
        small = im.resize((width, im.height * width // im.width)) if width < im.width else im
        buf = io.BytesIO()
        small.quantize(256).save(buf, format="PNG", optimize=True)
        if buf.tell() <= limit:
            break
    dest.write_bytes(buf.getvalue())
    print(f"{dest}: {buf.tell() // 1024} KB")


def wait_images(page: Page, selector: str) -> None:
    page.locator(f"{selector} img").first.wait_for(timeout=60_000)
    page.wait_for_function(
        f"() => [...document.querySelectorAll('{selector} img')]"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=60_000,
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--photo", type=Path, default=None, help="an image to tag and search by")
    p.add_argument("--query", default="ankle boot")
    p.add_argument("--compare", default="sneaker", help="the Compare tab's query")
    p.add_argument("--model", default=None, help="pick this model in the page first")
    p.add_argument("--out", type=Path, default=Path("docs"))
    args = p.parse_args()
    url = args.url.rstrip("/") + "/"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.route(
            "**/*",
            lambda route: route.continue_() if route.request.url.startswith(url) else route.abort(),
        )
        page.goto(url, wait_until="domcontentloaded")
        if args.model:
            page.get_by_label("Model").first.click()
            page.get_by_role("option", name=args.model, exact=True).click()
        page.locator("#query textarea").fill(args.query)
        page.locator("#search").click()
        wait_images(page, "#text-results")
        save_small(page.screenshot(), args.out / "search_text.png")
        if args.photo is not None:
            page.get_by_role("tab", name="Tag an image").click()
            page.locator("#tag-query input[type=file]").set_input_files(str(args.photo))
            page.get_by_role("button", name="Tag", exact=True).click()
            page.get_by_text("tag(s) by").wait_for(timeout=120_000)
            save_small(page.screenshot(), args.out / "tag.png")
            page.get_by_role("tab", name="Search by image").click()
            page.locator("#image-query input[type=file]").set_input_files(str(args.photo))
            page.get_by_role("button", name="Find similar").click()
            wait_images(page, "#image-results")
            save_small(page.screenshot(), args.out / "search_image.png")
        page.get_by_role("tab", name="Compare models").click()
        page.get_by_label("Words").last.fill(args.compare)
        page.get_by_role("button", name="Compare", exact=True).click()
        page.get_by_text("model(s):").wait_for(timeout=120_000)
        page.wait_for_timeout(1500)
        save_small(page.screenshot(full_page=True), args.out / "compare.png")
        browser.close()


if __name__ == "__main__":
    main()
