"""Streaming speech: sentences are voiced while the reply is still being written, in order."""
import io
import threading

import numpy as np
import pytest

from agent.speech.playback import WavFolderSink
from agent.speech.stream import SpeechStream


class FakeVoice:
    """Records what it is asked to say; 0.1 s of audio per character."""
    sample_rate = 100

    def __init__(self):
        self.said = []
        self.started = threading.Event()

    def synthesize(self, text):
        self.said.append(text)
        self.started.set()
        return np.zeros(len(text) * 10, np.float32)


def test_sentences_are_voiced_in_order_before_the_reply_ends():
    voice, got = FakeVoice(), []
    stream = SpeechStream(voice, lambda i, samples, sr: got.append(i), char="Mara", user="Ann")
    for piece in "Aye, the wind is fair tonight, Ann. *spits* We sail at dawn, ".split(" "):
        stream.feed(piece + " ")
    assert voice.started.wait(60), "the first sentence should be voiced while the reply is still streaming"
    stream.feed("and you'll haul lines")  # no final punctuation
    stats = stream.close(timeout=60)
    assert voice.said == ["Aye, the wind is fair tonight, Ann.", "We sail at dawn, and you'll haul lines"]
    assert got == [0, 1] and stats.sentences == 2 and stats.first_audio_at is not None


def test_a_failing_sentence_does_not_silence_the_rest():
    class Flaky(FakeVoice):
        def synthesize(self, text):
            if "bad" in text:
                raise RuntimeError("boom")
            return super().synthesize(text)

    voice = Flaky()
    stream = SpeechStream(voice, lambda *a: None, char="M", user="U", min_chars=1)
    stream.feed("This one is bad. This one is fine.")
    stats = stream.close(timeout=60)
    assert voice.said == ["This one is fine."] and stats.errors == ["RuntimeError: boom"]


def test_wav_folder_sink_numbers_files(tmp_path):
    sink = WavFolderSink(tmp_path / "s", 3)
    sink(0, np.zeros(100, np.float32), 16000)
    sink(1, np.zeros(100, np.float32), 16000)
    assert [p.name for p in sink.paths] == ["reply-003-00.wav", "reply-003-01.wav"]


def _piper_available():
    try:
        from agent.speech.piper_tts import voice_files
        from agent.config import TTSConfig
        voice_files(TTSConfig().voice)
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _piper_available(), reason="the Piper voice package is not installed")
def test_terminal_voice_writes_the_reply_as_wav_files(tiny_agent):
    from agent.frontends.terminal import TerminalChat

    chat = TerminalChat(tiny_agent, out=io.StringIO(), voice=True)
    chat.speaker = None
    chat.open("mara", resume=False, user_name="Ann")
    chat.speaker = None  # never play on the test machine's sound card
    chat.turn("hello")
    folder = tiny_agent.home.session_dir(chat.session.id)
    wavs = sorted(folder.glob("reply-001-*.wav"))
    reply = chat.session.messages[-1].content
    from agent.speech.text import speakable
    if speakable(reply, char="Captain Mara Vell", user="Ann"):
        assert wavs, "a reply with speakable text should produce audio"
        from agent.speech.audio import load_audio
        assert len(load_audio(wavs[0], max_seconds=60)) > 0
