"""Speaks a reply while it is being written: text pieces -> sentences -> audio, one sentence at a time.

The LM thread feeds pieces; a worker thread synthesises each finished sentence and hands
`(index, samples, sample_rate)` to a sink (the terminal plays it or writes a WAV).
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .text import SentenceSplitter, speakable

AudioSink = Callable[[int, np.ndarray, int], None]  # (sentence index, samples (n,) float32, sample rate)
_DONE = object()


@dataclass
class SpeechStats:
    sentences: int = 0  # sentences synthesised
    audio_seconds: float = 0.0  # total speech produced
    synth_seconds: float = 0.0  # compute time spent synthesising
    first_audio_at: Optional[float] = None  # perf_counter() when the first sentence's audio was ready
    errors: list[str] = field(default_factory=list)


class SpeechStream:
    """feed() pieces as they arrive, then close(); audio reaches `sink` in sentence order."""

    def __init__(self, synthesizer, sink: AudioSink, *, char: str, user: str, read_actions: bool = False,
                 min_chars: int = 20):
        self.synthesizer = synthesizer
        self.sink = sink
        self.clean = lambda text: speakable(text, char=char, user=user, read_actions=read_actions)
        self.splitter = SentenceSplitter(min_chars=min_chars)
        self.stats = SpeechStats()
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="speech", daemon=True)
        self._worker.start()

    def feed(self, piece: str) -> None:
        for sentence in self.splitter.feed(piece):
            self._queue.put(sentence)

    def close(self, timeout: Optional[float] = None) -> SpeechStats:
        """Flushes the last sentence (even without punctuation) and waits until all audio is out."""
        for sentence in self.splitter.flush():
            self._queue.put(sentence)
        self._queue.put(_DONE)
        self._worker.join(timeout)
        return self.stats

    def _run(self) -> None:
        index = 0
        while True:
            sentence = self._queue.get()
            if sentence is _DONE:
                return
            text = self.clean(sentence)
            if not text:
                continue
            start = time.perf_counter()
            try:
                samples = self.synthesizer.synthesize(text)
            except Exception as e:  # one bad sentence must not silence the rest of the reply
                self.stats.errors.append(f"{type(e).__name__}: {e}")
                continue
            done = time.perf_counter()
            self.stats.synth_seconds += done - start
            if self.stats.first_audio_at is None:
                self.stats.first_audio_at = done
            self.stats.sentences += 1
            self.stats.audio_seconds += len(samples) / self.synthesizer.sample_rate
            self.sink(index, samples, self.synthesizer.sample_rate)
            index += 1
