"""The one API every front-end calls: personas, sessions, replies.

`Agent(config)` owns the loaded models (loaded lazily, once), the persona store and the history
database; front-ends (terminal, Discord, HTTP) never touch torch or the models directly.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Optional, Sequence

from .config import Config
from .paths import Home, resolve_home
from .persona.store import Persona, PersonaStore

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, config: Optional[Config] = None, *, home: Optional[Home | str | Path] = None, lm=None):
        from .chat.history import HistoryStore

        self.config = config or Config()
        self.home = resolve_home(home)
        self.personas = PersonaStore(self.home, self.config.cards)
        self.history = HistoryStore(self.home.database)
        self._lm = lm
        self._lm_lock = threading.Lock()
        self._backend = None
        self._backend_lock = threading.Lock()
        self._transcriber = None
        self._speech_lock = threading.Lock()
        self._adapter = None
        self._soft: dict = {}  # persona slug -> (K, d) soft prompt
        self._persona_kv = None  # embedding.conditioning=kv: the shared PersonaKV
        self._embedding_lock = threading.Lock()
        from .chat.prefix import PrefixCache
        from .persona.lore_store import LoreLibrary

        self.prefixes = PrefixCache()
        self.lore = LoreLibrary(self.home.lore)
        self._embedder = None
        self._embedder_lock = threading.Lock()
        self._memory_store = None

    def close(self) -> None:
        """Stops the chat backend's threads (llama.cpp: saved sessions' KV states go to disk)."""
        with self._backend_lock:
            backend, self._backend = self._backend, None
        if backend is not None and hasattr(backend, "close"):
            backend.close()

    @property
    def lm(self):
        """The chat LM (`LoadedLM`), loaded on first use."""
        with self._lm_lock:
            if self._lm is None:
                import torch

                from .models.lm import load_lm

                cfg = self.config.lm
                if cfg.threads > 0:
                    torch.set_num_threads(cfg.threads)
                self._lm = load_lm(cfg.name_or_path, dtype=cfg.dtype, device=cfg.device,
                                   cache_dir=self.home.cache_dir("lm"), allow_download=cfg.allow_download)
            return self._lm

    @property
    def chat_backend(self):
        """What chat sessions decode with (agent/chat/backends.py, chosen by lm.backend), loaded on first use.

        The llama.cpp and engine backends load no transformers weights; a soft conditioning mode still loads
        the transformers LM later, for the persona encoder (`soft_prompt`)."""
        with self._backend_lock:
            if self._backend is None:
                from .chat.backends import load_backend
                from .config import ConfigError

                backend = load_backend(self.config.lm, lm=lambda: self.lm, cache_dir=self.home.cache_dir("lm"),
                                       context_tokens=self.config.chat.context_tokens,
                                       state_dir=self.home.cache / "kv")
                if self.config.embedding.soft and not backend.takes_soft:
                    raise ConfigError(f"embedding.conditioning={self.config.embedding.conditioning} puts soft "
                                      f"vectors in the prompt, which lm.backend={backend.name} cannot take; use "
                                      f"conditioning card or summary with it")
                if self.config.embedding.mode.kv and not hasattr(backend, "persona_cells"):
                    from .embedding.persona_kv import load_persona_kv

                    load_persona_kv(self.config.embedding, backend)  # the ConfigError naming the alternative
                self._backend = backend
            return self._backend

    def embedder(self):
        """MiniLM sentence embeddings (texts -> (n, 384) unit vectors) for memory, loaded on first use."""
        with self._embedder_lock:
            if self._embedder is None:
                from .models.embedder import load_embedder

                self._embedder = load_embedder(self.config.embedder.name_or_path)
            return self._embedder

    @property
    def memory_store(self):
        """The memory tables of the history database (agent/chat/memory.py)."""
        if self._memory_store is None:
            from .chat.memory import MemoryStore

            self._memory_store = MemoryStore(self.home.database)
        return self._memory_store

    def session_context(self, persona: Persona, session_id: int, user: str, *, store, saved: bool = True):
        """Lore and memory for one session (agent/chat/context.py); memory only for saved sessions."""
        from .chat.context import SessionContext
        from .chat.summary import summarize

        cfg = self.config
        backend = self.chat_backend
        tokenizer = backend.tokenizer

        def count_tokens(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        def summarize_turns(previous: str, turns: list[str]) -> str:
            return summarize(backend, previous, turns, user=user, char=persona.name,
                             max_tokens=cfg.memory.summary_tokens)

        books = self.lore.books_for(persona, store.session_lore(session_id)) if cfg.lore.enabled else []
        return SessionContext(session_id=session_id, char=persona.name, user=user, books=books, lore=cfg.lore,
                              memory=cfg.memory, store=self.memory_store if saved else None, embedder=self.embedder,
                              summarize=summarize_turns, count_tokens=count_tokens)

    @property
    def transcriber(self):
        """Whisper speech recognition (`Transcriber`), loaded on first use."""
        with self._speech_lock:
            if self._transcriber is None:
                from .speech.asr import load_transcriber

                self._transcriber = load_transcriber(self.config.whisper, self.home.cache_dir("whisper"),
                                                     device=self.config.lm.device if self.config.lm.device != "auto" else "cpu")
            return self._transcriber

    def transcribe(self, audio, *, language: Optional[str] = None, name: Optional[str] = None):
        """Audio file path or uploaded bytes -> `Transcript` (empty text with a reason for silence)."""
        return self.transcriber.transcribe(audio, language=language, name=name)

    def voice(self, persona: Persona):
        """The persona's `Synthesizer` (config `tts:` overridden by its persona.yaml `personae.tts`), loaded once."""
        from .speech.tts import load_synthesizer
        from .speech.voice import voice_settings

        return load_synthesizer(voice_settings(self.config.tts, persona), device="cpu")

    def speak(self, persona: Optional[str], text: str):
        """The persona saying `text`, cleaned for speech; returns (samples (n,) float32, sample_rate)."""
        from .speech.text import speakable
        from .speech.voice import voice_settings

        chosen = self.persona(persona)
        settings = voice_settings(self.config.tts, chosen)
        clean = speakable(text, char=chosen.name, user=self.config.chat.user_name, read_actions=settings.read_actions)
        if not clean:
            raise ValueError("nothing to say: the text is empty once actions and markup are removed")
        synth = self.voice(chosen)
        return synth.synthesize(clean), synth.sample_rate

    def speech_stream(self, session, sink):
        """A `SpeechStream` that voices `session`'s persona sentence by sentence into `sink`."""
        from .speech.stream import SpeechStream
        from .speech.voice import voice_settings

        settings = voice_settings(self.config.tts, session.persona)
        return SpeechStream(self.voice(session.persona), sink, char=session.persona.name, user=session.user_name,
                            read_actions=settings.read_actions)

    def persona_encoder(self):
        """The frozen persona encoders of config.encoder around the chat LM, sharing Whisper with speech recognition."""
        from .embedding.load import load_persona_encoder

        whisper_model = self.transcriber.model if self.config.encoder.audio_enabled else None
        return load_persona_encoder(self.config, self.lm, whisper_model=whisper_model, home=self.home)

    def soft_prompt(self, persona: Persona):
        """The persona's K soft-prompt vectors (K, d_lm): its tuned ones (`personae tune`) while they fit this LM
        and card, else the trained adapter's; None for modes without soft prompts (card, summary)."""
        if not self.config.embedding.soft:
            return None
        with self._embedding_lock:
            if persona.slug not in self._soft:
                self._soft[persona.slug] = self._compute_soft_prompt(persona).to(self.lm.model.dtype)
            return self._soft[persona.slug]

    def _compute_soft_prompt(self, persona: Persona):
        import torch

        from .embedding.cache import EmbeddingCache
        from .embedding.load import load_checked_adapter
        from .embedding.tuned import load_tuned, tuned_path

        tuned = tuned_path(self.home, persona.slug)
        if tuned.is_file():  # `personae tune` fitted this persona: its vectors beat the adapter's
            found = load_tuned(tuned)
            if found.fits(self.lm.source, persona.card):
                return found.soft
            log.warning("%s was tuned for another LM or an older card of %s; using the adapter "
                        "(run `personae tune --persona %s` again)", tuned, persona.slug, persona.slug)
        if self._adapter is None:
            from .config import ConfigError
            from .embedding.reader import has_reader

            encoder = self.persona_encoder()
            adapter = load_checked_adapter(self.config, self.lm, encoder)
            if has_reader(self.lm.model) and self.chat_backend.name != "transformers":
                raise ConfigError(f"embedding.adapter {self.config.embedding.adapter!r} carries a reader, "
                                  f"which runs on lm.backend=transformers only so far (not "
                                  f"{self.chat_backend.name})")
            self._adapter = (adapter, encoder)
        adapter, encoder = self._adapter
        modalities = EmbeddingCache(self.home.cache_dir("embeddings")).encode(persona, encoder)
        with torch.inference_mode():
            return adapter.soft_prompt(modalities)

    def create_persona(self, idea: str, *, name: Optional[str] = None, seed: Optional[int] = None,
                       portrait: Optional[Path] = None, from_card: Optional[Path] = None,
                       from_persona: Optional[str] = None, replace: bool = False, time_limit: Optional[float] = None):
        """A new persona written by the chat LM from a one-line idea (agent/creation); with `from_card` (a card
        file) or `from_persona` (a persona's name) a variant of that card, `idea` saying what changes.
        Returns `Created` (the persona and its draft)."""
        from .creation.create import create_persona

        source = label = None
        if from_card is not None:
            from .persona.card_io import read_card

            source, _ = read_card(Path(from_card).expanduser(), self.config.cards)
            label = f"{source.name} ({Path(from_card).name})"
        elif from_persona:
            source = self.personas.get(from_persona).card
        phrases = self._portrait_phrases(portrait) if portrait is not None else []
        return create_persona(self.personas, self.chat_backend, idea, config=self.config.creation,
                              model=Path(self.config.lm.name_or_path).name, seed=seed, name=name, portrait=portrait,
                              portrait_phrases=phrases, source=source, source_label=label, replace=replace,
                              time_limit=time_limit)

    def _portrait_phrases(self, portrait: Path) -> list[str]:
        """CLIP's zero-shot reading of a portrait (age, era, mood) where CLIP weights exist, else nothing."""
        cfg = self.config.clip
        if not cfg.enabled:
            return []
        from .creation.portrait import portrait_attributes
        from .models.clip import load_clip
        from .models.packages import MissingWeights

        try:
            return portrait_attributes(load_clip(cfg.model, cfg.pretrained), portrait, cfg.model)
        except MissingWeights as e:
            log.warning("the portrait's attributes are not read (%s); the idea alone is used", e)
            return []

    def persona(self, name_or_path: Optional[str] = None) -> Persona:
        return self.personas.get(name_or_path or self.config.chat.default_persona)

    def shown(self, persona: Persona) -> Persona:
        """`persona` as the LM reads it in embedding.conditioning's mode (agent/conditioning.py): with summary, its
        card cut to embedding.summary_tokens."""
        import dataclasses

        from .conditioning import shown_card
        from .persona.summary import summary_card

        mode, tokens = self.config.embedding.mode, self.config.embedding.summary_tokens
        tokenizer = self.chat_backend.tokenizer if mode.summary else None
        card = shown_card(persona.card, mode, lambda card: summary_card(card, tokenizer, tokens))
        return persona if card == persona.card else dataclasses.replace(persona, card=card)

    @property
    def plain_model(self) -> str:
        """The LM's own model id (agent/chat/backends.py `model_id`): the server's plain model, whose prompt is
        the client's messages alone; its saved sessions are stored under this id instead of a persona slug."""
        from .chat.backends import model_id

        return model_id(self.config.lm)

    def open_session(self, persona: Optional[str] = None, *, resume: bool = False, channel: Optional[str] = None,
                     user_name: Optional[str] = None, session_id: Optional[int] = None, save: bool = True,
                     plain: bool = False):
        """A `ChatSession` with `persona`: a new one (greeted), or with `resume` the latest of that persona/channel.

        save=False: a session that writes nothing and starts empty (stateless API requests).
        plain=True: a session with the bare LM and no persona (`plain_model`): nothing but the conversation.
        """
        from .chat.history import UnsavedHistory
        from .chat.prompt import greeting
        from .chat.session import ChatSession

        user = user_name or self.config.chat.user_name
        store = self.history
        if session_id is not None and save:
            owner = self.history.session_persona(session_id)
            plain = owner == self.plain_model
            chosen = None if plain else self.personas.get(owner)
        else:
            chosen = None if plain else self.persona(persona)
            key = self.plain_model if plain else chosen.slug
            if not save:
                session_id, store = 0, UnsavedHistory()
            else:
                session_id = self.history.latest_session(key, channel) if resume else None
                if session_id is None:
                    session_id = self.history.create_session(key, "" if plain else greeting(chosen.card, user), channel)
        if chosen is None:
            return self._plain_session(session_id, store, user)
        soft = self.soft_prompt(chosen)
        return ChatSession(persona=self.shown(chosen), session_id=session_id, backend=self.chat_backend, store=store,
                           chat=self.config.chat, user_name=user, soft=soft,
                           decoder=self.chat_backend.new_decoder(soft),
                           with_card=self.config.embedding.mode.card_text, prefixes=self.prefixes,
                           context=self.session_context(chosen, session_id, user, store=store, saved=save),
                           kv=self.persona_kv)

    @property
    def persona_kv(self):
        """The PersonaKV every session shares (agent/embedding/persona_kv.py) when the persona goes in as KV cells
        (embedding.conditioning kv, or auto on llama.cpp); else None."""
        backend = self.chat_backend  # takes the lock below itself
        if not self.config.embedding.kv_on(backend.name):
            return None
        with self._backend_lock:
            if self._persona_kv is None:
                from .embedding.persona_kv import load_persona_kv

                self._persona_kv = load_persona_kv(self.config.embedding, backend,
                                                   [p.card for p in self.personas.list()], self.config.chat.user_name)
            return self._persona_kv

    def _plain_session(self, session_id: int, store, user: str):
        from .chat.session import ChatSession

        return ChatSession(persona=None, session_id=session_id, backend=self.chat_backend, store=store,
                           chat=self.config.chat, user_name=user, decoder=self.chat_backend.new_decoder(None),
                           prefixes=self.prefixes)

    def open_scene(self, personas: Sequence[str] = (), *, resume: bool = False, channel: Optional[str] = None,
                   user_name: Optional[str] = None, scene_id: Optional[int] = None, save: bool = True,
                   opening=None):
        """A group `Scene` (agent/chat/scene.py) of `personas`: a new one opened by their group greetings (or by
        `opening`, Messages naming their speakers); with `resume` the latest scene of exactly these personas
        in `channel` (of any, when none is named); or scene `scene_id`. save=False: a scene that writes
        nothing and starts anew (stateless API requests)."""
        from .chat.history import UnsavedHistory
        from .chat.scene import Scene, opening_lines

        user = user_name or self.config.chat.user_name
        chosen = list({p.slug: p for p in (self.persona(name) for name in personas)}.values())
        slugs = [p.slug for p in chosen]
        store = self.history if save else UnsavedHistory()
        first = list(opening) if opening is not None else opening_lines([(p.slug, p.card) for p in chosen], user)
        if not save:
            scene_id, lines = 0, first
            members = {p.slug: self.open_session(p.slug, save=False, user_name=user) for p in chosen}
        else:
            if scene_id is None and resume:
                scene_id = store.latest_scene(slugs or None, channel)
            if scene_id is None:
                scene_id = store.create_scene(slugs, first, channel)
            elif not store.is_scene(scene_id):
                raise ValueError(f"session {scene_id} is not a group scene")
            lines = store.messages(scene_id)
            members = {slug: self.open_session(session_id=own, user_name=user)
                       for slug, own in store.scene_members(scene_id)}

        def join(name: str):
            persona = self.persona(name)
            if persona.slug in scene.members:
                raise ValueError(f"{persona.name} is already in this scene")
            store.join_scene(scene_id, persona.slug)
            if not save:
                return self.open_session(persona.slug, save=False, user_name=user)
            return self.open_session(session_id=dict(store.scene_members(scene_id))[persona.slug], user_name=user)

        scene = Scene(scene_id=scene_id, members=members, lines=lines, store=store, config=self.config.scene,
                      user_name=user, join=join, names={line.name: self._card_name(line.name) for line in lines
                                                         if line.role == "assistant" and line.name})
        return scene

    def scene_preview(self, personas: Sequence[str], message: Optional[str] = None, *, resume: bool = False,
                      user_name: Optional[str] = None) -> str:
        """The prompt of the persona that speaks next in the scene of `personas` (its last one with `resume`,
        else a new one, which is not written), annotated as `prompt_preview` does."""
        from .chat.prompt import annotate

        saved = resume and self.history.latest_scene([self.persona(p).slug for p in personas]) is not None
        scene = self.open_scene(personas, resume=saved, user_name=user_name, save=saved)
        slug, prompt = scene.prompt(message)
        if slug is None:
            return f"[scene: nobody speaks next with scene.strategy={self.config.scene.strategy}; /next NAME chooses]"
        lore = scene.members[slug].context.report.lore if scene.members[slug].context is not None else None
        return "\n".join([f"[scene: {scene.names[slug]} speaks next ({self.config.scene.strategy}); stop strings "
                          f"{', '.join(repr(s) for s in scene.stops_for(slug)[:6])}...]",
                          self._guard_line(scene=True),
                          lore.explain() if lore is not None else "[lore: no lorebook]",
                          annotate(prompt, self.chat_backend.tokenizer)])

    def _guard_line(self, scene: bool = False) -> str:
        """What the guard (agent/chat/guard.py) checks, for `personae prompt`."""
        from .chat.guard import describe

        chat = self.config.chat
        return describe(on=chat.guard, retries=chat.guard_retries, hold_tokens=chat.guard_tokens, scene=scene)

    def _card_name(self, slug: str) -> str:
        from .persona.store import UnknownPersona

        try:
            return self.personas.get(slug).name
        except UnknownPersona:  # deleted since it spoke: its slug stands in
            return slug

    def attach_lore(self, session, name: str) -> None:
        """Attaches imported lorebook `name` to a saved session (from its next turn on)."""
        book = self.lore.get(name)
        if session.context is None or not hasattr(session.store, "attach_lore"):
            raise ValueError("this session is not saved; attach the lorebook to the persona instead")
        session.store.attach_lore(session.id, self.lore.slug(name))
        if all(b.source != book.source for b in session.context.books):
            session.context.books.append(book)

    def detach_lore(self, session, name: str) -> None:
        from .persona.lorebook import LoreError

        slug = self.lore.slug(name)
        if slug not in session.store.session_lore(session.id):
            raise LoreError(f"lorebook {name!r} is not attached to this session")
        session.store.detach_lore(session.id, slug)
        session.context.books = self.lore.books_for(session.persona, session.store.session_lore(session.id))

    def prompt_preview(self, persona: Optional[str] = None, message: Optional[str] = None, *,
                       resume: bool = False, user_name: Optional[str] = None) -> str:
        """The exact prompt the model would see for the next turn, annotated for card authors.

        Lore shows which entries fired and why; memory is read but not written (nothing is archived).
        """
        from .chat.history import UnsavedHistory
        from .chat.prompt import Message, annotate, fit_prompt, greeting

        user = user_name or self.config.chat.user_name
        chosen = self.persona(persona)
        sid = self.history.latest_session(chosen.slug) if resume else None
        first = greeting(chosen.card, user)
        history = self.history.messages(sid) if sid is not None else ([Message("assistant", first)] if first else [])
        if message:
            history.append(Message("user", message))
        backend = self.chat_backend
        budget = min(self.config.chat.context_tokens, backend.context_length) - self.config.chat.max_new_tokens
        soft, shown = self.soft_prompt(chosen), self.shown(chosen)
        context = self.session_context(chosen, sid or 0, user, store=self.history if sid is not None else UnsavedHistory(),
                                       saved=sid is not None)

        def fit(ctx, kept_from=1):
            return fit_prompt(backend.tokenizer, shown.card, history, user, budget=budget, kept_from=kept_from,
                              soft_tokens=0 if soft is None else soft.shape[0],
                              with_card=self.config.embedding.mode.card_text, context=ctx)

        kv = self.persona_kv
        if kv is not None:  # the cells stand for the system turn: fit as the session does, then swap
            budget += kv.saved_tokens(shown.card, user)
        first_fit = fit(context.build(history, 1, archive=False, recall=False))
        prompt = fit(context.build(history, first_fit.kept_from, archive=False), first_fit.kept_from)
        report = context.report
        lines = [self._guard_line(), report.lore.explain() if report.lore is not None else "[lore: no lorebook]"]
        if kv is not None:
            prompt, plan = kv.apply(prompt, shown.card.name)
            lines.append(f"[kv: the system turn ({len(plan.ids)} tokens) goes in as {len(plan.prefix_ids)} of its KV "
                         f"cells (embedding.conditioning=kv); the total below counts the cells]")
        if report.recalled:
            lines.append("[memory: recalled " + ", ".join(f"#{r.item.id} ({r.score:.2f})" for r in report.recalled) + "]")
        return "\n".join(lines) + "\n" + annotate(prompt, backend.tokenizer)
