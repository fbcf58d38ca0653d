"""Takes the README's screenshots of the web chat (docs/web_gallery.png, web_chat.png, web_scene.png) on the
embedded default: `personae serve` on a throwaway home, headless Chromium from Debian, a short chat with Mara and
a scene of Mara and Hale. PNGs are reduced to a 64-colour palette to stay small.

    python3 scripts/web_screenshots.py [-c configs/default.yaml]
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402
from browser import click, missing, open_chat, open_page, personae_serve, start_browser, wait_for  # noqa: E402


def save(driver, name: str) -> None:
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    image = image.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    image.save(ROOT / "docs" / name, optimize=True)
    print(f"docs/{name}: {(ROOT / 'docs' / name).stat().st_size // 1024} KB")


def reply_to(driver, text: str) -> None:
    before = len(driver.find_elements("css selector", "#messages .message.char"))
    driver.find_element("id", "message-input").send_keys(text, "\n")
    wait_for(driver, lambda d: len(d.find_elements("css selector", "#messages .message.char")) > before
             and d.find_element("id", "send-button").is_enabled(), 180)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--url", help="a personae serve already running (no key), instead of starting one")
    args = parser.parse_args()
    if missing():
        sys.exit(f"cannot run: {missing()}")
    with tempfile.TemporaryDirectory(prefix="personae-shots-") as tmp, \
            (nullcontext(args.url) if args.url else personae_serve(args.config, Path(tmp) / "home")) as url:
        driver = start_browser(width=900, height=700)
        try:
            open_page(driver, url, None)
            wait_for(driver, lambda d: d.execute_script(
                "return [...document.querySelectorAll('li.persona img')].every(i => i.complete && i.naturalWidth)"))
            save(driver, "web_gallery.png")
            open_chat(driver, "mara")
            wait_for(driver, lambda d: d.find_elements("css selector", "#messages .message"))
            reply_to(driver, "Where are we bound tonight, Captain?")
            save(driver, "web_chat.png")
            driver.find_element("id", "nav-gallery").click()
            for slug in ("mara", "hale"):
                click(driver, f'li.persona[data-slug="{slug}"] input')
            driver.find_element("id", "start-scene").click()
            reply_to(driver, "Professor, what do you make of the captain's map?")
            save(driver, "web_scene.png")
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
