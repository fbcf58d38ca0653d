"""The web chat (agent/web/static, served at / by `personae serve`) in a real browser: headless Chromium from
Debian driven by Selenium, against a `personae serve` subprocess on the tiny config with an API key.

One server and one browser serve the module's tests in order: gallery, streamed chat, swipes, resume after
reload, audio, a scene, card import, a hostile card, persona creation. The slow test measures push-to-talk to
first audio on the embedded default with a fake microphone playing a WAV.
"""
from __future__ import annotations

import json
import re
import time
import wave
from pathlib import Path

import httpx
import pytest
import yaml

from browser import (REPO, click, missing, open_chat, open_page, personae_serve, push_to_talk, start_browser,
                     wait_for, warm_up)

pytestmark = pytest.mark.skipif(missing() is not None, reason=f"browser tests: {missing()}")

TINY = str(REPO / "configs" / "tiny.yaml")
KEY = "sk-web-test"
ATTACK = "window.__pwned = 1"
HOSTILE = {
    "spec": "chara_card_v2", "spec_version": "2.0",
    "data": {
        "name": f'<img src=x onerror="{ATTACK}">Evil',
        "description": f'<script>{ATTACK}</script><style>body{{background:url(http://evil.example/css)}}</style>',
        "personality": '<a href="javascript:window.__pwned=1">click me</a>',
        "scenario": "</textarea><svg onload=\"window.__pwned=1\"></svg>",
        "first_mes": '*<img src="http://evil.example/a.png" onerror="window.__pwned=1">* "<script>alert(1)</script>" '
                     '<iframe src="javascript:alert(1)"></iframe> {{char}}',
        "mes_example": "", "creator_notes": "", "system_prompt": "", "post_history_instructions": "",
        "alternate_greetings": ['<img src=x onerror=alert(2)> "hi" *waves*'],
        "tags": ["<b>bold</b>"], "creator": "", "character_version": "",
        "character_book": {"entries": [{"keys": ["<img src=x onerror=alert(3)>"], "content":
                                        '<script>window.__pwned=1</script><link rel=stylesheet href=//evil.example/x.css>',
                                        "enabled": True, "insertion_order": 0}]},
        "extensions": {},
    },
}
try:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
except ImportError:  # the tests are skipped (pytestmark)
    By = Keys = None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("web") / "home"
    for slug, name in (("tess", "Tess"), ("finn", "Finn")):  # cards short enough for a scene on the tiny model
        (home / "personas" / slug).mkdir(parents=True)
        (home / "personas" / slug / "persona.yaml").write_text(yaml.safe_dump(
            {"name": name, "description": f"{name} is a terse sailor.", "first_mes": f"*{name} nods.* Evening."}))
    # the guard releases a reply a sentence at a time, or every chat.guard_tokens tokens when none ends: the tiny
    # model writes no sentence ends, so a small hold keeps its 24-token replies arriving in several pieces
    with personae_serve(TINY, home, env={"PERSONAE_API_KEY": KEY, "PERSONAE_MAX_GENERATE_SECONDS": "3"},
                        args=("-s", "chat.guard_tokens=4")) as url:
        yield url


@pytest.fixture(scope="module")
def driver(server):
    browser = start_browser()
    try:
        open_page(browser, server, KEY)
        yield browser
    finally:
        browser.quit()


def texts(driver) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#messages .message .text")]


def settled(driver) -> bool:
    """No reply streaming and the send button usable again."""
    return not driver.find_elements(By.CSS_SELECTOR, "#messages .streaming") and \
        driver.find_element(By.ID, "send-button").is_enabled()


def send(driver, text: str, replies_before: int) -> None:
    box = driver.find_element(By.ID, "message-input")
    box.send_keys(text, Keys.ENTER)
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#messages .message.char")) > replies_before
             and settled(d), 90, "no reply")


def test_the_page_needs_no_key_and_carries_a_strict_csp(server):
    page = httpx.get(server + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    for rule in ("default-src 'self'", "script-src 'self'", "object-src 'none'", "base-uri 'none'",
                 "frame-ancestors 'none'", "connect-src 'self'"):
        assert rule in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp
    assert "<script>" not in page.text and " style=" not in page.text and not re.search(r"\son\w+=", page.text)
    for name in ("app.js", "api.js", "format.js", "voice.js", "style.css"):
        static = httpx.get(f"{server}/web/{name}")
        assert static.status_code == 200 and static.headers["content-security-policy"] == csp, name
        assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write|\beval\(|new Function",
                             static.text), name
        assert "http://" not in static.text
        assert "https://" not in static.text and "@import" not in static.text, name
    # the data behind it still needs the key, portraits and the new session routes included
    for path in ("/v1/personas", "/v1/personas/mara/portrait", "/v1/sessions", "/v1/sessions/x/messages?model=mara"):
        assert httpx.get(server + path).status_code == 401, path
    auth = {"Authorization": f"Bearer {KEY}"}
    portrait = httpx.get(server + "/v1/personas/mara/portrait", headers=auth)
    assert portrait.status_code == 200 and portrait.content[:8] == b"\x89PNG\r\n\x1a\n"
    greetings = httpx.get(server + "/v1/personas/mara/greetings", headers=auth).json()["data"]
    assert greetings[0].startswith("*Captain Mara Vell") and "{{" not in greetings[0]


def test_gallery_shows_every_persona_with_its_portrait(driver):
    slugs = [e.get_attribute("data-slug") for e in driver.find_elements(By.CSS_SELECTOR, "li.persona")]
    assert {"mara", "hale", "pixel"} <= set(slugs)
    wait_for(driver, lambda d: d.execute_script(
        "return [...document.querySelectorAll('li.persona img')].every(i => i.complete && i.naturalWidth > 0)"), 30,
        "portraits did not load")
    assert driver.find_element(By.CSS_SELECTOR, 'li.persona[data-slug="mara"] img').get_attribute("src").startswith("blob:")
    assert driver.find_element(By.CSS_SELECTOR, 'li.persona[data-slug="tess"] img').get_attribute("src").endswith("/web/icon.svg")
    key_in_urls = driver.execute_script(
        f"return performance.getEntries().some(e => e.name.includes('{KEY}')) || location.href.includes('{KEY}')")
    assert not key_in_urls
    assert driver.execute_script("return sessionStorage.getItem('personae.key')") == KEY


def test_a_reply_streams_in_pieces_beside_the_portrait(driver):
    open_chat(driver, "mara")
    wait_for(driver, lambda d: texts(d) and texts(d)[0].startswith("Captain Mara Vell"))  # the greeting, action in italics
    assert driver.find_element(By.CSS_SELECTOR, "#messages .message.char .text .action").text.startswith("Captain")
    # record every length the reply's text goes through as it is written
    driver.execute_script("""
        window.seenLengths = [];
        new MutationObserver(() => {
            const t = document.querySelectorAll('#messages .message.char .text');
            if (t.length > 1) window.seenLengths.push(t[t.length - 1].textContent.length);
        }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});""")
    box = driver.find_element(By.ID, "message-input")
    box.send_keys("first line", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "second line")
    assert box.get_attribute("value") == "first line\nsecond line"  # Shift+Enter: a new line, not sent
    box.clear()
    send(driver, "Ahoy, captain! Where are we bound?", 1)
    assert texts(driver)[1] == "Ahoy, captain! Where are we bound?"
    reply = driver.find_elements(By.CSS_SELECTOR, "#messages .message.char")[-1]
    assert reply.find_element(By.CSS_SELECTOR, ".text").text.strip()
    assert int(reply.find_element(By.CSS_SELECTOR, ".text").get_attribute("data-pieces")) >= 2
    assert len(set(driver.execute_script("return window.seenLengths"))) >= 2, "the reply arrived in one piece"
    assert reply.find_element(By.CSS_SELECTOR, "img.portrait").get_attribute("alt") == "Portrait of Captain Mara Vell"


def test_swipes_keep_alternatives_to_pick_from(driver, server):
    first = texts(driver)[-1]
    driver.find_element(By.CSS_SELECTOR, 'button[aria-label="Regenerate the reply (swipe)"]').click()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".swipe-count") and settled(d), 90)
    assert driver.find_element(By.CSS_SELECTOR, ".swipe-count").text == "2/2"
    driver.find_element(By.CSS_SELECTOR, 'button[aria-label="Previous alternative"]').click()
    assert driver.find_element(By.CSS_SELECTOR, ".swipe-count").text == "1/2"
    assert texts(driver)[-1] == first
    assert len(texts(driver)) == 3
    wait_for(driver, lambda d: stored(d, server)[-1].get("swipe") == 0, 30, "the choice did not reach the server")
    assert stored(driver, server)[-1]["swipes"][0] == first and len(stored(driver, server)[-1]["swipes"]) == 2


def stored(driver, server) -> list[dict]:
    """The open chat's messages as the server stores them."""
    current = json.loads(driver.execute_script("return localStorage.getItem('personae.current')"))
    return httpx.get(f"{server}/v1/sessions/{current['sid']}/messages", params={"model": current["model"]},
                     headers={"Authorization": f"Bearer {KEY}"}).json()["data"]


def test_an_edit_reaches_the_server_at_once_and_continue_writes_on(driver, server):
    click(driver, 'button[aria-label="Edit the last message"]')
    area = driver.find_element(By.CSS_SELECTOR, 'textarea[aria-label="Edit the message"]')
    area.clear()
    area.send_keys("Aye, we sail for")  # cut mid-sentence: the tiny model's own replies end with its end token
    click(driver, '#messages button[aria-label="Save"]')
    wait_for(driver, lambda d: stored(d, server)[-1]["content"] == "Aye, we sail for", 30, "the edit was not stored")
    before = texts(driver)
    click(driver, 'button[aria-label="Continue this reply"]')
    wait_for(driver, lambda d: (texts(d)[-1] != before[-1] or d.find_element(By.ID, "errors").text) and settled(d),
             90, "the continuation never ended")
    after = texts(driver)
    assert len(after) == len(before) and after[:-1] == before[:-1]  # the same message, longer
    assert after[-1].startswith(before[-1]) and len(after[-1]) > len(before[-1]), driver.find_element(By.ID, "errors").text
    assert not driver.find_element(By.ID, "errors").text
    assert len(stored(driver, server)) == len(after)


def test_the_chat_resumes_after_a_reload(driver, server):
    before = texts(driver)
    driver.refresh()
    wait_for(driver, lambda d: len(texts(d)) == len(before), 60, "the chat did not come back")
    assert texts(driver) == before
    assert driver.find_element(By.CSS_SELECTOR, ".swipe-count").text == "1/2"  # the alternatives came back too
    driver.find_element(By.CSS_SELECTOR, 'button[aria-label="Next alternative"]').click()
    assert driver.find_element(By.CSS_SELECTOR, ".swipe-count").text == "2/2"
    driver.find_element(By.CSS_SELECTOR, 'button[aria-label="Previous alternative"]').click()
    assert texts(driver) == before
    driver.find_element(By.ID, "nav-sessions").click()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#session-list button"))
    assert "Captain Mara Vell" in driver.find_element(By.ID, "session-list").text
    driver.find_element(By.CSS_SELECTOR, "#session-list button").click()
    wait_for(driver, lambda d: texts(d) == before)


def test_a_reply_is_spoken_into_an_audio_element(driver):
    click(driver, 'button[aria-label="Speak this reply"]')
    audio = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#messages audio[data-bytes]"), 60,
                     "no audio: " + driver.find_element(By.ID, "errors").text)[0]
    assert int(audio.get_attribute("data-bytes")) > 1000
    assert audio.get_attribute("src").startswith("blob:")
    duration = wait_for(driver, lambda d: d.execute_script(
        "const a = document.querySelector('#messages audio[data-bytes]'); return a.readyState >= 1 && a.duration"), 30)
    assert duration > 0.2


def test_a_two_persona_scene_names_each_speaker(driver):
    driver.find_element(By.ID, "nav-gallery").click()
    for slug in ("tess", "finn"):
        click(driver, f'li.persona[data-slug="{slug}"] input')
    wait_for(driver, lambda d: d.find_element(By.ID, "start-scene").is_enabled())
    driver.find_element(By.ID, "start-scene").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "chat").is_displayed())
    assert driver.find_element(By.ID, "chat-title").text == "Tess, Finn"
    send(driver, "Good evening to you both.", 0)
    assert texts(driver)[0] == "Tess nods. Evening."  # the scene's opening line, from the server
    send(driver, "And what news from port?", 2)
    speakers = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#messages .message.char .speaker")]
    assert len(speakers) == 3 and set(speakers) <= {"Tess", "Finn"}
    for line in driver.find_elements(By.CSS_SELECTOR, "#messages .message.char"):
        name = line.find_element(By.CSS_SELECTOR, ".speaker").text
        assert line.find_element(By.CSS_SELECTOR, "img.portrait").get_attribute("alt") == f"Portrait of {name}"


def test_a_card_imports_by_file_input(driver, tmp_path):
    card = dict(HOSTILE["data"], name="Wren Tallow", description="{{char}} keeps bees.", first_mes="Mind the hives.",
                personality="", scenario="", alternate_greetings=[], tags=[], character_book=None)
    path = tmp_path / "wren.json"
    path.write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": card}))
    driver.find_element(By.ID, "import-file").send_keys(str(path))
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, 'li.persona[data-slug="wren-tallow"]'), 30,
             "not imported: " + driver.find_element(By.ID, "errors").text)
    dropped = dict(card, name="Moss Harrow", first_mes="Careful where you step.")  # by drag-and-drop this time
    driver.execute_script("""
        const file = new File([arguments[0]], 'moss.json', {type: 'application/json'});
        const data = new DataTransfer();
        data.items.add(file);
        for (const type of ['dragenter', 'dragover', 'drop'])
            document.body.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));""",
                          json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": dropped}))
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, 'li.persona[data-slug="moss-harrow"]'), 30,
             "not imported by drop: " + driver.find_element(By.ID, "errors").text)
    assert not driver.find_element(By.ID, "drop-zone").is_displayed()
    broken = tmp_path / "broken.json"
    broken.write_text("{not a card")
    driver.find_element(By.ID, "import-file").send_keys(str(broken))
    wait_for(driver, lambda d: "broken.json was refused" in d.find_element(By.ID, "errors").text, 30)


def test_a_hostile_card_renders_as_inert_text(driver, tmp_path, server):
    path = tmp_path / '<img src=x onerror="window.__pwned=1">.json'
    path.write_text(json.dumps(HOSTILE))
    driver.find_element(By.ID, "import-file").send_keys(str(path))
    slug = wait_for(driver, lambda d: d.execute_script(
        "return [...document.querySelectorAll('li.persona')].filter(e => e.textContent.includes('Evil'))"
        ".map(e => e.dataset.slug)[0]"), 30, driver.find_element(By.ID, "errors").text)
    click(driver, f'li.persona[data-slug="{slug}"] button.open')
    wait_for(driver, lambda d: d.find_element(By.ID, "chat").is_displayed() and texts(d))
    assert driver.find_element(By.ID, "chat-title").text == HOSTILE["data"]["name"]
    assert "<script>alert(1)</script>" in texts(driver)[0]
    driver.find_element(By.ID, "greeting-next").click()  # the alternate greeting
    assert texts(driver)[0].startswith("<img src=x onerror=alert(2)>")
    driver.find_element(By.ID, "info-button").click()  # the lorebook
    wait_for(driver, lambda d: "<script>window.__pwned=1</script>" in d.find_element(By.ID, "lore-list").text, 30)
    send(driver, '<img src=x onerror="window.__pwned=1"> hello', 1)
    time.sleep(0.5)
    assert driver.execute_script("return window.__pwned") is None
    assert driver.execute_script("return window.personaeCsp") == []
    injected = driver.execute_script("""
        const bad = [];
        for (const e of document.querySelectorAll('*')) {
            for (const a of e.attributes) if (a.name.startsWith('on') || /javascript:/i.test(a.value)) bad.push(e.tagName + ' ' + a.name);
            if (['SCRIPT', 'IFRAME', 'SVG', 'LINK', 'STYLE'].includes(e.tagName.toUpperCase())) bad.push(e.tagName);
        }
        return bad.filter(b => !/^(SCRIPT|LINK)$/.test(b) );""")
    assert injected == []
    scripts = driver.execute_script("return [...document.scripts].map(s => s.src)")
    assert scripts == [server + "/web/app.js"]
    foreign = driver.execute_script(
        "return performance.getEntries().map(e => e.name).filter(n => n.startsWith('http') && !n.startsWith(location.origin))")
    assert foreign == []
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018


def test_a_persona_is_created_from_an_idea_with_progress(driver):
    driver.find_element(By.ID, "nav-create").click()
    driver.find_element(By.ID, "create-idea").send_keys("a retired lighthouse keeper who talks to the fog")
    driver.find_element(By.ID, "create-name").send_keys("Ada Fogg")
    driver.find_element(By.ID, "create-submit").click()
    wait_for(driver, lambda d: "Writing the card" in d.find_element(By.ID, "create-status").text, 10)
    wait_for(driver, lambda d: d.find_element(By.ID, "chat").is_displayed(), 150,
             "no persona: " + driver.find_element(By.ID, "errors").text)
    assert driver.find_element(By.ID, "chat-title").text == "Ada Fogg"
    assert driver.find_elements(By.CSS_SELECTOR, 'li.persona[data-slug="ada-fogg"]')


def test_escape_stops_a_reply(driver, server):
    """While the server writes a persona, a message is sent and Esc stops its reply; no empty reply is left."""
    import threading

    busy = threading.Thread(target=httpx.post, args=(server + "/v1/personas/generate",), kwargs={
        "json": {"idea": "a tired ferryman", "name": "Busy Ferryman"}, "timeout": 120,
        "headers": {"Authorization": f"Bearer {KEY}"}})
    busy.start()
    try:
        open_chat(driver, "mara")
        wait_for(driver, lambda d: texts(d))
        time.sleep(0.5)
        driver.find_element(By.ID, "message-input").send_keys("Are you there?", Keys.ENTER)
        wait_for(driver, lambda d: d.find_element(By.ID, "stop-button").is_displayed(), 10)
        driver.find_element(By.ID, "message-input").send_keys(Keys.ESCAPE)
        wait_for(driver, lambda d: settled(d) and not d.find_element(By.ID, "stop-button").is_displayed(), 10)
        assert not driver.find_element(By.ID, "errors").text
        stopped_early = texts(driver)[-1] == "Are you there?"  # else a part of the reply came before the Esc
        assert stopped_early or (len(texts(driver)) == 3 and texts(driver)[-1].strip())  # never an empty reply
    finally:
        busy.join(120)
    if stopped_early:
        click(driver, 'button[aria-label="Write a reply to this message"]')  # answered after all
        wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".message.char")) == 2 and settled(d), 60)


def test_the_page_fits_a_phone(driver):
    driver.set_window_size(390, 844)
    try:
        for view in ("nav-gallery", "nav-sessions"):
            driver.find_element(By.ID, view).click()
            time.sleep(0.3)
            assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"), view
        open_chat(driver, "mara")
        wait_for(driver, lambda d: texts(d))
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        assert driver.find_element(By.ID, "talk-button").is_displayed()
    finally:
        driver.set_window_size(1100, 900)


def test_server_errors_read_as_sentences(driver, server):
    driver.execute_script("sessionStorage.setItem('personae.key', 'wrong')")
    driver.find_element(By.ID, "nav-sessions").click()
    wait_for(driver, lambda d: "API key" in d.find_element(By.ID, "errors").text, 10)
    assert driver.find_element(By.ID, "key-form").is_displayed()
    driver.find_element(By.ID, "key-input").send_keys(KEY, Keys.ENTER)
    wait_for(driver, lambda d: not d.find_element(By.ID, "errors").text, 30)


def test_busy_and_unreachable_servers_read_as_sentences(tmp_path):
    """One job place and one queue place, both taken by persona creations: the page's message gets 429, shown
    with its Retry-After wait; then the server stops, and the next message says the server is unreachable."""
    import threading

    def occupy(url: str, name: str) -> threading.Thread:
        busy = threading.Thread(target=httpx.post, args=(url + "/v1/personas/generate",), kwargs={
            "json": {"idea": "a tired ferryman", "name": name}, "timeout": 120})
        busy.start()
        return busy

    browser = start_browser()
    try:
        with personae_serve(TINY, tmp_path / "home", env={"PERSONAE_MAX_STREAMS": "1", "PERSONAE_QUEUE_SIZE": "1",
                                                          "PERSONAE_MAX_GENERATE_SECONDS": "15"}) as url:
            open_page(browser, url, None)
            open_chat(browser, "mara")
            wait_for(browser, lambda d: texts(d))
            jobs = [occupy(url, "Busy One"), occupy(url, "Busy Two")]
            wait_for(browser, lambda _: httpx.get(url + "/health").json().get("queued"), 30, "the queue never filled")
            browser.find_element(By.ID, "message-input").send_keys("Anyone there?", Keys.ENTER)
            error = wait_for(browser, lambda d: d.find_element(By.ID, "errors").text, 30, "no error shown")
            assert re.search(r"The server is busy: try again in \d+ s\.", error), error
            assert texts(browser)[-1] == "Anyone there?"  # no empty reply left behind
            for job in jobs:
                job.join(120)
        browser.find_element(By.ID, "message-input").send_keys("Still there?", Keys.ENTER)  # the server has stopped
        error = wait_for(browser, lambda d: "unreachable" in d.find_element(By.ID, "errors").text and
                         d.find_element(By.ID, "errors").text, 30, "no error shown")
        assert error.startswith("The server is unreachable (") and "personae serve running?" in error
        assert browser.find_element(By.ID, "errors").get_attribute("role") == "alert"
        assert settled(browser)
    finally:
        browser.quit()


def _question_wav(url: str, path: Path) -> float:
    """A spoken question (pixel's voice, from the server's own TTS) as a WAV for the fake microphone; its seconds."""
    answer = httpx.post(url + "/v1/audio/speech", timeout=120, json={
        "model": "pixel", "input": "Captain, where are we sailing tonight?", "response_format": "wav"})
    answer.raise_for_status()
    path.write_bytes(answer.content)
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


@pytest.mark.slow
def test_push_to_talk_to_first_audio_on_the_embedded_default(tmp_path):
    """Hold the talk button while the fake microphone plays a question; the page transcribes it (Whisper),
    streams Mara's answer and speaks it; the release-to-first-audio time it measures is printed."""
    # one llama.cpp thread: on a shared 2-core machine more threads wait for each other (README, Configuration)
    with personae_serve(str(REPO / "configs" / "default.yaml"), tmp_path / "home", args=("-s", "lm.threads=1")) as url:
        seconds = _question_wav(url, tmp_path / "question.wav")
        warm_up(url, (tmp_path / "question.wav").read_bytes())
        browser = start_browser(fake_audio=tmp_path / "question.wav")
        try:
            open_page(browser, url, None)
            open_chat(browser, "mara")
            wait_for(browser, lambda d: texts(d))
            took = push_to_talk(browser, seconds + 0.1)
            heard = texts(browser)[-2]
            print(f"\npush-to-talk to first audio: {took:.0f} ms (heard {heard!r})")
            assert "sail" in heard.lower() or "captain" in heard.lower(), heard
            browser.find_element(By.ID, "debug-button").click()
            shown = browser.find_element(By.CSS_SELECTOR, '[data-metric="push-to-talk: release to first audio"]').text
            assert shown.endswith(" ms")
            assert took < 120000  # the figure is printed; a busy shared CI machine is far from a quiet one
        finally:
            browser.quit()
