"""Frozen encoders that turn a persona's portrait, voice sample and card into modality tokens.

Hands `cache` and `fusion` one `ModalityTokens` per modality: float32 tokens on the CPU, shape (n, d),
or an empty (0, d) tensor with `present=False` when the persona lacks the file or the encoder is off.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
import whisper
from PIL import Image

from ..chat.prompt import system_prompt
from ..models.lm import LoadedLM
from ..persona.card import CharacterCard
from ..persona.store import Persona
from ..speech.audio import load_audio
from .config import EncoderConfig

MODALITIES = ("image", "audio", "text")
ENCODING_VERSION = 1  # part of every cache key: bump it when what an encoder returns changes
TEXT_USER = "User"  # {{user}} in the card; fixed so one cached embedding serves every user


@dataclass(frozen=True, eq=False)
class ModalityTokens:
    tokens: torch.Tensor  # (n, d) float32 on the CPU; (0, d) when absent
    present: bool  # False: the persona lacks this modality or its encoder is unavailable; fusion masks it out

    @classmethod
    def missing(cls, d: int) -> "ModalityTokens":
        return cls(torch.zeros(0, d), False)


def weights_fingerprint(module: torch.nn.Module) -> str:
    """16 hex digits of sha256 over every parameter's name and shape and the first values of a few of them.

    Tells apart two random initialisations or an upgraded checkpoint behind the same name, in milliseconds.
    """
    digest = hashlib.sha256()
    params = list(module.named_parameters())
    for name, param in params:
        digest.update(f"{name}{tuple(param.shape)}{param.dtype};".encode())
    for _, param in params[::max(1, len(params) // 8)]:
        digest.update(param.detach().flatten()[:256].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.inference_mode()
def encode_image(clip_model: torch.nn.Module, preprocess: Callable, path: Path) -> torch.Tensor:
    """A portrait -> the pooled CLIP embedding followed by the patch tokens, shape (1 + n_patches, embed_dim).

    The patch tokens go through the same output projection as the pooled embedding, so all of them live
    in CLIP's joint space (ViT-B-32 at 224 px: (50, 512)). Needs an open_clip VisionTransformer.
    """
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None
    visual = clip_model.visual
    if not hasattr(visual, "output_tokens"):
        raise ValueError(f"CLIP vision tower {type(visual).__name__} gives no patch tokens; use a ViT model")
    param = next(visual.parameters())
    pixels = preprocess(image)[None].to(param.device, param.dtype)  # (1, 3, H, W)
    saved, visual.output_tokens = visual.output_tokens, True
    try:
        pooled, patches = visual(pixels)  # (1, embed_dim), (1, n_patches, width)
    finally:
        visual.output_tokens = saved
    if visual.proj is not None:
        patches = patches @ visual.proj  # (1, n_patches, embed_dim)
    return torch.cat([pooled[:, None], patches], dim=1)[0].float().cpu()  # (1 + n_patches, embed_dim)


@torch.inference_mode()
def encode_audio(whisper_model: whisper.model.Whisper, path: Path, n_tokens: int,
                 max_seconds: float = 300.0) -> torch.Tensor:
    """A voice sample -> Whisper encoder states average-pooled over time, shape (n_tokens, n_audio_state).

    The encoder reads 30 s windows (1500 frames, one per 20 ms); each window is trimmed to the frames
    that hold audio, so padding never dilutes a short sample, and a longer sample's windows are joined
    before pooling. Audio longer than `max_seconds` is refused (AudioError).
    """
    samples = torch.from_numpy(load_audio(path, sample_rate=whisper.audio.SAMPLE_RATE, max_seconds=max_seconds))
    if samples.numel() == 0:
        raise ValueError(f"{path}: the voice sample holds no audio")
    param = next(whisper_model.parameters())
    frames = []
    for window in samples.split(whisper.audio.N_SAMPLES):  # (<= 480000,) each
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(window), n_mels=whisper_model.dims.n_mels)
        states = whisper_model.encoder(mel[None].to(param.device, param.dtype))[0]  # (1500, d)
        frames.append(states[:math.ceil(len(window) / whisper.audio.N_SAMPLES_PER_TOKEN)])
    frames = torch.cat(frames).float()  # (T, d), T = 50 per second of audio
    return F.adaptive_avg_pool1d(frames.T[None], n_tokens)[0].T.cpu()  # (n_tokens, d)


def resolve_layer(layer: float, n_layers: int) -> int:
    """encoder.text_layer -> an index into the LM's n_layers + 1 hidden states (0 = token embeddings)."""
    count = n_layers + 1
    if float(layer).is_integer():
        index = int(layer)
        if not -count <= index < count:
            raise ValueError(f"encoder.text_layer {index} is out of range for an LM with {n_layers} layers "
                             f"(hidden states 0..{n_layers} or -1..-{count}; a fraction such as 0.75 fits any LM)")
        return index % count
    return round(layer * n_layers)


@torch.inference_mode()
def encode_text(lm: LoadedLM, text: str, layer: float, max_tokens: int) -> torch.Tensor:
    """Card text -> the LM's hidden states at `layer` (see `resolve_layer`), shape (n_txt, hidden_size).

    The text is cut to its first `max_tokens` tokens. Only the LM's body runs (no vocabulary projection).
    """
    ids = lm.tokenizer(text, truncation=True, max_length=max_tokens, return_tensors="pt")["input_ids"]  # (1, n)
    if ids.shape[1] == 0:
        raise ValueError("the card text is empty")
    hidden = lm.model.base_model(input_ids=ids.to(lm.device), output_hidden_states=True).hidden_states
    return hidden[resolve_layer(layer, len(hidden) - 1)][0].float().cpu()  # (n_txt, hidden_size)


def card_text(card: CharacterCard) -> str:
    """What the text encoder reads: the system turn the chat LM sees (system prompt, description, ...)."""
    return system_prompt(card, TEXT_USER)


class PersonaEncoder:
    """The frozen encoders behind one `encode(persona)`; a modality it can't encode is masked out.

    text_lm reads the card (the chat LM itself, or the model named by encoder.text_model). whisper and
    clip = (model, preprocess) are optional: without them the voice and the portrait are masked out. The
    sources name the weights in cache keys; a fingerprint of the weights themselves is added to them.
    """

    def __init__(self, config: EncoderConfig, text_lm: LoadedLM, *,
                 whisper_model: Optional[whisper.model.Whisper] = None, whisper_source: str = "",
                 clip: Optional[tuple[torch.nn.Module, Callable]] = None, clip_source: str = ""):
        self.config = config
        self.text_lm = text_lm
        self.whisper = whisper_model if config.audio_enabled else None
        self.clip = clip if config.image_enabled else None
        self._identity = {}
        if self.clip is not None:
            self._identity["image"] = f"open_clip {clip_source} {weights_fingerprint(self.clip[0].visual)}"
        if self.whisper is not None:
            self._identity["audio"] = (f"whisper {whisper_source} {weights_fingerprint(self.whisper.encoder)} "
                                       f"tokens={config.audio_tokens}")
        if config.text_enabled:
            self._identity["text"] = (f"lm {text_lm.source} {weights_fingerprint(text_lm.model.base_model)} "
                                      f"layer={float(config.text_layer):g} max_tokens={config.max_text_tokens}")

    @property
    def dims(self) -> dict[str, int]:
        """The width d of each modality this encoder produces, e.g. {"audio": 512, "text": 576}."""
        dims = {}
        if self.clip is not None:
            visual = self.clip[0].visual
            dims["image"] = visual.proj.shape[1] if visual.proj is not None else visual.transformer.width
        if self.whisper is not None:
            dims["audio"] = self.whisper.dims.n_audio_state
        if self.config.text_enabled:
            dims["text"] = self.text_lm.model.config.hidden_size
        return dims

    def identity(self, modality: str) -> Optional[str]:
        """What produced `modality`'s tokens (model, weights fingerprint, options); None when it is off."""
        found = self._identity.get(modality)
        return None if found is None else f"v{ENCODING_VERSION} {modality} {found}"

    def source(self, persona: Persona, modality: str) -> Optional[bytes]:
        """The bytes `modality`'s tokens are computed from, or None when it is masked out."""
        if modality not in self._identity:
            return None
        if modality == "text":
            return card_text(persona.card).encode("utf-8")
        path = persona.portrait if modality == "image" else persona.voice_sample
        return None if path is None else path.read_bytes()

    def missing(self, modality: str) -> ModalityTokens:
        return ModalityTokens.missing(self.dims.get(modality, 0))

    def encode_modality(self, persona: Persona, modality: str) -> ModalityTokens:
        """One modality of `persona`; present=False with a (0, d) tensor when it is masked out."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; choose one of: {', '.join(MODALITIES)}")
        config = self.config
        if modality == "text" and config.text_enabled:
            tokens = encode_text(self.text_lm, card_text(persona.card), config.text_layer, config.max_text_tokens)
        elif modality == "image" and self.clip is not None and persona.portrait is not None:
            tokens = encode_image(*self.clip, persona.portrait)
        elif modality == "audio" and self.whisper is not None and persona.voice_sample is not None:
            tokens = encode_audio(self.whisper, persona.voice_sample, config.audio_tokens, config.audio_max_seconds)
        else:
            return self.missing(modality)
        # an inference-mode tensor can't enter autograd (training the adapter); this copy is a normal tensor
        return ModalityTokens(tokens.clone(), True)

    def encode(self, persona: Persona) -> dict[str, ModalityTokens]:
        """{"image": ..., "audio": ..., "text": ...}, each (n, d) tokens or masked out."""
        return {modality: self.encode_modality(persona, modality) for modality in MODALITIES}
