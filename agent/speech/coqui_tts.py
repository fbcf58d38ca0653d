"""The Coqui engine (coqui-tts): VITS, XTTS and the other 🐸TTS models, from local files only, never downloaded.

`load_coqui(settings)` hands `load_synthesizer` a `CoquiSynthesizer`; a voice-cloning model (XTTS) speaks in
the voice of the persona's sample. Each model loads once per process, frozen, in eval mode.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import json
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..models.packages import MissingWeights
from .voice import VoiceSettings, shift_pitch

MODEL_TYPES = ("tts_models", "vocoder_models")  # first part of a Coqui model name: type/language/dataset/model
CHECKPOINT_NAMES = ("model.pth", "model_file.pth", "model_file.pth.tar", "checkpoint.pth", "best_model.pth")
INSTALL = "pip install coqui-tts (with torch, torchaudio and six)"
_LOAD_LOCK = threading.Lock()


@dataclass(frozen=True)
class CoquiFiles:
    model: Path  # the checkpoint file; XTTS finds vocab.json and speakers_xtts.pth beside it
    config: Path  # the model's config.json
    vocoder: Optional[Path] = None  # a separate vocoder checkpoint, for spectrogram models (Tacotron 2, ...)
    vocoder_config: Optional[Path] = None


def tts_home() -> Path:
    """Where `TTS(...)` puts the models it downloads from GitHub (trainer.io.get_user_data_dir("tts"))."""
    if os.environ.get("TTS_HOME"):
        return Path(os.environ["TTS_HOME"]).expanduser() / "tts"
    if os.environ.get("XDG_DATA_HOME"):
        return Path(os.environ["XDG_DATA_HOME"]).expanduser() / "tts"
    if sys.platform == "darwin":
        return Path("~/Library/Application Support/tts").expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", "~")).expanduser() / "tts"
    return Path.home() / ".local" / "share" / "tts"


def is_model_name(voice: str) -> bool:
    """'tts_models/multilingual/multi-dataset/xtts_v2' -> True; a path -> False."""
    parts = voice.split("/")
    return len(parts) == 4 and parts[0] in MODEL_TYPES and all(parts)


def _catalogue() -> dict:
    """TTS's own list of model names (.models.json), read without importing TTS (which imports torch)."""
    spec = importlib.util.find_spec("TTS")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the Coqui engine needs coqui-tts: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / ".models.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _fetch_hint(name: str) -> str:
    return (f"personae never downloads; fetch it once where there is internet with "
            f"COQUI_TOS_AGREED=1 python -c \"from TTS.api import TTS; TTS('{name}')\" (copy the folder here "
            f"if needed), or set tts.voice to a local folder holding config.json and the model file")


def _hub_folder(name: str, repo_id: str, item: dict) -> Path:
    """The Hugging Face cache snapshot that `TTS(name)` downloaded, looked up offline."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = Path(constants.HF_HUB_CACHE)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=item.get("allow"), ignore_patterns=item.get("ignore"),
                                      cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError:
        where = cache / f"models--{repo_id.replace('/', '--')}"
        raise MissingWeights(f"Coqui model {name!r} is not on this machine: looked in the Hugging Face cache "
                             f"{where}; {_fetch_hint(name)}") from None


def named_folder(name: str) -> tuple[Path, dict]:
    """A Coqui model name -> (its local folder, its catalogue entry); MissingWeights says where it looked."""
    kind, language, dataset, model = name.split("/")
    try:
        item = _catalogue()[kind][language][dataset][model]
    except KeyError:
        raise MissingWeights(f"{name!r} is not a Coqui model name TTS knows (see `tts --list_models`) "
                             f"and not a local folder") from None
    if "repo_id" in item:
        return _hub_folder(name, item["repo_id"], item), item
    folder = tts_home() / name.replace("/", "--")
    if not folder.is_dir():
        raise MissingWeights(f"Coqui model {name!r} is not on this machine: looked for {folder}; {_fetch_hint(name)}")
    return folder, item


def folder_files(folder: Path) -> tuple[Path, Path]:
    """A model folder -> (checkpoint, config.json)."""
    config = folder / "config.json"
    named = [folder / n for n in CHECKPOINT_NAMES if (folder / n).is_file()]
    found = named or sorted(p for p in folder.glob("*.pt*") if p.is_file())
    if not config.is_file() or len(found) != 1:
        raise MissingWeights(f"Coqui model folder {folder}: expected config.json and one checkpoint "
                             f"({' or '.join(CHECKPOINT_NAMES)}), found {sorted(p.name for p in folder.iterdir())}")
    return found[0], config


def model_files(voice: str) -> CoquiFiles:
    """`voice` (a local model folder, a checkpoint file with config.json beside it, or a Coqui model name)
    -> the files to load. Raises MissingWeights, quickly and without touching the network, when absent."""
    path = Path(voice).expanduser()
    if path.is_dir():
        return CoquiFiles(*folder_files(path))
    if path.is_file():
        return CoquiFiles(path, path.with_name("config.json"))
    if not is_model_name(voice):
        raise MissingWeights(f"Coqui voice {voice!r}: no such folder, and not a model name like "
                             f"tts_models/multilingual/multi-dataset/xtts_v2")
    folder, item = named_folder(voice)
    model, config = folder_files(folder)
    if not item.get("default_vocoder"):
        return CoquiFiles(model, config)
    vocoder, vocoder_config = folder_files(named_folder(item["default_vocoder"])[0])
    return CoquiFiles(model, config, vocoder, vocoder_config)


@dataclass
class _Loaded:
    engine: object  # TTS.utils.synthesizer.Synthesizer, shared by every persona using the model
    lock: threading.Lock  # scales are set on the shared model just before each call
    length_scale: Optional[float]  # the model's own scales (VITS, Glow-TTS), which the settings multiply
    noise_scale: Optional[float]


@functools.lru_cache(maxsize=None)
def _load_engine(files: CoquiFiles, device: str) -> _Loaded:
    try:
        from TTS.utils.synthesizer import Synthesizer
    except ImportError as e:
        raise ImportError(f"the Coqui engine needs coqui-tts ({e}): {INSTALL}") from None
    engine = Synthesizer(tts_checkpoint=files.model, tts_config_path=files.config, vocoder_checkpoint=files.vocoder,
                         vocoder_config=files.vocoder_config, use_cuda=False)
    engine.to(device).eval().requires_grad_(False)
    _bake_weight_norm(engine)
    model = engine.tts_model
    return _Loaded(engine, threading.Lock(), getattr(model, "length_scale", None),
                   getattr(model, "inference_noise_scale", None))


def _bake_weight_norm(module) -> None:
    """Turns weight-normed layers (HiFi-GAN decoders) into plain ones: otherwise every call recomputes
    their weights, about a fifth of the synthesis time on a CPU."""
    from torch.nn.utils import parametrize

    for layer in module.modules():
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)


@functools.lru_cache(maxsize=None)
def _voice_dir() -> tempfile.TemporaryDirectory:
    """Where cloned voices (speaker latents) are kept for this process, so a voice sample is analysed once."""
    return tempfile.TemporaryDirectory(prefix="personae-voices-")


class CoquiSynthesizer:
    """Speaks with one Coqui model at one persona's settings. `synthesize(text)` -> (n,) float32."""

    def __init__(self, loaded: _Loaded, settings: VoiceSettings):
        self.engine = loaded.engine  # TTS.utils.synthesizer.Synthesizer, shared by every persona using the model
        self.settings = settings
        self.sample_rate: int = int(self.engine.output_sample_rate)
        self._loaded = loaded
        model = self.engine.tts_model
        # A cloning model already takes the pitch of the voice sample, so pitch_semitones isn't applied again.
        self.clones = bool(model.config.supports_cloning and settings.speaker_wav and not settings.speaker)
        # TTS caches a cloned voice under a speaker name; the sample's hash names it, so an edited sample re-clones
        self._voice_id = None
        if self.clones and model.speaker_manager is not None:
            digest = hashlib.sha256(Path(settings.speaker_wav).read_bytes()).hexdigest()[:16]
            self._voice_id = f"persona-{digest}"
        self._speaker = settings.speaker or (None if self.clones else _first_speaker(model))
        if model.config.supports_cloning and not self.clones and self._speaker is None:
            raise ValueError(f"Coqui voice {settings.voice!r} clones a voice: the persona needs a voice sample "
                             f"(personae.voice_sample) or a tts.speaker")
        languages = model.language_manager.language_names
        self._language = settings.language if len(languages) > 1 else None
        if self._language is not None and self._language not in languages:
            raise ValueError(f"Coqui voice {settings.voice!r} has no language {settings.language!r}; "
                             f"it has: {', '.join(languages)}")
        self._speed = "speed" in inspect.signature(model.inference).parameters  # XTTS takes speed, VITS a scale

    def synthesize(self, text: str) -> np.ndarray:
        """text -> float32 audio (n,) at `sample_rate`; long text is split into sentences by TTS itself."""
        if not text.strip():
            return np.zeros(0, np.float32)
        from TTS.utils.synthesizer import PAD_SILENCE_SAMPLES

        model, s, loaded = self.engine.tts_model, self.settings, self._loaded
        kwargs = {"speed": 1.0 / s.length_scale} if self._speed else {}
        with loaded.lock:
            if loaded.length_scale is not None:
                model.length_scale = s.length_scale * loaded.length_scale
            if loaded.noise_scale is not None:
                model.inference_noise_scale = loaded.noise_scale if s.noise_scale is None else s.noise_scale
            speaker, reference = self._speaker, str(s.speaker_wav) if self.clones else None
            if self._voice_id is not None:
                voice_dir = _voice_dir().name
                speaker, kwargs["voice_dir"] = self._voice_id, voice_dir
                if (Path(voice_dir) / f"{self._voice_id}.pth").is_file():
                    reference = None  # cloned before: TTS loads the saved latents instead of analysing the sample
            wav = self.engine.tts(text, speaker_name=speaker, language_name=self._language, speaker_wav=reference,
                                  **kwargs)
        audio = np.asarray(wav, dtype=np.float32)
        audio = audio[:-PAD_SILENCE_SAMPLES] if len(audio) > PAD_SILENCE_SAMPLES else audio  # TTS pads every sentence
        audio = np.clip(audio, -1.0, 1.0)
        return audio if self.clones else shift_pitch(audio, self.sample_rate, s.pitch_semitones)


def _first_speaker(model) -> Optional[str]:
    manager = model.speaker_manager
    return manager.speaker_names[0] if manager is not None and manager.num_speakers > 1 else None


def load_coqui(settings: VoiceSettings, *, device: str = "cpu") -> CoquiSynthesizer:
    """A Coqui model at `settings`. Raises MissingWeights naming where it looked and how to provide it."""
    files = model_files(settings.voice)
    with _LOAD_LOCK:
        loaded = _load_engine(files, device)
    return CoquiSynthesizer(loaded, settings)
