"""Identification on a validation split of the TRAIN personas, so adapter ideas can be judged without the held-out set.

    python3 benchmarks/validation_identification.py name tfidf8 tfidf16
    python3 benchmarks/validation_identification.py name adapter:/tmp/exp/contrast.safetensors --threads 2
    python3 benchmarks/validation_identification.py adapter:/tmp/exp/select.safetensors -s encoder.text_layer=0

The last 12 train personas (those `personae train -t val_personas=12` leaves out) read as cards without
their example dialogue; their lines are the greeting and the example-dialogue replies (agent.training.contrast
.card_lines) with `*action*` spans cut, minus lines that still name the persona, since every candidate's
prompt carries its own name. Scored with personae eval's own `identification` (chance 1/12). Modes:
  name            the one-line system prompt with the name (personae eval's `name`)
  card            the card text (no example dialogue)
  tfidfK          the name plus K soft slots holding the real token embeddings of the card's K most
                  distinctive tokens (tf-idf over all train cards): a training-free keyword prompt
  leadN           the name plus the first N tokens of the card's fields (description on) as soft slots
  extractN        the name plus an extractive summary of at most N tokens: the card's sentences with the
                  highest tf-idf density, in card order (training-free text compression)
  styleN          the name plus who the persona is and how it talks, at most N tokens: the description's
                  first sentence, then the personality's sentences, then more description, while they fit
  summaryN        conditioning summary: the card cut to N tokens (agent/persona/summary.py) as text in the
                  system turn, no soft prompt
  adapter:PATH    the name plus the soft prompt of a trained attention or weighted adapter
  reconN          the name plus K (--tune-k, 8) free vectors started at tfidfK and fitted for N steps so
                  the LM, given them and the question "who are you?", says the card's text (per-persona
                  compression)
  tunedN          the name plus K (--tune-k, 8) free vectors started at tfidfK and fitted for N steps to the
                  persona's own teacher replies (agent.training.tune.fit_soft_prompt; the teacher sees the
                  card without its example dialogue, as `card` does)
                  reconN and tunedN show what K soft vectors can carry at all, adapter aside.
  kvM[u][:HEADER] embedding.conditioning=kv: the card's system turn read once, only its header (HEADER: name,
                  the default, = through "You are NAME."; main = personae's whole instruction paragraph; none)
                  and its M highest tf-idf cells kept (df over the train cards' system turns), moved to
                  consecutive positions (agent/embedding/kv_cells.py); u: one cell per token id
  kvgist:PATH     kv40u's cells followed by the K learned gist cells of a scripts/train_gist.py file (the
                  adapter's vectors from the card pass's features, written by the LM with its reader LoRA on;
                  agent/embedding/gist.py)
  sum+MODE        MODE's soft slots (tfidfK, leadN, tunedN, adapter:PATH, ...) with the card's summary
                  (--summary-tokens, 40) as the system turn's card text; sum+tunedN fits the vectors with the
                  summary in the student's prompt (the teacher still reads the card)
Table (with each mode's mean prompt tokens, as personae eval counts them) to stdout, progress to stderr.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import math
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

VAL_PERSONAS = 12


def validation_set(data: Path, user: str):
    """(personas with the example dialogue removed, {slug: [ReferenceLine]}) for the last VAL_PERSONAS train personas."""
    from agent.config import read_yaml_mapping
    from agent.evaluation.data import ReferenceLine
    from agent.persona.store import load_persona
    from agent.training.contrast import card_lines

    train = list(read_yaml_mapping(data / "splits.yaml", "training data")["personas"]["train"])
    personas, refs = [], {}
    for slug in train[-VAL_PERSONAS:]:
        persona = load_persona(data / "personas" / slug)
        card = persona.card
        names = [w.lower().strip(",.") for w in card.name.split() if len(w) > 2]
        lines = [ReferenceLine(to, re.sub(r"\*[^*]*\*", "", text).strip()) for to, text in card_lines(card, user)]
        refs[slug] = [r for r in lines if len(r.text) > 20 and not any(n in r.text.lower() for n in names)]
        personas.append(dataclasses.replace(persona, card=dataclasses.replace(card, mes_example="")))
    return personas, refs, train


class TfIdfPrompt:
    """persona -> (K, d) real token embeddings of the K most distinctive tokens of its card, in card order."""

    def __init__(self, lm, train_cards, k: int):
        from agent.embedding.encoders import card_text

        self.lm, self.k, self.card_text = lm, k, card_text
        self.table = lm.model.get_input_embeddings().weight.detach()
        self.df = collections.Counter()
        for card in train_cards:
            self.df.update(set(self._ids(card)))
        self.n = len(train_cards)

    def _ids(self, card) -> list[int]:
        return self.lm.tokenizer(self.card_text(card))["input_ids"]

    def words(self, persona) -> list[int]:
        ids = self._ids(persona.card)
        tf = collections.Counter(ids)

        def score(t: int) -> float:
            if len(self.lm.tokenizer.decode([t]).strip()) < 3:  # punctuation, short function words
                return -1.0
            return tf[t] * math.log(self.n / (1 + self.df[t]))
        best = sorted(set(ids), key=score, reverse=True)[:self.k]
        return sorted(best, key=ids.index)

    def __call__(self, persona, drop=()):
        return self.table[self.words(persona)]  # (K, d)


class LeadPrompt(TfIdfPrompt):
    """persona -> (N, d) real token embeddings of the first N tokens of the card's own fields (description
    on), in order: the card cut to N tokens, read as soft slots."""

    def body(self, card) -> str:
        from agent.chat.prompt import DEFAULT_SYSTEM_PROMPT
        from agent.embedding.encoders import TEXT_USER
        from agent.persona.macros import substitute

        head = substitute(DEFAULT_SYSTEM_PROMPT, char=card.name, user=TEXT_USER)
        text = self.card_text(card)
        return text[len(head):].strip() if text.startswith(head) else text

    def ids_of(self, persona) -> list[int]:
        return self.lm.tokenizer(self.body(persona.card), add_special_tokens=False)["input_ids"][:self.k]

    def words(self, persona) -> list[int]:
        return self.ids_of(persona)


class ExtractPrompt(LeadPrompt):
    """persona -> (<= N, d) token embeddings of the card's most distinctive sentences (tf-idf per token, best
    sentences first while they fit in N tokens), kept in card order: an extractive summary."""

    def ids_of(self, persona) -> list[int]:
        text = re.sub(r"(?<!\n)\n(?!\n)", " ", self.body(persona.card))  # hard-wrapped lines joined
        sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
        tok = [self.lm.tokenizer(" " + s.strip(), add_special_tokens=False)["input_ids"] for s in sentences]

        def idf(t: int) -> float:
            return math.log(self.n / (1 + self.df[t])) if len(self.lm.tokenizer.decode([t]).strip()) >= 3 else 0.0
        score = [sum(map(idf, ids)) / max(1, len(ids)) ** 0.5 for ids in tok]
        chosen, used = set(), 0
        for i in sorted(range(len(tok)), key=lambda i: -score[i]):
            if used + len(tok[i]) <= self.k:
                chosen.add(i)
                used += len(tok[i])
        return [t for i in sorted(chosen) for t in tok[i]]


class StylePrompt(LeadPrompt):
    """persona -> (<= N, d) token embeddings of who the persona is and how it talks: the description's first
    sentence, then the personality field's sentences, then the rest of the description, while they fit."""

    def ids_of(self, persona) -> list[int]:
        card = persona.card

        def sentences(text: str) -> list[str]:
            from agent.persona.macros import substitute
            text = re.sub(r"\s+", " ", substitute(text, char=card.name, user="User")).strip()
            return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
        desc = sentences(card.description)
        order = desc[:1] + sentences(card.personality) + desc[1:]
        out = []
        for sentence in order:
            ids = self.lm.tokenizer((" " if out else "") + sentence, add_special_tokens=False)["input_ids"]
            if len(out) + len(ids) <= self.k:
                out += ids
        return out


class TunedPrompts:
    """persona -> (K, d) vectors fitted per persona by distillation from its card (cached per slug)."""

    def __init__(self, lm, chat, start, steps: int, examples: int, lr: float, work: Path, data: Path,
                 student_mode: str = "soft"):
        from agent.embedding.fusion import embedding_norm
        from agent.training.config import TrainConfig

        self.lm, self.chat, self.start, self.work = lm, chat, start, work
        self.steps, self.examples, self.lr = steps, examples, lr
        self.norm = embedding_norm(lm.model)
        self.cfg = TrainConfig(student_mode=student_mode, data_dir=str(data))
        self.fitted = {}

    def fit(self, persona, shown=None):
        from agent.training.tune import fit_soft_prompt

        soft, before, after, _ = fit_soft_prompt(self.lm, persona, self.start(persona), self.norm, self.cfg,
                                                 self.chat, self.work, steps=self.steps, lr=self.lr,
                                                 examples=self.examples, shown=shown)
        print(f"  tuned {persona.slug}: loss {before:.3f} -> {after:.3f}", file=sys.stderr)
        self.fitted[persona.slug] = soft

    def __call__(self, persona, drop=()):
        return self.fitted[persona.slug]


class ReconPrompts(TunedPrompts):
    """persona -> (K, d) vectors fitted so the LM reads the card's own text back from them (agent.training.tune
    .fit_card_prompt; the card here has no example dialogue)."""

    def fit(self, persona):
        from agent.training.tune import fit_card_prompt

        soft, before, after = fit_card_prompt(self.lm, persona, self.start(persona), self.norm, self.chat,
                                              steps=self.steps, lr=self.lr, seed=self.cfg.seed)
        print(f"  recon {persona.slug}: card CE {before:.3f} -> {after:.3f}", file=sys.stderr)
        self.fitted[persona.slug] = soft


def kv_cells(lm, train, data: Path, user: str, mode: str):
    """A PersonaKV on the transformers LM for mode kvM[:HEADER], df over the train cards' system turns."""
    from agent.chat.decoding import cache_kwarg
    from agent.chat.prompt import build_messages, render
    from agent.embedding.kv_cells import TfIdf, transformers_cells
    from agent.embedding.persona_kv import KVSettings, PersonaKV
    from agent.persona.store import load_persona

    def system_ids(slug):
        card = dataclasses.replace(load_persona(data / "personas" / slug).card, mes_example="")
        return render(lm.tokenizer, build_messages(card, [], user)[:1], 0, add_generation_prompt=False)[1]

    m, _, header = mode[2:].partition(":")
    unique = m.endswith("u")
    tfidf = TfIdf.from_ids(system_ids(s) for s in train)
    kwarg = cache_kwarg(lm.model)
    return PersonaKV(lm.tokenizer, tfidf, lambda plan: transformers_cells(lm.model, plan, kwarg),
                     KVSettings(m=int(m.rstrip("u")), header=header or "name", unique=unique))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modes", nargs="+", help="name | card | summaryN | tfidfK | leadN | extractN | styleN | "
                                                 "adapter:PATH | tunedN | reconN | kvM[u][:HEADER] | kvgist:PATH | "
                                                 "sum+MODE")
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tune-examples", type=int, default=8, help="teacher replies per persona for tunedN")
    parser.add_argument("--tune-k", type=int, default=8, help="soft vectors for tunedN / reconN (started at tfidfK)")
    parser.add_argument("--summary-tokens", type=int, default=40, help="summary budget of the sum+ modes")
    parser.add_argument("--tune-lr", type=float, default=3e-3, help="Adam learning rate for tunedN / reconN")
    parser.add_argument("-s", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, as for personae (e.g. encoder.text_layer=0 for a select adapter)")
    args = parser.parse_args()

    import torch

    from agent.agent import Agent
    from agent.config import load_config
    from agent.embedding.fusion import load_adapter
    from agent.embedding.reader import attach_reader, remove_reader
    from agent.conditioning import MODES, Mode
    from agent.evaluation.conditioning import Conditioning, PersonaModalities, SoftPrompts
    from agent.evaluation.metrics import identification
    from agent.persona.store import load_persona
    from agent.persona.summary import summary_card

    for given in args.modes:
        mode = given.removeprefix("sum+")
        if mode != given and (mode in ("name", "card") or mode.startswith("summary")):
            parser.error(f"{given!r}: sum+ goes only before a mode with soft slots")
        known = mode in ("name", "card") or re.fullmatch(r"(tfidf|lead|extract|style|tuned|recon|summary)\d+", mode) \
            or re.fullmatch(r"kv\d+u?(:(name|main|none))?", mode)
        if not (known or mode.startswith(("adapter:", "kvgist:"))):
            parser.error(f"unknown mode {mode!r}: choose name, card, summaryN, tfidfK, leadN, extractN, styleN, "
                         f"adapter:PATH, tunedN, reconN, kvM[u][:HEADER] or kvgist:PATH (the soft ones also as "
                         f"sum+MODE)")
        if mode.startswith(("adapter:", "kvgist:")) and not Path(mode.partition(":")[2]).is_file():
            parser.error(f"file {mode.partition(':')[2]} does not exist")
    config = load_config(None, [f"lm.threads={args.threads}", *args.set])
    agent = Agent(config)
    lm, user = agent.lm, config.chat.user_name
    personas, refs, train = validation_set(args.data, user)
    print(f"{len(personas)} validation personas, {sum(map(len, refs.values()))} lines, chance "
          f"{1 / len(personas):.3f}", file=sys.stderr)
    modalities = PersonaModalities(agent.persona_encoder, agent.home.cache_dir("embeddings"))
    rows = []
    summarise = functools.partial(summary_card, tokenizer=lm.tokenizer, max_tokens=args.summary_tokens)
    on_summary = Mode("sum+soft", card_text=True, summary=True, adapter="attention", named=True, chat=False,
                      about="soft slots and the card's summary")
    for mode in args.modes:
        began = time.perf_counter()
        with_summary = mode.startswith("sum+")
        label, mode = mode, mode.removeprefix("sum+")
        soft_mode = on_summary if with_summary else MODES["soft"]
        if mode in ("name", "card"):
            conditioning = Conditioning(mode, MODES[mode])
        elif mode.startswith("kvgist:"):
            from agent.embedding.gist import GistKV, load_gist

            gist, layer = load_gist(Path(mode[7:]), lm.model)  # attaches its reader (off but in the gist forward)
            cells = kv_cells(lm, train, args.data, user, "kv40u")
            kv = GistKV(lm.tokenizer, cells.tfidf, lm.model, gist, layer, cells.settings)
            conditioning = Conditioning(label, MODES["kv"], kv=kv)
        elif mode.startswith("kv"):
            conditioning = Conditioning(label, MODES["kv"], kv=kv_cells(lm, train, args.data, user, mode))
            for p in personas:
                print(f"  {mode} {p.slug}: {conditioning.prompt(lm.tokenizer, p, [], user, budget=4096).text[:400]!r}",
                      file=sys.stderr)
        elif mode.startswith("summary"):
            conditioning = Conditioning(mode, MODES["summary"], summarise=functools.partial(
                summary_card, tokenizer=lm.tokenizer, max_tokens=int(mode[7:])))
            for p in personas:
                print(f"  {mode} {p.slug}: {conditioning.card(p).description!r}", file=sys.stderr)
        elif mode.startswith(("tfidf", "lead", "extract", "style")):
            kind = {"tfidf": TfIdfPrompt, "lead": LeadPrompt, "extract": ExtractPrompt, "style": StylePrompt}[re.match(r"[a-z]+", mode)[0]]
            prompt = kind(lm, [load_persona(args.data / "personas" / s).card for s in train],
                          int(re.search(r"\d+", mode)[0]))
            for p in personas:
                print(f"  {mode} {p.slug}: {lm.tokenizer.decode(prompt.words(p))!r}", file=sys.stderr)
            conditioning = Conditioning(label, soft_mode, prompt, summarise=summarise)
        elif mode.startswith(("tuned", "recon")):
            start = TfIdfPrompt(lm, [load_persona(args.data / "personas" / s).card for s in train], args.tune_k)
            kind = TunedPrompts if mode.startswith("tuned") else ReconPrompts
            prompt = kind(lm, config.chat, start, int(mode[5:]), args.tune_examples, args.tune_lr,
                          agent.home.cache_dir("validation-teacher"), args.data,
                          student_mode="soft+card" if with_summary else "soft")
            for p in personas:
                if with_summary:  # the student reads the summary, the teacher the card
                    prompt.fit(p, shown=dataclasses.replace(p, card=summarise(p.card)))
                else:
                    prompt.fit(p)
            conditioning = Conditioning(label, soft_mode, prompt, summarise=summarise)
        else:
            soft = SoftPrompts(load_adapter(Path(mode[8:])), modalities, device=lm.device, dtype=lm.model.dtype)
            conditioning = Conditioning(label, soft_mode, soft, summarise=summarise)
            reader = attach_reader(lm.model, Path(mode[8:]))  # fusion.reader=lora|prefix: the LM reads with it
            if reader:
                print(f"  {label}: with its reader ({reader.kind}, rank {reader.rank})", file=sys.stderr)
        with torch.inference_mode():
            result = identification(lm, conditioning, personas, refs, user=user, progress=True)
        remove_reader(lm.model)  # the next mode reads with the plain LM
        tokens = sum(conditioning.prompt_tokens(lm.tokenizer, p, user) for p in personas) / len(personas)
        rows.append((label, result["identification_accuracy"], result["lines"], tokens, time.perf_counter() - began))
        print(f"  {label}: {rows[-1][1]:.3f} ({rows[-1][-1]:.0f} s)", file=sys.stderr)
    print(f"{'mode':<40} {'ident':>6} {'lines':>6} {'prompt tokens':>14} {'seconds':>8}")
    for mode, acc, lines, tokens, seconds in rows:
        print(f"{mode:<40} {acc:>6.3f} {lines:>6} {tokens:>14.1f} {seconds:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
