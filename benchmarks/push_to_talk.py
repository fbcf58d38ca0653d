"""Push-to-talk to first audio in the web chat, as a person gets it: `personae serve` on the embedded default,
headless Chromium (Debian's, through Selenium) whose fake microphone plays a spoken question (a WAV), the page's
talk button held for the question's length and released; the page transcribes (POST /v1/audio/transcriptions),
streams the persona's answer (/v1/chat/completions) and speaks it sentence by sentence (/v1/audio/speech). The
time from release to the first audio playing is what the page measures and shows in its debug panel.

    python3 benchmarks/push_to_talk.py                      # 5 presses, persona mara, configs/default.yaml
    python3 benchmarks/push_to_talk.py -s lm.threads=1     # a busy shared machine: one llama.cpp thread
    python3 benchmarks/push_to_talk.py --url http://127.0.0.1:8000 --presses 3 --persona hale

The server runs on a throwaway home (temp folder); the question WAV is made by the same server's TTS.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import wave
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the browser helpers the tests use
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from browser import (missing, open_chat, open_page, personae_serve, push_to_talk, start_browser,  # noqa: E402
                     wait_for, warm_up)

QUESTION = "Captain, where are we sailing tonight?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("-s", "--set", action="append", default=[], help="config override for the server, key=value")
    parser.add_argument("--url", help="a personae serve already running (no key), instead of starting one")
    parser.add_argument("--persona", default="mara")
    parser.add_argument("--presses", type=int, default=5)
    parser.add_argument("--question", default=QUESTION)
    args = parser.parse_args()
    if missing():
        sys.exit(f"cannot run: {missing()}")
    overrides = tuple(x for kv in args.set for x in ("-s", kv))
    with tempfile.TemporaryDirectory(prefix="personae-ptt-") as tmp, \
            (nullcontext(args.url) if args.url else personae_serve(args.config, Path(tmp) / "home", args=overrides)) as url:
        wav = Path(tmp) / "question.wav"
        spoken = httpx.post(url + "/v1/audio/speech", timeout=300,
                            json={"model": "pixel", "input": args.question, "response_format": "wav"})
        spoken.raise_for_status()
        wav.write_bytes(spoken.content)
        with wave.open(str(wav)) as w:
            seconds = w.getnframes() / w.getframerate()
        warm_up(url, spoken.content, args.persona)
        print(f"load average before: {os.getloadavg()}", file=sys.stderr)
        browser = start_browser(fake_audio=wav)
        results = []
        try:
            open_page(browser, url, None)
            open_chat(browser, args.persona)  # one call: every press continues the same conversation
            wait_for(browser, lambda d: d.find_elements("css selector", "#messages .message"))
            for press in range(args.presses):
                took = push_to_talk(browser, seconds + 0.1)
                metrics = browser.execute_script(  # in one call: the debug list is redrawn as values arrive
                    "return Object.fromEntries([...document.querySelectorAll('#debug-list dd')]"
                    ".map(e => [e.dataset.metric, e.textContent]))")
                heard = browser.execute_script(
                    "return [...document.querySelectorAll('#messages .message.user .text')].pop().textContent")
                results.append(took)
                print(f"press {press + 1}: release to first audio {took:.0f} ms; transcribed in "
                      f"{metrics.get('push-to-talk: transcribed')}, first token at "
                      f"{metrics.get('push-to-talk: release to first token')}; heard {heard!r}", file=sys.stderr)
                wait_for(browser, lambda d: d.find_elements("css selector", "#messages .message.char:last-child audio[data-bytes]"),
                         300)  # the whole answer spoken before the next press
        finally:
            browser.quit()
    print(f"load average after: {os.getloadavg()}", file=sys.stderr)
    print(f"push-to-talk to first audio ({len(results)} presses, question {seconds:.1f} s, persona {args.persona}): "
          f"median {statistics.median(results):.0f} ms, min {min(results):.0f}, max {max(results):.0f}")


if __name__ == "__main__":
    main()
