"""Group scenes on the embedded default's real weights (slow): the persona a message names answers it, as itself."""
import pytest

from agent.agent import Agent
from agent.chat.session import name_prefixes
from agent.config import load_config
from agent.models.packages import MissingWeights

pytestmark = pytest.mark.slow


@pytest.fixture()
def agent(tmp_path):
    agent = Agent(load_config(None, ["chat.temperature=0", "chat.max_new_tokens=32", "scene.max_auto_turns=0",
                                     "lm.threads=1"]), home=tmp_path)
    try:
        _ = agent.chat_backend
    except MissingWeights as e:
        pytest.skip(str(e))
    return agent


def test_a_message_naming_one_persona_is_answered_by_that_persona(agent):
    scene = agent.open_scene(["mara", "hale", "pixel"])
    for text, named in [("Professor Hale, what kind of beetle is this?", "hale"),
                        ("Pixel, can you get this lock open?", "pixel"),
                        ("Captain Mara, where do we sail tonight?", "mara")]:
        replies = list(scene.turn(text))
        reply = replies[0]
        reply.finish()
        assert [r.slug for r in replies] == [named]
        assert len(reply.text.split()) >= 3, reply.text
        others = [s.persona.name for slug, s in scene.members.items() if slug != named] + [scene.user_name]
        assert not any(f"\n{p}" in reply.text for name in others for p in name_prefixes(name)), reply.text
    stored = agent.history.messages(scene.id)
    assert [m.name for m in stored if m.role == "assistant"] == ["mara", "hale", "pixel", "mara"]
