"""The `personae` command line: typed subcommands whose docstrings are their --help.

Every command builds an `Agent` from --config/--set/--home and hands off to a front-end or store.
Errors print one line to stderr and exit non-zero: 2 for bad input (config, persona, card), 3 for
missing weights, 1 for anything else. Names and card text are printed through `for_terminal`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml

from .untrusted_text import for_terminal, lone_surrogate, surrogate_problem

app = typer.Typer(help="personae: role-play characters that stay in character.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
persona_app = typer.Typer(help="List, show, import and export personas (Character Cards).", no_args_is_help=True)
app.add_typer(persona_app, name="persona")
lore_app = typer.Typer(help="Import lorebooks (world info) and attach them to personas.", no_args_is_help=True)
app.add_typer(lore_app, name="lore")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (default: the embedded default).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a config key: -s chat.temperature=0.2")]
HomeOpt = Annotated[Optional[Path], typer.Option("--home", help="Folder for personas, sessions and caches (env PERSONAE_HOME).")]
PersonaOpt = Annotated[Optional[str], typer.Option("--persona", "-p", help="Persona name, slug or folder.")]
PersonasOpt = Annotated[Optional[list[str]], typer.Option("--persona", "-p", help="Persona name, slug or folder; "
                                                           "name several for a group scene.")]


def _agent(config: Optional[Path], overrides: Optional[list[str]], home: Optional[Path]):
    from .agent import Agent
    from .config import load_config

    return Agent(load_config(config, overrides or ()), home=home)


@app.command()
def chat(persona: PersonasOpt = None, resume: Annotated[bool, typer.Option(help="Continue this persona's (or these personas' scene's) last conversation.")] = False,
         user: Annotated[Optional[str], typer.Option(help="Your name in the chat ({{user}}).")] = None,
         voice: Annotated[bool, typer.Option(help="Speak every reply in the persona's voice as it is written.")] = False,
         config: ConfigOpt = None, set: SetOpt = None, home: HomeOpt = None):
    """Chat with a persona (or several, in a group scene) in the terminal; replies stream as they are written."""
    from .frontends.terminal import TerminalChat

    terminal = TerminalChat(_agent(config, set, home), voice=voice)
    terminal.open(persona, resume=resume, user_name=user)
    raise typer.Exit(terminal.loop())


@app.command()
def prompt(persona: PersonasOpt = None,
           message: Annotated[Optional[str], typer.Option("--message", "-m", help="The user's next message.")] = None,
           resume: Annotated[bool, typer.Option(help="Use this persona's (or scene's) last conversation as history.")] = False,
           config: ConfigOpt = None, set: SetOpt = None, home: HomeOpt = None):
    """Print the exact prompt the model would see for the next turn, with token counts per part; with several
    personas, the group scene's prompt for the persona that speaks next."""
    agent = _agent(config, set, home)
    if persona and len(persona) > 1:
        print(for_terminal(agent.scene_preview(persona, message, resume=resume), lines=True))
    else:
        print(for_terminal(agent.prompt_preview(persona[0] if persona else None, message, resume=resume), lines=True))


@app.command()
def transcribe(file: Path, language: Annotated[Optional[str], typer.Option(help="Language code such as en; default: detect.")] = None,
               config: ConfigOpt = None, set: SetOpt = None, home: HomeOpt = None):
    """Print what is said in an audio file (wav, mp3, ogg/opus, webm, m4a, flac)."""
    transcript = _agent(config, set, home).transcribe(file, language=language)
    if transcript.text:
        print(transcript.text)
    else:
        print(f"personae: no text in {file}: {transcript.reason}", file=sys.stderr)


@app.command()
def speak(text: str, persona: PersonaOpt = None,
          output: Annotated[Path, typer.Option("--output", "-o", help="WAV file to write.")] = Path("speech.wav"),
          config: ConfigOpt = None, set: SetOpt = None, home: HomeOpt = None):
    """Write TEXT spoken in the persona's voice to a WAV file."""
    from .speech.audio import write_wav

    samples, rate = _agent(config, set, home).speak(persona, text)
    print(f"wrote {write_wav(output, samples, rate)} ({len(samples) / rate:.1f} s)")


@app.command()
def serve(host: Annotated[Optional[str], typer.Option(help="Address to listen on (default 127.0.0.1, env PERSONAE_HOST); "
                                                           "any but loopback needs PERSONAE_API_KEY.")] = None,
          port: Annotated[Optional[int], typer.Option(help="Port (default 8000, env PERSONAE_PORT; 0 picks a free one).")] = None,
          open_page: Annotated[bool, typer.Option("--open", help="Open the web chat in a browser once it is up.")] = False,
          config: ConfigOpt = None, set: SetOpt = None, home: HomeOpt = None):
    """Serve every persona as a model over an OpenAI-compatible HTTP API (chat, speech, card import/export),
    and the web chat at / ."""
    from .server import serve as run_server

    run_server(_agent(config, set, home), host=host, port=port, open_page=open_page)


@app.command("discord")
def discord_bot(config: ConfigOpt = None, set: SetOpt = None, home: HomeOpt = None):
    """Run every persona as a Discord bot; the token comes from the DISCORD_TOKEN environment variable."""
    from .discord_bot import BotError, read_token, run_bot

    try:
        read_token()  # fail fast, before anything loads
        run_bot(_agent(config, set, home))
    except BotError as e:
        print(f"personae: {e}", file=sys.stderr)
        raise typer.Exit(2)


@app.command()
def train(train_config: Annotated[Optional[Path], typer.Option("--train-config", help="YAML of training options (agent/training/config.py).")] = None,
          train_set: Annotated[Optional[list[str]], typer.Option("--train-set", "-t", help="Override a training option: -t epochs=2")] = None,
          resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint of the same run.")] = False,
          config: ConfigOpt = None, set: SetOpt = None, home: HomeOpt = None):
    """Train the persona-embedding adapter by context distillation (encoders and LM stay frozen)."""
    from .training import load_train_config, train as run_training

    train_cfg = load_train_config(train_config, train_set or ())  # validated before any model loads
    agent = _agent(config, set, home)
    summary = run_training(agent.config, train_cfg, lm=agent.lm, home=agent.home, resume=resume)
    shown = {k: v for k, v in summary.items() if k != "losses"}  # every step's loss is in the .json beside the adapter
    print(yaml.safe_dump(shown, sort_keys=False), end="")


@app.command()
def tune(persona: Annotated[str, typer.Option("--persona", "-p", help="Persona name, slug or folder.")],
         steps: Annotated[int, typer.Option(help="Optimisation steps.")] = 30,
         lr: Annotated[float, typer.Option(help="Learning rate.")] = 3e-3,
         examples: Annotated[int, typer.Option(help="Teacher replies to fit.")] = 8,
         output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to save the tuned soft prompt.")] = None,
         config: ConfigOpt = None, set: SetOpt = None, home: HomeOpt = None):
    """Fit one persona's soft prompt (starting from the trained adapter's output) for the closest fit."""
    from .training import tune as run_tune

    agent = _agent(config, set, home)
    summary = run_tune(agent.config, persona, lm=agent.lm, home=agent.home, steps=steps, lr=lr, examples=examples,
                       out=output)
    print(yaml.safe_dump(summary, sort_keys=False), end="")


@app.command("eval")
def evaluate_command(json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON to this file.")] = None,
                     plot_path: Annotated[Optional[Path], typer.Option("--plot", help="Draw drift over turns and identification per mode as a PNG.")] = None,
                     eval_config: Annotated[Optional[Path], typer.Option("--eval-config", "-e", help="YAML of eval options (agent/evaluation/config.py).")] = None,
                     eval_set: Annotated[Optional[list[str]], typer.Option("--eval-set", "-E", help="Override an eval option: -E personas=4 -E modes=card,none")] = None,
                     quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
                     config: ConfigOpt = None, set: SetOpt = None, home: HomeOpt = None):
    """Score card, summary, soft, soft+card and weighted conditioning on the held-out personas and turns."""
    from .evaluation.config import load_eval_config
    from .evaluation.run import evaluate, format_table, plot, save_json

    eval_cfg = load_eval_config(eval_config, eval_set or ())
    agent = _agent(config, set, home)
    results = evaluate(agent.lm, agent.config, eval_cfg, home=agent.home, progress=not quiet)
    print(format_table(results))
    if json_path:
        save_json(results, json_path)
    if plot_path:
        plot(results, plot_path)


@app.command("config")
def show_config(config: ConfigOpt = None, set: SetOpt = None):
    """Print the effective configuration as YAML (defaults, file and overrides merged)."""
    from .config import load_config, to_dict

    print(yaml.safe_dump(to_dict(load_config(config, set or ())), sort_keys=False), end="")


@persona_app.command("list")
def persona_list(home: HomeOpt = None, config: ConfigOpt = None):
    """List the available personas (yours first, then the shipped examples)."""
    for p in _agent(config, None, home).personas.list():
        print(f"{p.slug:20} {for_terminal(p.name):28} {p.folder}")


@persona_app.command("show")
def persona_show(name: str, home: HomeOpt = None, config: ConfigOpt = None):
    """Print a persona's card as YAML."""
    p = _agent(config, None, home).personas.get(name)
    print(f"# {p.folder}")
    print(for_terminal(yaml.safe_dump(p.card.to_fields(), sort_keys=False, allow_unicode=True), lines=True), end="")


@persona_app.command("import")
def persona_import(file: Path, name: Annotated[Optional[str], typer.Option(help="Save under this name instead of the card's.")] = None,
                   replace: Annotated[bool, typer.Option(help="Replace an existing persona of the same name.")] = False,
                   home: HomeOpt = None, config: ConfigOpt = None):
    """Import a Character Card (V1/V2/V3) from PNG, JSON or CHARX."""
    p = _agent(config, None, home).personas.import_file(file, name=name, replace=replace)
    print(f"imported '{for_terminal(p.name)}' as {p.slug} into {p.folder}")


@persona_app.command("create")
def persona_create(idea: Annotated[Optional[str], typer.Argument(help="The character in a line; with --from-card, what changes.")] = None,
                   name: Annotated[Optional[str], typer.Option(help="The character's name (else the LM invents one).")] = None,
                   seed: Annotated[Optional[int], typer.Option(help="Fix sampling for a reproducible card.")] = None,
                   portrait: Annotated[Optional[Path], typer.Option(help="An image to use as the portrait (CLIP reads it where enabled).")] = None,
                   from_card: Annotated[Optional[str], typer.Option("--from-card", help="Make a variant of this card file or persona.")] = None,
                   vary: Annotated[Optional[str], typer.Option(help="With --from-card: what changes (else IDEA).")] = None,
                   replace: Annotated[bool, typer.Option(help="Replace an existing persona of the same name.")] = False,
                   config: ConfigOpt = None, set: SetOpt = None, home: HomeOpt = None):
    """Write a whole persona (card, greetings, examples, lorebook, voice) from a one-line idea with the chat LM."""
    text = vary or idea
    if not text or (vary and idea):
        print("personae: persona create: give the idea, or --from-card CARD with --vary CHANGES (not both an idea "
              "and --vary)", file=sys.stderr)
        raise typer.Exit(2)
    card_file = Path(from_card).expanduser() if from_card and Path(from_card).expanduser().is_file() else None
    created = _agent(config, set, home).create_persona(text, name=name, seed=seed, portrait=portrait, replace=replace,
                                                      from_card=card_file, from_persona=None if card_file else from_card)
    p, draft = created.persona, created.draft
    print(f"created '{for_terminal(p.name)}' as {p.slug} in {p.folder} ({draft.seconds:.1f} s); "
          f"chat: personae chat --persona {p.slug}")


@persona_app.command("export")
def persona_export(name: str,
                   format: Annotated[str, typer.Option("--format", "-f", help="png | json | charx")] = "png",
                   output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File to write (default: SLUG.FORMAT).")] = None,
                   home: HomeOpt = None, config: ConfigOpt = None):
    """Export a persona as a Character Card that SillyTavern and friends read."""
    agent = _agent(config, None, home)
    persona = agent.personas.get(name)
    path = agent.personas.export(name, format, output or Path(f"{persona.slug}.{format}"))
    print(f"wrote {path}")


@lore_app.command("import")
def lore_import(file: Path, name: Annotated[Optional[str], typer.Option(help="Save under this name instead of the book's.")] = None,
                persona: Annotated[Optional[str], typer.Option("--persona", "-p", help="Also attach it to this persona.")] = None,
                replace: Annotated[bool, typer.Option(help="Replace an imported lorebook of the same name.")] = False,
                home: HomeOpt = None, config: ConfigOpt = None):
    """Import a lorebook: SillyTavern world info JSON, lorebook_v3, or a card JSON's character_book."""
    agent = _agent(config, None, home)
    chosen = agent.personas.get(persona) if persona else None
    slug, book = agent.lore.import_file(file, name=name, replace=replace)
    print(f"imported lorebook '{for_terminal(book.name or slug)}' ({len(book.entries)} entries) as {slug}")
    if chosen is not None:
        agent.lore.attach(chosen.slug, slug)
        print(f"attached {slug} to persona {chosen.slug}")


@lore_app.command("list")
def lore_list(home: HomeOpt = None, config: ConfigOpt = None):
    """List imported lorebooks and the personas they are attached to."""
    agent = _agent(config, None, home)
    attached = agent.lore.attachments()
    for slug in agent.lore.names():
        book = agent.lore.get(slug)
        users = ", ".join(p for p, books in attached.items() if slug in books) or "-"
        print(f"{slug:24} {len(book.entries):4} entries   personas: {users}")


@lore_app.command("show")
def lore_show(name: str, home: HomeOpt = None, config: ConfigOpt = None):
    """Print a lorebook's entries: keys, position, order, flags."""
    book = _agent(config, None, home).lore.get(name)
    print(f"# {for_terminal(book.name or name)}: scan_depth {book.scan_depth}, token_budget {book.token_budget}, "
          f"recursive_scanning {book.recursive_scanning}")
    for e in book.entries:
        flags = [f for f, on in (("constant", e.constant), ("selective", e.selective), ("regex", e.use_regex),
                                 ("disabled", not e.enabled)) if on]
        print(f"- {for_terminal(e.name or e.uid)}: keys {list(e.keys)} order {e.insertion_order} {e.position}"
              + (f" depth {e.depth}" if e.position == "depth" else "") + (f" [{', '.join(flags)}]" if flags else ""))


@lore_app.command("attach")
def lore_attach(name: str, persona: Annotated[str, typer.Option("--persona", "-p", help="Persona name, slug or folder.")],
                detach: Annotated[bool, typer.Option(help="Detach instead.")] = False,
                home: HomeOpt = None, config: ConfigOpt = None):
    """Attach an imported lorebook to a persona (every session of it); /lore attach does it for one chat."""
    agent = _agent(config, None, home)
    chosen = agent.personas.get(persona)
    (agent.lore.detach if detach else agent.lore.attach)(chosen.slug, name)
    print(f"{'detached' if detach else 'attached'} {agent.lore.slug(name)} {'from' if detach else 'to'} {chosen.slug}")


@lore_app.command("remove")
def lore_remove(name: str, home: HomeOpt = None, config: ConfigOpt = None):
    """Delete an imported lorebook (and its attachments)."""
    _agent(config, None, home).lore.remove(name)
    print(f"removed {name}")


def _exit(text: str, code: int) -> None:
    """Prints `text` to stderr with any registered secret (the Discord token) cut out, then exits with `code`."""
    from .logs import redacted

    print(redacted(text), file=sys.stderr)
    sys.exit(code)


def main() -> None:
    from .logs import setup_logging

    setup_logging()  # before anything runs, so progress lines of long jobs show
    from .config import ConfigError
    from .models.engine import EngineError
    from .models.gguf import GGUFError
    from .models.packages import MissingWeights
    from .persona.card import CardError
    from .persona.lorebook import LoreError
    from .persona.store import UnknownPersona
    from .speech.audio import AudioError

    import click

    for i, arg in enumerate(sys.argv[1:], 1):  # bytes that are not UTF-8 arrive as lone surrogates
        found = lone_surrogate(arg)
        if found:
            print(f"personae: argument {i} ({for_terminal(arg)}) {surrogate_problem(found[1])}; "
                  "is it UTF-8?", file=sys.stderr)
            sys.exit(2)
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except click.ClickException as e:  # usage errors: bad option, missing argument
        e.show()
        sys.exit(e.exit_code)
    except click.Abort:
        sys.exit(130)
    except MissingWeights as e:
        _exit(f"personae: missing weights: {e}", 3)
    except EngineError as e:  # the LM engine (lm.url) is down, refused or answered wrongly
        _exit(f"personae: {e}", 3)
    except (ConfigError, CardError, LoreError, UnknownPersona, AudioError, FileNotFoundError, GGUFError) as e:
        _exit(f"personae: {e}", 2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # the last resort: one line, not a traceback, unless asked for
        import os
        import traceback

        if os.environ.get("PERSONAE_DEBUG"):
            _exit(traceback.format_exc().rstrip(), 1)  # printed here, not re-raised: redacted like the log
        _exit(f"personae: error: {type(e).__name__}: {e} (set PERSONAE_DEBUG=1 for the traceback)", 1)
