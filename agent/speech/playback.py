"""Where a spoken reply goes in the terminal: the sound card when one exists, else numbered WAV files.

`open_audio_sink(folder)` hands the speech stream a sink; playback needs the optional `sounddevice`
package (and PortAudio); without an output device, files are written and their paths reported.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .audio import write_wav


class WavFolderSink:
    """Writes sentence i of reply n as `reply-NNN-ii.wav` in `folder`; `paths` lists what was written."""

    def __init__(self, folder: Path, reply_index: int):
        self.folder = Path(folder)
        self.reply_index = reply_index
        self.paths: list[Path] = []

    def __call__(self, index: int, samples: np.ndarray, sample_rate: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.paths.append(write_wav(self.folder / f"reply-{self.reply_index:03d}-{index:02d}.wav", samples, sample_rate))


class SpeakerSink:
    """Plays sentences one after another on the default output device, in a thread of its own."""

    def __init__(self, sounddevice):
        self.sd = sounddevice
        self.paths: list[Path] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, name="playback", daemon=True).start()

    def __call__(self, index: int, samples: np.ndarray, sample_rate: int) -> None:
        self._queue.put((samples, sample_rate))

    def _run(self) -> None:
        while True:
            samples, rate = self._queue.get()
            self.sd.play(samples, rate)
            self.sd.wait()


def output_device() -> Optional[object]:
    """The sounddevice module when it imports and sees an output device, else None."""
    try:
        import sounddevice
        sounddevice.query_devices(kind="output")
        return sounddevice
    except Exception:  # not installed, no PortAudio, or no device: all mean "write files"
        return None


def input_device() -> Optional[object]:
    """The sounddevice module when it sees a microphone, else None."""
    try:
        import sounddevice
        sounddevice.query_devices(kind="input")
        return sounddevice
    except Exception:
        return None


def record_until_enter(sounddevice, wait: Callable[[], object], sample_rate: int = 16000) -> np.ndarray:
    """Records the microphone until `wait()` returns (the user pressed Enter); returns (n,) float32."""
    frames: list[np.ndarray] = []
    with sounddevice.InputStream(samplerate=sample_rate, channels=1, dtype="float32",
                                 callback=lambda data, *_: frames.append(data[:, 0].copy())):
        wait()
    return np.concatenate(frames) if frames else np.zeros(0, np.float32)


def open_audio_sink(folder: Path, reply_index: int, speaker=None) -> Callable:
    return SpeakerSink(speaker) if speaker is not None else WavFolderSink(folder, reply_index)
