"""`evaluate(lm, config, EvalConfig)`: every metric for every conditioning mode on held-out data, the ablation and targets.

Hands a JSON-ready dict to `format_table` (the printed table), `plot` (drift over turns and identification
per mode, PNG) and `save_json`. Nothing here is tuned on the held-out set: it only reads it.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, Optional

from ..chat.sampling import SamplingOptions
from ..chat.template import stop_token_ids  # the chat's own end-of-turn ids, so the teacher stops where a chat would
from ..config import Config
from ..embedding.encoders import MODALITIES, PersonaEncoder
from ..paths import REPO_ROOT, resolve_home
from . import metrics
from .conditioning import MODES, Conditioning, PersonaModalities, SoftPrompts
from .config import EvalConfig
from .data import EvalData, load_eval_data
from ..models.embedder import Embedder, load_embedder

TEACHER = "card"  # fidelity compares every mode with the card-text prompt


def _resolve(path: str) -> Path:
    """As given when it exists (or is absolute), else relative to the repo root."""
    found = Path(path).expanduser()
    return found if found.is_absolute() or found.exists() else REPO_ROOT / found


def _adapters(embedding_adapter: str, config: EvalConfig, notes: list[str]) -> dict[str, Optional[Path]]:
    """fusion type -> adapter file, or None (with a note) when the modes that need it are skipped."""
    wanted = {MODES[m].adapter for m in config.modes} - {""}
    found: dict[str, Optional[Path]] = {}
    refs = {"attention": ("soft", config.adapter or embedding_adapter, "eval.adapter"),
            "weighted": ("weighted", config.weighted_adapter, "eval.weighted_adapter")}
    for fusion in sorted(wanted):
        modes, ref, key = refs[fusion]
        path = _resolve(ref) if ref else None
        if path is None or not path.is_file():
            notes.append(f"{modes} modes skipped: " + (f"no {fusion} adapter at {path} ({key}; train one with "
                                                       f"`personae train`)" if path else f"{key} is not set"))
            path = None
        found[fusion] = path
    return found


def build_conditionings(lm, settings: Config, config: EvalConfig, notes: list[str], *,
                        modalities: PersonaModalities) -> dict[str, Conditioning]:
    """mode name -> Conditioning for every mode of config.modes that can run (the others get a note).

    settings: the main config (embedding.adapter, embedding.summary_tokens); modalities: persona -> its tokens.
    """
    from ..embedding.fusion import load_adapter
    from ..embedding.reader import attach_reader, remove_reader
    from ..persona.summary import summary_card

    adapters = _adapters(settings.embedding.adapter, config, notes)
    soft_prompts: dict[str, SoftPrompts] = {}
    reader = None
    for fusion, path in sorted(adapters.items()):  # attention first: its reader is the one the LM carries
        if path is None:
            continue
        if reader is not None:  # one LM reads every soft prompt with the reader it carries
            notes.append(f"the {fusion} modes skipped: the LM carries {reader}'s reader, which would read their "
                         f"vectors too; evaluate them in a run of their own")
            continue
        if attach_reader(lm.model, path):  # fusion.reader: the LM reads this adapter's vectors with it
            reader = path.name
            if soft_prompts:  # it would read the modes loaded before it too
                remove_reader(lm.model)
                notes.append(f"the {fusion} modes skipped: {path.name} carries a reader, which would read the "
                             f"other adapter's vectors too; evaluate them in a run of their own")
                continue
            notes.append(f"the {fusion} modes read with the reader saved in {path.name}")
        adapter = load_adapter(path)
        if adapter.config.type != fusion:
            notes.append(f"the {fusion} modes read {path.name}, a {adapter.config.type} adapter")
        soft_prompts[fusion] = SoftPrompts(adapter, modalities, device=lm.device, dtype=lm.model.dtype)
    tokens = settings.embedding.summary_tokens

    def summarise(card):
        return summary_card(card, lm.tokenizer, tokens)

    out = {}
    for name in config.modes:
        mode = MODES[name]
        if mode.soft and mode.adapter not in soft_prompts:
            continue
        kv = None
        if mode.kv:
            from ..chat.backends import TransformersBackend
            from ..embedding.persona_kv import load_persona_kv

            kv = load_persona_kv(settings.embedding, TransformersBackend(lm))
        out[name] = Conditioning(name, mode, soft_prompts.get(mode.adapter), summarise=summarise if mode.summary else None,
                                 kv=kv)
    return out


def _ablation_students(conditionings: dict[str, Conditioning], data: EvalData, notes: list[str]) -> dict:
    """'soft-<modality>' -> soft with that modality masked out, for each modality some persona has."""
    soft = conditionings.get("soft")
    if soft is None:
        notes.append("ablation skipped: it drops modalities from the soft mode, which was not evaluated")
        return {}
    students, skipped = {}, {}
    for modality in MODALITIES:
        present = sum(soft.soft_prompts.modalities(p)[modality].present for p in data.personas)
        if not present or modality not in soft.soft_prompts.adapter.dims:
            skipped[modality] = (f"no held-out persona has {modality} tokens (encoder off, weights or files "
                                 f"missing) or the adapter does not read them: dropping it changes nothing")
            continue
        students[f"soft-{modality}"] = Conditioning(f"soft-{modality}", soft.mode, soft.soft_prompts, drop=(modality,))
    return {"students": students, "skipped": skipped}


def targets(modes: dict[str, dict]) -> dict[str, dict]:
    """The issue's targets on held-out personas, each {met: true|false|null, rule, numbers}; null: a mode is missing."""
    def metric(mode: str, key: str) -> Optional[float]:
        return modes[mode][key] if mode in modes else None

    ident = {m: metric(m, "identification_accuracy") for m in ("card", "soft", "soft+card", "weighted")}
    tokens = {m: metric(m, "prompt_tokens") for m in ("card", "soft")}

    def check(rule: str, numbers: dict, test) -> dict:
        met = None if any(v is None for v in numbers.values()) else bool(test(**numbers))
        return {"met": met, "rule": rule, "numbers": numbers}

    return {
        "soft_keeps_identification": check("soft identification >= 0.8 x card identification",
                                           {"soft": ident["soft"], "card": ident["card"]},
                                           lambda soft, card: soft >= 0.8 * card),
        "soft_prompt_cost": check("soft prompt_tokens <= card prompt_tokens / 5",
                                  {"soft": tokens["soft"], "card": tokens["card"]},
                                  lambda soft, card: soft <= card / 5),
        "soft_beats_weighted": check("soft identification > weighted identification (same mode, no card text)",
                                     {"soft": ident["soft"], "weighted": ident["weighted"]},
                                     lambda soft, weighted: soft > weighted),
        "soft_card_no_harm": check("soft+card identification >= card identification - 0.02",
                                   {"soft_card": ident["soft+card"], "card": ident["card"]},
                                   lambda soft_card, card: soft_card >= card - 0.02),
    }


class _Clock:
    """Seconds spent per section of a run: clock(key, fn, *args) calls fn and adds its time to seconds[key]."""

    def __init__(self):
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def __call__(self, key: str, fn, *args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[key] = round(self.seconds.get(key, 0.0) + time.perf_counter() - t, 2)
        return out

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": round(time.perf_counter() - self.start, 1)}


def _mode_results(lm, conditioning: Conditioning, data: EvalData, config: EvalConfig, fid: dict, *, chat,
                  embed: Embedder, clock: _Clock, progress: bool) -> dict:
    """Identification, drift, break rate and prompt tokens of one mode, with its fidelity from `fid`."""
    name, user = conditioning.name, chat.user_name
    reply_chat = dataclasses.replace(chat, max_new_tokens=config.reply_tokens, seed=config.seed)
    drift_chat = dataclasses.replace(reply_chat, context_tokens=config.drift_context_tokens)
    ident = clock(f"identification {name}", metrics.identification, lm, conditioning, data.personas,
                  data.references, user=user, progress=progress)
    curve = clock(f"drift {name}", metrics.drift, lm, conditioning, data.personas[:config.drift_personas],
                  data.sample_turns(config.drift_turns, f"{config.seed}-drift"), chat=drift_chat, embed=embed,
                  progress=progress)
    breaks = {"break_rate": None, "replies": 0}
    if data.adversarial:
        script = metrics.adversarial_script(data.adversarial, len(data.personas), config.break_turns, config.seed)
        breaks = clock(f"break {name}", metrics.break_rate, lm, conditioning, data.personas, script,
                       chat=reply_chat, embed=embed, similarity_floor=config.break_similarity_floor,
                       progress=progress)
    cost = metrics.prompt_tokens(lm, conditioning, data.personas, user=user)
    return {
        "about": conditioning.mode.about,
        "fidelity_kl": fid[name]["fidelity_kl"], "top1_agreement": fid[name]["top1_agreement"],
        "identification_accuracy": ident["identification_accuracy"],
        "drift": {k: v for k, v in curve.items() if k != "transcripts"},
        "break_rate": breaks["break_rate"], "prompt_tokens": cost["prompt_tokens"],
        "detail": {"fidelity": {k: fid[name][k] for k in ("tokens", "cases")},
                   "identification": {k: ident[k] for k in ("lines", "per_persona")},
                   "break": {k: v for k, v in breaks.items() if k != "break_rate"},
                   "prompt_tokens": cost["per_persona"], "drift_transcripts": curve["transcripts"]},
    }


def _ablation_results(lm, ablation: dict, data: EvalData, fid: dict, *, user: str, clock: _Clock,
                      progress: bool) -> dict:
    """modality -> soft's identification and fidelity with it masked out, or {skipped: why}."""
    dropped = {}
    for name, student in ablation.get("students", {}).items():
        ident = clock(f"identification {name}", metrics.identification, lm, student, data.personas,
                      data.references, user=user, progress=progress)
        dropped[student.drop[0]] = {"identification_accuracy": ident["identification_accuracy"],
                                    "fidelity_kl": fid[name]["fidelity_kl"], "top1_agreement": fid[name]["top1_agreement"]}
    dropped.update({m: {"skipped": why} for m, why in ablation.get("skipped", {}).items()})
    return dropped


def evaluate(lm, settings: Config, config: EvalConfig = EvalConfig(), *, home=None,
             encoder: Optional[Callable[[], PersonaEncoder]] = None, progress: bool = True,
             embed: Optional[Embedder] = None) -> dict:
    """Runs every metric for every mode of `config` with the LM `lm` (`LoadedLM`) and `settings`' chat options.

    settings: the main `Config` (chat, embedding, encoders); home: the personae home or its folder (the
    embedding cache); encoder: builds the `PersonaEncoder` on first use (default: the one settings names).
    embed: texts -> unit vectors for drift (default: MiniLM from settings.embedder). Returns the JSON-ready
    results: config, held_out, chance, modes{name: metrics}, ablation, targets, notes, seconds.
    """
    from ..embedding.load import load_persona_encoder

    clock, notes = _Clock(), []
    home = resolve_home(home)
    data = load_eval_data(_resolve(config.data_dir), personas=config.personas,
                          reference_lines=config.reference_lines, seed=config.seed)
    chat = settings.chat
    modalities = PersonaModalities(encoder or (lambda: load_persona_encoder(settings, lm, home=home)),
                                   home.cache_dir("embeddings"))
    conditionings = build_conditionings(lm, settings, config, notes, modalities=modalities)
    embed = embed or load_embedder(settings.embedder.name_or_path)
    ablation = _ablation_students(conditionings, data, notes) if config.ablation else {}

    teacher = conditionings.get(TEACHER) or Conditioning(TEACHER, MODES[TEACHER])
    cases = [(p, turn) for p in data.personas for turn in data.sample_turns(config.n_turns, f"{config.seed}-{p.slug}")]
    options = SamplingOptions(max_new_tokens=config.reply_tokens, temperature=0.0,
                              repetition_penalty=chat.repetition_penalty, eos_token_ids=stop_token_ids(lm.tokenizer, lm.model.generation_config))
    fid = clock("fidelity", metrics.fidelity, lm, teacher, {**conditionings, **ablation.get("students", {})}, cases,
                user=chat.user_name, options=options, progress=progress)
    modes = {}
    for name, conditioning in conditionings.items():
        modes[name] = _mode_results(lm, conditioning, data, config, fid, chat=chat, embed=embed, clock=clock,
                                    progress=progress)
        if progress:
            print(f"[personae eval] {name}: done ({clock.total()['total']:.0f} s so far)", flush=True)
    dropped = _ablation_results(lm, ablation, data, fid, user=chat.user_name, clock=clock, progress=progress)
    return {
        "config": {**dataclasses.asdict(config), "lm": lm.source, "user": chat.user_name, "teacher": TEACHER,
                   "summary_tokens": settings.embedding.summary_tokens, "modes_run": list(conditionings)},
        "held_out": {"personas": [p.slug for p in data.personas], "user_turns": len(data.turns),
                     "adversarial_turns": len(data.adversarial),
                     "reference_lines": sum(len(v) for v in data.references.values())},
        "chance": 1 / len(data.personas),
        "modes": modes,
        "ablation": {"mode": "soft", "dropped": dropped} if ablation else {},
        "targets": targets(modes),
        "notes": notes,
        "seconds": clock.total(),
    }


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(results: dict) -> str:
    """The results as the text table `personae eval` prints: one row per mode, then ablation, targets, notes."""
    head = ("mode", "fid KL", "top-1", "ident", "drift@1", "drift@N", "break", "chat brk", "tokens")
    rows = [head]
    for name, m in results["modes"].items():
        rows.append((name, _fmt(m["fidelity_kl"]), _fmt(m["top1_agreement"]), _fmt(m["identification_accuracy"]),
                     _fmt(m["drift"]["at_turn_1"]), _fmt(m["drift"]["at_last_turn"]), _fmt(m["break_rate"]),
                     _fmt(m["drift"]["break_rate_in_chat"]), _fmt(m["prompt_tokens"], 1)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    held = results["held_out"]
    n_turns = next(iter(results["modes"].values()))["drift"]["last_turn"] if results["modes"] else 0
    lines.append(f"{len(held['personas'])} held-out personas, chance identification {results['chance']:.3f}; "
                 f"drift@N is turn {n_turns}; fid KL is KL(card || mode) in nats per token; break: adversarial "
                 f"turns, chat brk: the long chat's ordinary turns")
    dropped = results.get("ablation", {}).get("dropped", {})
    if dropped:
        lines.append("ablation (soft, one modality masked out):")
        for modality, m in dropped.items():
            lines.append(f"  - {modality}: " + (m["skipped"] if "skipped" in m else
                                                 f"ident {_fmt(m['identification_accuracy'])}, "
                                                 f"fid KL {_fmt(m['fidelity_kl'])}, top-1 {_fmt(m['top1_agreement'])}"))
    lines.append("targets:")
    for name, t in results["targets"].items():
        state = {True: "met", False: "NOT MET", None: "not evaluated"}[t["met"]]
        numbers = ", ".join(f"{k}={_fmt(v)}" for k, v in t["numbers"].items())
        lines.append(f"  - {name}: {state} ({t['rule']}; {numbers})")
    lines.extend(f"note: {note}" for note in results.get("notes", []))
    lines.append(f"took {results['seconds']['total']:.0f} s")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> Path:
    """A PNG: drift (cosine to the card) over the turns of the long chat per mode, and identification per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = results["modes"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, m in modes.items():
        curve = m["drift"]["curve"]
        left.plot(range(1, len(curve) + 1), curve, label=name, marker="." if len(curve) < 15 else None)
    left.set(xlabel="turn of the long chat", ylabel="MiniLM cosine(reply, card)", title="drift")
    left.legend(fontsize=8)
    names = list(modes)
    right.bar(names, [modes[n]["identification_accuracy"] for n in names], color="tab:blue")
    right.axhline(results["chance"], color="grey", linestyle="--", label=f"chance {results['chance']:.2f}")
    right.set(ylim=(0, 1), ylabel="identification accuracy", title="identification on held-out personas")
    right.legend(fontsize=8)
    right.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return path


def save_json(results: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
