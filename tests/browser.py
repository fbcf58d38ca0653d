"""Driving the web chat in a real browser: `personae serve` in a subprocess, headless Chromium from Debian through
Selenium (pointed at /usr/bin/chromedriver, so Selenium Manager never downloads anything), and the page's steps.

Used by tests/test_web.py and benchmarks/push_to_talk.py.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

REPO = Path(__file__).resolve().parents[1]
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_path() -> Optional[str]:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing() -> Optional[str]:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium; it is in the dev extra)"
    if chromium_path() is None:
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    if not Path(CHROMEDRIVER).is_file():
        return f"{CHROMEDRIVER} is missing (apt-get install chromium-driver)"
    return None


@contextmanager
def personae_serve(config: str, home: Path, *, env: Optional[dict] = None, args: tuple = (),
                   timeout: float = 240) -> Iterator[str]:
    """`personae serve -c config --port 0 [args]` from this checkout; yields its base URL, stops it (Ctrl-C) at the
    end."""
    log = home.parent / f"{home.name}-serve.log"
    home.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "agent", "serve", "-c", config, "--port", "0",
                                   "--home", str(home), *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    try:
        deadline, url = time.monotonic() + timeout, None
        while url is None:
            found = re.search(r"running on (http://127\.0\.0\.1:\d+)", log.read_text())
            url = found and found.group(1)
            if url is None and (server.poll() is not None or time.monotonic() > deadline):
                raise RuntimeError(f"personae serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        server.send_signal(2)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def start_browser(*, fake_audio: Optional[Path] = None, width: int = 1100, height: int = 900):
    """Headless Chromium (Debian's) with autoplay allowed and a fake microphone that plays `fake_audio` (a WAV)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(arg)
    if fake_audio is not None:
        options.add_argument(f"--use-file-for-fake-audio-capture={fake_audio}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def wait_for(driver, condition, timeout: float = 60, message: str = ""):
    """Polls `condition(driver)` until it is truthy; returns its value."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # a re-render may replace what the condition was reading: try again
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=ignored).until(condition, message)


def open_page(driver, url: str, key: Optional[str]) -> None:
    """Loads the page and, when the server has a key, enters it the way a person does (the key form)."""
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    if key:
        form = driver.find_element(By.ID, "key-form")
        wait_for(driver, lambda d: form.is_displayed() or d.find_elements(By.CSS_SELECTOR, "li.persona"), 30)
        if form.is_displayed():
            driver.find_element(By.ID, "key-input").send_keys(key)
            driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "li.persona"), 60, "the gallery never showed")


def click(driver, css: str, timeout: float = 30) -> None:
    """Clicks the element `css` names, again if a re-render replaced it first (the gallery reloads its list)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def clicked(d) -> bool:
        try:
            d.find_element("css selector", css).click()
            return True
        except (NoSuchElementException, StaleElementReferenceException):
            return False

    wait_for(driver, clicked, timeout, f"could not click {css}")


def open_chat(driver, slug: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "nav-gallery").click()
    click(driver, f'li.persona[data-slug="{slug}"] button.open')
    wait_for(driver, lambda d: d.find_element(By.ID, "chat").is_displayed())


def warm_up(url: str, wav: bytes, persona: str = "mara") -> None:
    """One transcription, one spoken line and one reply in a session of its own, so loading Whisper (converted on
    a new home's first use), the voice and the LM, and prefilling the persona's card (its prefix cache seeds every
    new session, as after any earlier chat with the persona), are not counted as push-to-talk time."""
    import httpx

    httpx.post(url + "/v1/audio/transcriptions", files={"file": ("warm.wav", wav)}, timeout=600).raise_for_status()
    httpx.post(url + "/v1/audio/speech", json={"model": persona, "input": "Aye.", "response_format": "wav"},
               timeout=600).raise_for_status()
    httpx.post(url + "/v1/chat/completions", headers={"X-Session-Id": "warm-up"}, timeout=600, json={
        "model": persona, "max_tokens": 1, "messages": [{"role": "user", "content": "Ahoy."}]}).raise_for_status()


def push_to_talk(driver, hold_s: float, timeout: float = 300) -> float:
    """Holds the talk button for `hold_s` seconds, releases it, and waits for the answer's first audio;
    returns the release-to-first-audio time in ms that the page measured (and shows in its debug panel)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver.execute_script("window.personaeLastTalk = undefined;")
    talk = driver.find_element(By.ID, "talk-button")
    ActionChains(driver).click_and_hold(talk).perform()
    time.sleep(hold_s)
    ActionChains(driver).release(talk).perform()
    return wait_for(driver, lambda d: d.execute_script("return window.personaeLastTalk"), timeout,
                    "no audio played after push-to-talk: " + driver.find_element(By.ID, "errors").text)
