"""Card macros: {{char}}/{{user}} in any case and legacy spelling, and <START> example blocks."""
from agent.persona.macros import split_examples, substitute


def test_substitute_any_case_and_spacing():
    text = "{{char}} greets {{User}}; {{ CHAR }} smiles at {{USER}}."
    assert substitute(text, char="Mira", user="Sam") == "Mira greets Sam; Mira smiles at Sam."


def test_substitute_legacy_tags():
    assert substitute("<BOT>: hi <user>, I'm <Char>", char="Mira", user="Sam") == "Mira: hi Sam, I'm Mira"


def test_substitute_is_a_single_pass():
    assert substitute("{{char}} and {{user}}", char="{{user}}", user="Sam") == "{{user}} and Sam"


def test_substitute_leaves_other_macros_alone():
    assert substitute("{{random:a,b}} {{char}", char="M", user="S") == "{{random:a,b}} {{char}"


def test_split_examples_on_start():
    text = "<START>\r\n{{user}}: hi\r\n{{char}}: hey\r\n\r\n<start>\n\n<START>\n{{char}}: bye\n"
    assert split_examples(text) == ["{{user}}: hi\n{{char}}: hey", "{{char}}: bye"]


def test_split_examples_without_separators_and_empty():
    assert split_examples("{{char}}: one block") == ["{{char}}: one block"]
    assert split_examples("") == [] and split_examples("<START>\n \n<START>") == []
