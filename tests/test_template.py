"""Chat-template facts read from the tokenizer itself, and cutting streamed text at stop strings."""
from types import SimpleNamespace

from agent.chat.template import StopCutter, stop_token_ids, turn_markers, with_turn_markers
from agent.models.tiny import tiny_tokenizer

GEMMA_LIKE = ("{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
              "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def test_the_chatml_tokenizer_stops_on_its_end_of_turn_and_every_control_token():
    tok = tiny_tokenizer()
    ids = stop_token_ids(tok)
    for token in ("<|im_end|>", "<|im_start|>", "<|endoftext|>"):
        assert tok.convert_tokens_to_ids(token) in ids
    assert all(tid not in ids for tid in tok("Hello there", add_special_tokens=False)["input_ids"])
    assert set(turn_markers(tok)) == {"<|im_start|>", "<|im_end|>"}  # what the template writes; not <|endoftext|>


def test_another_template_family_is_read_from_its_own_tokens():
    """No list of model families: a Gemma-style template's markers come from the tokenizer it ships with."""
    from tokenizers import AddedToken

    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [AddedToken("<start_of_turn>", special=True),
                                                          AddedToken("<end_of_turn>", special=True)]})
    tok.chat_template = GEMMA_LIKE
    assert set(turn_markers(tok)) == {"<start_of_turn>", "<end_of_turn>"}
    assert tok.convert_tokens_to_ids("<end_of_turn>") in stop_token_ids(tok)
    # the model's own generation config adds its eos ids
    assert 7 in stop_token_ids(tok, SimpleNamespace(eos_token_id=[7, 8]))
    assert with_turn_markers(["\nAnn:", "<end_of_turn>"], tok) == ["\nAnn:", "<end_of_turn>", "<start_of_turn>"]


def test_a_template_that_refuses_the_probe_gives_no_markers():
    tok = tiny_tokenizer()
    tok.chat_template = "{{ raise_exception('system messages only') }}"
    assert turn_markers(tok) == ()


def test_the_cutter_holds_back_what_could_start_a_stop_string():
    stop = StopCutter(["END"])
    assert stop.feed("abc E") == "abc " and stop.feed("N") == "" and stop.feed("x") == "ENx"
    assert stop.feed(" done EN") == " done " and stop.feed("D more") == "" and stop.stopped
    assert stop.text == "abc ENx done " and stop.flush() == ""
    plain = StopCutter([])
    assert plain.feed("E") == "E" and plain.flush() == ""


def test_the_cutter_waits_for_the_rest_of_a_character_and_takes_whole_texts():
    cut = StopCutter(["\nAnn:"])
    assert cut.update("caf\ufffd") == "caf"  # half a multi-byte character: wait for it
    assert cut.update("café\nA") == "é"  # "\nA" could start "\nAnn:"
    assert cut.update("café\nAnn: hi") == "" and cut.stopped and cut.text == "café"
