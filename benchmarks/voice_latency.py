"""Voice latency benchmark: how fast speech goes in (Whisper), out (Piper, Coqui), and how soon a spoken reply
starts when the reply is voiced sentence by sentence as it streams, against writing it all first. In one process,
on the embedded default; tables to stdout, progress to stderr.

    python3 benchmarks/voice_latency.py                      # 2 threads, persona mara, 5 turns
    python3 benchmarks/voice_latency.py --turns 3 --json /tmp/voice.json

Sessions go to a throwaway database in a temp folder; the converted LM and Whisper are read from (and on the
first run written to) the cache of `--home`, else $PERSONAE_HOME, else the usual XDG cache.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

from agent.agent import Agent  # noqa: E402
from agent.config import load_config  # noqa: E402
from agent.paths import Home, resolve_home  # noqa: E402
from agent.speech.asr import SAMPLE_RATE as ASR_RATE  # noqa: E402
from agent.speech.audio import load_audio, write_wav  # noqa: E402
from agent.speech.tts import load_synthesizer  # noqa: E402
from agent.speech.voice import shift_pitch, voice_settings  # noqa: E402

# What a user might say to Mara, about 3, 6 and 12 s when Piper's joe voice reads them.
ASR_CLIPS = [
    ("short", "Captain, the wind is turning. Should we reef the sails?"),
    ("medium", "I heard a rumour in the tavern that a Spanish galleon sails for Havana next week, "
               "heavy with silver and lightly guarded."),
    ("long", "There is a storm building to the east, and the new hands are nervous. One of them was caught "
             "stealing biscuits from the stores last night. What should we do with him, and should we change "
             "course before the weather turns against us?"),
]

# Sentences in Mara's manner, synthesised one at a time as the speech stream does: short to long.
TTS_SENTENCES = [
    "Aye, you'll do.",
    "Keep your knife sharp, your mouth shut, and your eyes on the horizon.",
    "The tide turns at dawn, and we sail with it whether the crew is sober or not.",
    "I've hauled silver out of Spanish holds and buried good men on beaches no chart will ever show.",
    "If the navy catches us, we hang together, so you had best learn to run a line faster than any man "
    "aboard, and learn it before the week is out.",
]

# Spoken-style user turns (what a voice user says); taken in order, repeated past the end.
VOICE_TURNS = [
    "Hello Captain. The harbourmaster said you might need a hand on deck.",
    "What would you want from me?",
    "Why did you become a captain?",
    "Tell me about your crew. Who can I trust?",
    "What happens if the navy catches us?",
    "Do you ever miss Bristol?",
    "There's a storm building to the east. Should we reef the sails?",
    "What's the first thing you'll teach me tomorrow?",
]

SHIPPED_VOICES = ("mara", "hale", "pixel")  # the shipped personas, each with its own Piper settings


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", help="YAML config (default: the embedded default: SmolLM2-135M, Whisper base, "
                                    "Piper joe)")
    p.add_argument("--persona", default="mara", help="persona for the spoken turns (default mara)")
    p.add_argument("--turns", type=int, default=5,
                   help=f"spoken turns, from the script in order, repeated past {len(VOICE_TURNS)} (default 5)")
    p.add_argument("--max-new-tokens", type=int, default=80, help="reply length cap (default 80)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads for the LM, Whisper and Coqui "
                                                          "(default 2)")
    p.add_argument("--repeats", type=int, default=2, help="timings per ASR clip and TTS set; the best is "
                                                          "reported (default 2)")
    p.add_argument("--home", help="personae home whose cache/ holds the converted models "
                                  "(default: $PERSONAE_HOME, else the XDG cache)")
    p.add_argument("--json", help="also write every figure to this file")
    args = p.parse_args(argv)
    if args.turns < 1 or args.max_new_tokens < 1 or args.threads < 1 or args.repeats < 1:
        p.error("--turns, --max-new-tokens, --threads and --repeats must be >= 1")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def word_errors(reference: str, hypothesis: str) -> int:
    """Word-level edit distance (substitutions + insertions + deletions), case and punctuation ignored."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


# --- 1. speech recognition -----------------------------------------------------------------------------

def bench_asr(agent: Agent, folder: Path, repeats: int) -> dict:
    """Piper reads each ASR clip into a WAV; each is decoded (ffmpeg, as uploads are) and transcribed,
    language forced to English and auto-detected; best of `repeats` whisper timings."""
    joe = load_synthesizer(voice_settings(agent.config.tts), device="cpu")  # the plain joe voice, no persona
    transcriber = agent.transcriber
    clips = []
    for name, text in ASR_CLIPS:
        path = write_wav(folder / f"{name}.wav", joe.synthesize(text), joe.sample_rate)
        start = time.perf_counter()
        samples = load_audio(path, sample_rate=ASR_RATE, max_seconds=transcriber.max_seconds)
        decode = time.perf_counter() - start
        clips.append((name, text, samples, decode))
    log("ASR warm-up (untimed)")
    transcriber.transcribe_samples(clips[0][2], language="en")
    modes = (("en", "en"), ("auto", None))
    times: dict = {(name, mode): [] for name, *_ in clips for mode, _ in modes}
    results = {}
    for _ in range(repeats):  # round robin, so a burst of other work on the machine can't hit every take of one
        for name, text, samples, decode in clips:
            for mode, language in modes:
                start = time.perf_counter()
                results[name, mode] = transcriber.transcribe_samples(samples, language=language)
                times[name, mode].append(time.perf_counter() - start)
    rows = []
    for name, text, samples, decode in clips:
        seconds = len(samples) / ASR_RATE
        for mode, _ in modes:
            best, result = min(times[name, mode]), results[name, mode]
            errors = word_errors(text, result.text)
            rows.append({"clip": name, "mode": mode, "audio_seconds": seconds, "decode_seconds": decode,
                         "whisper_seconds": best, "whisper_seconds_all": times[name, mode],
                         "rtf": best / seconds, "rtf_with_decode": (best + decode) / seconds,
                         "language": result.language, "reference": text, "transcript": result.text,
                         "word_errors": errors, "reference_words": len(words(text))})
            log(f"ASR {name:6s} {mode:4s}: {seconds:5.2f} s audio, whisper "
                f"{', '.join(f'{t:.2f}' for t in times[name, mode])} s (best RTF {best / seconds:.2f}), "
                f"{result.language}, {errors} word errors")
    summary = {}
    for mode in ("en", "auto"):
        chosen = [r for r in rows if r["mode"] == mode]
        audio = sum(r["audio_seconds"] for r in chosen)
        summary[f"rtf_{mode}"] = sum(r["whisper_seconds"] for r in chosen) / audio
        summary[f"wer_{mode}"] = sum(r["word_errors"] for r in chosen) / sum(r["reference_words"] for r in chosen)
    summary["audio_seconds"] = sum(r["audio_seconds"] for r in rows if r["mode"] == "en")
    summary["auto_overhead_seconds_mean"] = statistics.mean(
        a["whisper_seconds"] - e["whisper_seconds"] for e, a in zip(rows[0::2], rows[1::2]))
    return {"model": agent.config.whisper.name_or_path, "repeats": repeats, "clips": rows, "summary": summary}


def print_asr(asr: dict) -> None:
    print(f"== 1. Speech recognition: {asr['model']} (Whisper base), clips read by Piper joe, "
          f"best of {asr['repeats']} ==")
    print(f"{'clip':<7} {'audio':>6} {'language':<10} {'decode':>7} {'whisper':>8} {'RTF':>5} {'+decode':>7} "
          f"{'errors':>7}  transcript")
    for r in asr["clips"]:
        language = "en forced" if r["mode"] == "en" else f"auto: {r['language']}"
        print(f"{r['clip']:<7} {r['audio_seconds']:>5.2f}s {language:<10} {r['decode_seconds']:>6.3f}s "
              f"{r['whisper_seconds']:>7.2f}s {r['rtf']:>5.2f} {r['rtf_with_decode']:>7.2f} "
              f"{r['word_errors']:>3}/{r['reference_words']:<3}  {r['transcript'][:70]!r}")
    s = asr["summary"]
    print(f"overall RTF (whisper seconds / audio seconds over all {s['audio_seconds']:.1f} s): "
          f"{s['rtf_en']:.2f} forced en, {s['rtf_auto']:.2f} auto-detect "
          f"(detection adds {s['auto_overhead_seconds_mean']:+.2f} s per clip on average); "
          f"word error rate {s['wer_en']:.1%} / {s['wer_auto']:.1%}")
    print("decode: ffmpeg reading the WAV into 16 kHz samples, once per clip; RTF < 1 is faster than real time\n")


# --- 2. text to speech ---------------------------------------------------------------------------------

def prepare_voice(label: str, settings) -> dict:
    """Loads the voice at `settings` twice: with pitch 0 (the engine alone) and as the app does; warms it up."""
    raw = load_synthesizer(dataclasses.replace(settings, pitch_semitones=0.0))
    app = load_synthesizer(settings)
    raw.synthesize(max(TTS_SENTENCES, key=len))  # warm-up: first calls and new input sizes cost extra
    return {"label": label, "settings": settings, "raw": raw, "app": app, "takes": []}


def take(voice: dict) -> list[dict]:
    """TTS_SENTENCES one call each: the engine at pitch 0, then shift_pitch on its output (together what the
    engine's synthesize does at the voice's settings)."""
    raw, semitones = voice["raw"], voice["settings"].pitch_semitones
    sentences = []
    for text in TTS_SENTENCES:
        start = time.perf_counter()
        audio = raw.synthesize(text)
        engine = time.perf_counter() - start
        start = time.perf_counter()
        shift_pitch(audio, raw.sample_rate, semitones)
        pitch = time.perf_counter() - start
        sentences.append({"text": text, "audio_seconds": len(audio) / raw.sample_rate,
                          "engine_seconds": engine, "pitch_seconds": pitch})
    return sentences


def app_check(voice: dict) -> float:
    """One pass of the synthesizer as personae loads it (pitch included): its RTF."""
    app, seconds, audio = voice["app"], 0.0, 0.0
    for text in TTS_SENTENCES:
        start = time.perf_counter()
        audio += len(app.synthesize(text)) / app.sample_rate
        seconds += time.perf_counter() - start
    return seconds / audio


def voice_row(voice: dict, check_rtf: float) -> dict:
    """The voice's take with the lowest total time per audio second."""
    audio_of = lambda t: sum(s["audio_seconds"] for s in t)  # noqa: E731
    total_of = lambda t: sum(s["engine_seconds"] + s["pitch_seconds"] for s in t)  # noqa: E731
    best = min(voice["takes"], key=lambda t: total_of(t) / max(audio_of(t), 1e-9))
    audio = audio_of(best)
    engine = sum(s["engine_seconds"] for s in best)
    pitch = sum(s["pitch_seconds"] for s in best)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(voice["settings"]).items()}
    row = {"label": voice["label"], "settings": settings, "sample_rate": voice["raw"].sample_rate,
           "sentences": len(TTS_SENTENCES), "audio_seconds": audio, "engine_seconds": engine, "pitch_seconds": pitch,
           "total_seconds": engine + pitch, "rtf_engine": engine / audio, "rtf_total": (engine + pitch) / audio,
           "rtf_total_all_takes": [total_of(t) / audio_of(t) for t in voice["takes"]],
           "max_sentence_seconds": max(s["engine_seconds"] + s["pitch_seconds"] for s in best),
           "app_rtf": check_rtf, "best_take": best, "takes": voice["takes"]}
    log(f"TTS {voice['label']}: {audio:.1f} s audio, engine {engine:.2f} s + pitch {pitch:.2f} s, best RTF "
        f"{row['rtf_total']:.3f} (takes {', '.join(f'{x:.3f}' for x in row['rtf_total_all_takes'])}; "
        f"app check {check_rtf:.3f})")
    return row


def bench_tts(agent: Agent, folder: Path, repeats: int) -> dict:
    voices = []
    for slug in SHIPPED_VOICES:
        settings = voice_settings(agent.config.tts, agent.persona(slug))
        voices.append(prepare_voice(f"piper joe, {slug}", settings))
    coqui = {"skipped": None}
    try:
        import TTS.tts.models.vits  # noqa: F401
    except ImportError as e:
        coqui["skipped"] = f"coqui-tts not importable ({e})"
    if coqui["skipped"] is None:
        log("building a tiny random Coqui VITS (no Coqui weights are available offline)")
        from agent.speech.coqui_tiny import save_tiny_vits

        save_tiny_vits(folder / "tiny-vits")
        mara = voice_settings(agent.config.tts, agent.persona("mara"))
        settings = dataclasses.replace(mara, engine="coqui", voice=str(folder / "tiny-vits"))
        voices.append(prepare_voice("coqui tiny RANDOM VITS, mara", settings))
        coqui["parameters"] = sum(p.numel() for p in voices[-1]["raw"].engine.tts_model.parameters())
    for _ in range(repeats):  # round robin over the voices, as for ASR
        for voice in voices:
            voice["takes"].append(take(voice))
    checks = [app_check(voice) for voice in voices]
    rows = [voice_row(voice, check) for voice, check in zip(voices, checks)]
    if coqui["skipped"] is None:
        rows[-1]["random_tiny_model"] = True
    return {"sentences": TTS_SENTENCES, "repeats": repeats, "voices": rows, "coqui": coqui}


def print_tts(tts: dict) -> None:
    print(f"== 2. Text to speech: {len(tts['sentences'])} sentences, one call each, best of {tts['repeats']} ==")
    print(f"{'voice':<31} {'length':>6} {'noise':>5} {'pitch':>5} {'rate':>5} {'audio':>6} {'engine':>7} "
          f"{'pitch':>6} {'RTF eng':>7} {'RTF':>6} {'max/sent':>8} {'app RTF':>7}")
    for r in tts["voices"]:
        s = r["settings"]
        noise = "-" if s["noise_scale"] is None else f"{s['noise_scale']:g}"
        print(f"{r['label']:<31} {s['length_scale']:>6g} {noise:>5} {s['pitch_semitones']:>+5g} "
              f"{r['sample_rate'] // 1000:>4}k {r['audio_seconds']:>5.1f}s {r['engine_seconds']:>6.2f}s "
              f"{r['pitch_seconds']:>5.2f}s {r['rtf_engine']:>7.3f} {r['rtf_total']:>6.3f} "
              f"{r['max_sentence_seconds']:>7.2f}s {r['app_rtf']:>7.3f}")
    print("engine: the voice at pitch 0; pitch: shift_pitch (WSOLA + resample) on its output; RTF = (engine + "
          "pitch) / audio;\nmax/sent: slowest sentence; app RTF: one pass of the synthesizer as personae loads it "
          "(pitch included), a check")
    if tts["coqui"]["skipped"]:
        print(f"coqui: skipped, {tts['coqui']['skipped']}")
    else:
        params = tts["coqui"]["parameters"]
        print(f"NOTE coqui: a tiny RANDOMLY INITIALISED VITS ({params / 1e3:.0f}k parameters, built as "
              f"tests/test_tts.py does), because no Coqui weights are available offline. It says nothing "
              f"intelligible and its durations are random; its RTF is only a lower bound on the engine's overhead "
              f"(text processing, TTS.utils.synthesizer, torch calls), not the speed of a real Coqui voice.")
    print()


# --- 3. end of the user's turn -> first audio ----------------------------------------------------------

class CountingSink:
    """Receives the speech stream's audio and only counts it (no playback, no files)."""

    def __init__(self):
        self.chunks = 0
        self.seconds = 0.0

    def __call__(self, index: int, samples: np.ndarray, sample_rate: int) -> None:
        self.chunks += 1
        self.seconds += len(samples) / sample_rate


class TimedSynth:
    """Wraps the stream's synthesizer to note when the first sentence reached TTS and how long it took."""

    def __init__(self, inner):
        self.inner = inner
        self.sample_rate = inner.sample_rate
        self.first_started: Optional[float] = None
        self.first_seconds: Optional[float] = None

    def synthesize(self, text: str) -> np.ndarray:
        start = time.perf_counter()
        audio = self.inner.synthesize(text)
        if self.first_started is None:
            self.first_started, self.first_seconds = start, time.perf_counter() - start
        return audio


@dataclass
class SpokenTurn:
    mode: str  # "streamed" | "whole"
    reply: str
    new_tokens: int
    ttft: float  # LM time to first token (DecodeStats)
    decode_tps: float  # LM tokens/s after the first (DecodeStats): low when TTS or other processes take the CPUs
    reply_done: float  # seconds from the end of the user's turn until the last reply piece
    first_audio: Optional[float]  # seconds from the end of the user's turn until the first audio was ready
    all_audio: Optional[float]  # until all of the reply's audio was ready
    first_sentence_to_tts: Optional[float]  # streamed: when the first spoken sentence reached TTS
    first_sentence_synth: Optional[float]  # streamed: seconds synthesising it
    synth_seconds: float  # compute seconds in TTS for the whole reply
    audio_seconds: float  # speech produced
    sentences: int  # audio chunks handed out (streamed: sentences; whole: 1)
    errors: list


def streamed_turn(agent: Agent, session, text: str) -> SpokenTurn:
    sink = CountingSink()
    stream = agent.speech_stream(session, sink)
    timed = TimedSynth(stream.synthesizer)
    stream.synthesizer = timed  # the worker is idle until the first sentence, so swapping here is safe
    start = time.perf_counter()
    pieces = []
    for piece in session.reply(text):
        pieces.append(piece)
        stream.feed(piece)
    reply_done = time.perf_counter() - start
    stats = stream.close()
    all_audio = time.perf_counter() - start
    st = session.last_stats
    since = lambda t: None if t is None else t - start  # noqa: E731
    return SpokenTurn("streamed", "".join(pieces).strip(), st.new_tokens, st.time_to_first_token,
                      st.decode_tokens_per_second, reply_done,
                      since(stats.first_audio_at), all_audio if stats.sentences else None,
                      since(timed.first_started), timed.first_seconds, stats.synth_seconds, sink.seconds,
                      sink.chunks, list(stats.errors))


def whole_turn(agent: Agent, session, text: str) -> SpokenTurn:
    sink = CountingSink()
    start = time.perf_counter()
    reply = "".join(session.reply(text))
    reply_done = time.perf_counter() - start
    errors, first_audio, synth = [], None, 0.0
    try:
        samples, rate = agent.speak(session.persona.slug, reply)  # clean the whole reply, synthesise it at once
        first_audio = time.perf_counter() - start
        synth = first_audio - reply_done
        sink(0, samples, rate)
    except ValueError as e:  # nothing speakable in the reply
        errors.append(str(e))
    st = session.last_stats
    return SpokenTurn("whole", reply.strip(), st.new_tokens, st.time_to_first_token, st.decode_tokens_per_second,
                      reply_done, first_audio, first_audio, None, None, synth, sink.seconds, sink.chunks, errors)


def bench_turns(agent: Agent, persona: str, turns: list[str]) -> dict:
    log("spoken-turn warm-up (untimed)")
    warm = agent.open_session(persona)
    streamed_turn(agent, warm, "Hello there.")
    whole_turn(agent, warm, "Nice to meet you.")
    sessions = {"streamed": agent.open_session(persona), "whole": agent.open_session(persona)}
    results = []
    for i, text in enumerate(turns, 1):
        order = ("streamed", "whole") if i % 2 else ("whole", "streamed")  # alternate, so drift hits both alike
        pair = {}
        for mode in order:
            run = streamed_turn if mode == "streamed" else whole_turn
            pair[mode] = run(agent, sessions[mode], text)
            t = pair[mode]
            fa = "none" if t.first_audio is None else f"{t.first_audio:.2f} s"
            log(f"[{mode:8s}] turn {i}/{len(turns)}: {t.new_tokens:3d} tokens, reply {t.reply_done:.2f} s, "
                f"first audio {fa}, {t.audio_seconds:.1f} s of audio")
        results.append({"user": text, "streamed": pair["streamed"], "whole": pair["whole"],
                        "same_reply": pair["streamed"].reply == pair["whole"].reply})
    return {"persona": persona, "turns": results, "summary": summarize_turns(results)}


def summarize_turns(results: list[dict]) -> dict:
    def figures(mode: str, field: str) -> list[float]:
        return [getattr(r[mode], field) for r in results if getattr(r[mode], field) is not None]

    s = {}
    for mode in ("streamed", "whole"):
        for field in ("first_audio", "reply_done", "all_audio"):
            values = figures(mode, field)
            s[f"{mode}_{field}_mean"] = statistics.mean(values) if values else None
            s[f"{mode}_{field}_median"] = statistics.median(values) if values else None
        s[f"{mode}_audio_seconds"] = sum(figures(mode, "audio_seconds"))
        s[f"{mode}_synth_seconds"] = sum(figures(mode, "synth_seconds"))
        s[f"{mode}_new_tokens"] = sum(figures(mode, "new_tokens"))
        rates = [r for r in figures(mode, "decode_tps") if r > 0]
        s[f"{mode}_decode_tps_mean"] = statistics.mean(rates) if rates else None
    both = [r for r in results if r["streamed"].first_audio is not None and r["whole"].first_audio is not None]
    s["first_audio_saved_mean"] = statistics.mean(r["whole"].first_audio - r["streamed"].first_audio
                                                  for r in both) if both else None
    s["first_audio_ratio_median"] = (s["whole_first_audio_median"] / s["streamed_first_audio_median"]
                                     if s["streamed_first_audio_median"] else None)
    s["streamed_audio_before_reply_done"] = sum(
        1 for r in results
        if r["streamed"].first_audio is not None and r["streamed"].first_audio < r["streamed"].reply_done)
    s["identical_replies"] = sum(r["same_reply"] for r in results)
    s["first_divergence"] = next((i for i, r in enumerate(results, 1) if not r["same_reply"]), None)
    s["turns"] = len(results)
    return s


def _f(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.2f}"


def _s(x: Optional[float], width: int = 6) -> str:
    return f"{'—':>{width}} " if x is None else f"{x:>{width}.2f}s"


def print_turns(spoken: dict, max_new_tokens: int) -> None:
    print(f"== 3. End of the user's turn -> first audio: persona {spoken['persona']}, greedy, "
          f"max {max_new_tokens} new tokens ==")
    print(f"{'':>4} {'':>4} {'':>6} | {'streamed: speech_stream fed piece by piece':^51} | "
          f"{'whole reply, then agent.speak':^35} |")
    print(f"{'turn':>4} {'new':>4} {'TTFT':>6} | {'to TTS':>7} {'synth':>6} {'1st aud':>7} {'reply':>7} "
          f"{'tok/s':>5} {'all aud':>7} {'audio':>6} | {'reply':>7} {'tok/s':>5} {'synth':>6} {'1st aud':>7} "
          f"{'audio':>6} | same")
    for i, r in enumerate(spoken["turns"], 1):
        a, b = r["streamed"], r["whole"]
        new = f"{a.new_tokens}" if a.new_tokens == b.new_tokens else f"{a.new_tokens}/{b.new_tokens}"
        print(f"{i:>4} {new:>4} {a.ttft:>5.2f}s | {_s(a.first_sentence_to_tts)} {_s(a.first_sentence_synth, 5)} "
              f"{_s(a.first_audio)} {_s(a.reply_done)} {a.decode_tps:>5.1f} {_s(a.all_audio)} "
              f"{a.audio_seconds:>5.1f}s | {_s(b.reply_done)} {b.decode_tps:>5.1f} {_s(b.synth_seconds, 5)} "
              f"{_s(b.first_audio)} {b.audio_seconds:>5.1f}s | {'yes' if r['same_reply'] else 'NO'}")
    print("times from the end of the user's turn (text submitted). to TTS: the first spoken sentence reaches TTS; "
          "synth: its synthesis\n(whole: the whole reply's); 1st aud: first audio ready; reply: last LM piece; "
          "tok/s: LM decode rate; all aud: every sentence's audio ready;\naudio: seconds of speech; "
          "TTFT: LM time to first token (streamed run)")
    s = spoken["summary"]
    print(f"first audio, streamed: mean {_f(s['streamed_first_audio_mean'])} s, median "
          f"{_f(s['streamed_first_audio_median'])} s")
    print(f"first audio, whole:    mean {_f(s['whole_first_audio_mean'])} s, median "
          f"{_f(s['whole_first_audio_median'])} s")
    if s["first_audio_saved_mean"] is not None:
        print(f"streaming starts speech {_f(s['first_audio_saved_mean'])} s sooner on average "
              f"({s['first_audio_ratio_median']:.1f}x on medians); first audio before the reply was complete in "
              f"{s['streamed_audio_before_reply_done']}/{s['turns']} turns")
    print(f"reply complete: streamed mean {_f(s['streamed_reply_done_mean'])} s (LM sharing the CPUs with TTS), "
          f"whole mean {_f(s['whole_reply_done_mean'])} s; LM decode: streamed mean "
          f"{s['streamed_decode_tps_mean'] or 0:.1f} tok/s, whole {s['whole_decode_tps_mean'] or 0:.1f} tok/s")
    print(f"all audio ready: streamed mean "
          f"{_f(s['streamed_all_audio_mean'])} s, whole mean {_f(s['whole_all_audio_mean'])} s")
    print(f"total audio: streamed {s['streamed_audio_seconds']:.1f} s, whole {s['whole_audio_seconds']:.1f} s; "
          f"TTS compute: streamed {s['streamed_synth_seconds']:.1f} s, whole {s['whole_synth_seconds']:.1f} s; "
          f"new tokens: {s['streamed_new_tokens']} / {s['whole_new_tokens']}")
    div = s["first_divergence"]
    print(f"greedy replies identical in both modes: {s['identical_replies']}/{s['turns']} turns"
          + (f" (first difference at turn {div})" if div else ""))
    for i, r in enumerate(spoken["turns"], 1):
        if not r["same_reply"]:
            print(f"  turn {i} streamed: {r['streamed'].reply[:200]!r}\n"
                  f"  turn {i} whole:    {r['whole'].reply[:200]!r}")
    print()


# --- main ----------------------------------------------------------------------------------------------

def print_load(load: dict, threads: int) -> None:
    print(f"load average (1/5/15 min) at the start {load['start']}, after ASR {load['after_asr']}, after TTS "
          f"{load['after_tts']}, at the end {load['end']}, on {load['cpus']} CPUs; torch threads {threads}, "
          f"onnxruntime (Piper) its own default. A 1-min load above the CPU count means other processes shared "
          f"the CPUs and every figure is slower than on a quiet machine.")
    # readings taken during the run include this benchmark's own threads, about `threads` of load
    others = max(load[k][0] - threads for k in ("after_asr", "after_tts", "end"))
    if threads > 1 and others >= 1:
        print(f"The machine was busy (other processes' 1-min load about {others:.1f}, this run's own threads "
              f"discounted): torch's {threads} threads wait for each other "
              f"whenever one is descheduled, which can slow the LM and Whisper several times over; compare a run "
              f"with --threads 1.")


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    began = time.perf_counter()
    load = {"cpus": os.cpu_count(), "start": loadavg()}
    torch.set_num_threads(args.threads)
    config = load_config(args.config, ["chat.temperature=0", f"chat.max_new_tokens={args.max_new_tokens}",
                                       f"lm.threads={args.threads}"])
    turns = [VOICE_TURNS[i % len(VOICE_TURNS)] for i in range(args.turns)]
    with tempfile.TemporaryDirectory(prefix="personae-voice-bench-") as data:
        home = Home(data=Path(data), cache=resolve_home(args.home).cache)
        agent = Agent(config, home=home)
        loading = {}
        log(f"loading {config.lm.name_or_path} (cache: {home.cache_dir('lm')}; the first run converts a GGUF, ~20 s)")
        start = time.perf_counter()
        agent.lm
        loading["lm_seconds"] = time.perf_counter() - start
        log(f"loading {config.whisper.name_or_path} (cache: {home.cache_dir('whisper')})")
        start = time.perf_counter()
        agent.transcriber
        loading["whisper_seconds"] = time.perf_counter() - start
        log(f"loaded LM in {loading['lm_seconds']:.1f} s, Whisper in {loading['whisper_seconds']:.1f} s; "
            f"torch threads: {torch.get_num_threads()}")

        asr = bench_asr(agent, Path(data), args.repeats)
        load["after_asr"] = loadavg()
        print_asr(asr)
        sys.stdout.flush()
        tts = bench_tts(agent, Path(data), args.repeats)
        load["after_tts"] = loadavg()
        print_tts(tts)
        sys.stdout.flush()
        spoken = bench_turns(agent, args.persona, turns)
        print_turns(spoken, args.max_new_tokens)
    load["end"] = loadavg()
    elapsed = time.perf_counter() - began
    print_load(load, args.threads)
    print(f"whole run: {elapsed:.0f} s")
    if args.json:
        figures = {"lm": config.lm.name_or_path, "whisper": config.whisper.name_or_path, "tts_voice": config.tts.voice,
                   "persona": args.persona, "max_new_tokens": args.max_new_tokens, "threads": args.threads,
                   "repeats": args.repeats, "machine": {"platform": platform.platform(),
                                                        "processor": platform.processor(),
                                                        "torch": torch.__version__},
                   "loading": loading, "asr": asr, "tts": tts,
                   "spoken_turns": {**spoken, "turns": [{**r, "streamed": asdict(r["streamed"]),
                                                         "whole": asdict(r["whole"])} for r in spoken["turns"]]},
                   "load_average": load, "elapsed_seconds": elapsed}
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
