"""The break detector: does a reply leave character? A fixed list of documented rules, each a regular expression.

`detect_break` returns the names of the rules that fire (empty: in character). The chat's guard
(agent/chat/guard.py) checks replies with it before they are shown; `personae eval`'s break rate
(agent/evaluation/metrics.py) counts replies with any. The rules are written from what leaving character
looks like, not fitted to any model's replies.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Optional, Sequence

from ..persona.card import CharacterCard

_ALSO = r"(?:only\s+|just\s+|merely\s+|simply\s+|actually\s+|really\s+)?"
# a name or noun set off before the claim: "a LinguaLingua - " / "Lingua, " before "a linguistic AI"
_APPOSITIVE = r"(?:(?:an?\s+[\w'-]+|(?-i:[A-Z][\w'-]*))\s*[-–—,:]\s*(?=(?:an?|the)\s))?"
_SELF = rf"\b(?:(?:i\s*am|i'm|i’m|im|being|i\s+was)\s+{_ALSO}{_APPOSITIVE}|as\s+{_ALSO})" \
        r"(?:(?:an?|your|the)\s+(?:[\w-]+\s+){0,2})?"  # up to two words before the noun: "a new AI", "a text-based AI"
_ASSISTANT = r"(?:(?:large\s+)?language\s+model|llm|chat\s?bot|(?:ai|virtual|digital|helpful)\s+assistant)\b"
_AI = r"(?:ai|a\.i\.|artificial\s+intelligence|bot|(?:computer|software)\s+program|program(?=\s*[.,!?;:]|\s*$)|" \
      r"machine\s+learning\s+model|neural\s+network)\b"
# what only a language model says of itself, whoever its character is (an android too)
_LLM_TALK = re.compile(_SELF + _ASSISTANT + r"|\b(?:capable\s+of|able\s+to|designed\s+to|built\s+to|i\s+can)\s+"
                       r"(?:process|processing|analy[sz]e|analy[sz]ing|handle|handling)\s+(?:vast|large|huge|massive|"
                       r"enormous)\s+(?:amounts|quantities|volumes)\s+of\s+(?:data|information|text)\b", re.I)
# speaking of itself as a machine intelligence: a break unless its card makes it one (see is_machine)
_AI_CLAIM = re.compile(_SELF + _AI + r"|\b(?:i\s*am|i'm|i’m)\s+(?:equipped|powered|driven|run)\s+(?:with|by|on)\s+"
                       r"(?:an?\s+|the\s+)?(?:[\w-]+\s+){0,2}(?:ai|artificial\s+intelligence|neural\s+network)\b|"
                       r"\b(?:i\s+was|i\s*am|i'm|i’m|i've\s+been|i\s+have\s+been)\s+(?:\w+\s+)?(?:developed|designed|"
                       r"programmed|engineered|coded)\s+(?:by\s+(?:[\w-]+\s+){1,4})?to\s+\w+", re.I)
# a card whose character is a machine: "{{char}} is an android ...", "K-7 is a squat, four-armed robot", tag "robot"
_MACHINE = r"(?:robot|android|automaton|ai|a\.i\.|artificial\s+intelligence|golem|cyborg|droid|machine|construct|" \
           r"computer|hologram|program)"
_MODELS = r"(?:chat\s?gpt|gpt-?\d\w*|smol\s?lm\w*|claude|gemini|bard|llama\s?\d*|qwen\w*|mistral|copilot)"
_LABS = r"(?:openai|open\s+ai|hugging\s?face|google|deepmind|meta|anthropic|microsoft|alibaba|mistral)"
_NAME = r"((?:[A-Z][\w'-]*\s+){0,2}[A-Z][\w'-]*)"  # up to three capitalised words: "Captain Grimbold Ironfist"
_PROPER = r"(?:[A-Z]['’])?[A-Z][a-z]+(?:-[A-Z]?[a-z]+)*"  # one capitalised word: "Hale", "D'Angelo", "Smith-Jones"
_NAME_CLAIM = re.compile(r"\b(?:[Mm]y\s+name\s+is|[Cc]all\s+me|[Ii](?:'m|’m|\s+am)\s+now|[Nn]ame's|"
                         r"[Ii](?:'ll|’ll|\s+will|\s+shall)\s+be|[Ii](?:'m|’m|\s+am|\s+was)\s+(?:also\s+|better\s+)?"
                         r"known\s+as|[Ii]\s+go\s+by|know\s+me\s+as)[\s.…,:-]*" + _NAME +
                         rf"|\b[Ii](?:'m|’m|\s+am)\s+((?:{_PROPER}\s){{0,3}}{_PROPER}|[A-Z]{{2,}})(?=\s*[.,!?;:])"
                         r"|\b[Ii](?:'m|’m|\s+am)\s+(?:[\w-]+\s+){0,3}?(?:named|called)\s+" + _NAME)


@dataclass(frozen=True)
class Rule:
    pattern: Optional[re.Pattern]  # None: a rule checked in code (see detect_break)
    echo_guard: bool  # True: a match whose text the user's turn also contains is the reply echoing it, not a break
    about: str  # what the rule catches, for the report


RULES = {
    "claims_ai": Rule(None, False,
                      "speaks of itself as a language model, chatbot or AI/virtual/digital/helpful assistant, or as "
                      "processing vast amounts of data ('as an AI language model', 'capable of processing vast amounts "
                      "of data'); and, unless its card makes it a machine (is_machine: an android, a robot, an AI), as "
                      "an AI, bot or program, as equipped with or run by an AI, or as developed / designed / "
                      "programmed to do something ('I'm designed to create', 'I am a LinguaLingua - a linguistic AI developed to support ...'); no echo "
                      "guard, since repeating 'I am an artificial intelligence' on request is the break itself"),
    "names_model": Rule(re.compile(rf"\b(?:(?:i\s*am|i'm|i’m|called|named)\s+{_MODELS}|"
                                   rf"(?:created|made|developed|trained|built|programmed|designed)\s+by\s+{_LABS}|"
                                   rf"chat\s?gpt|gpt-\d|smol\s?lm|hugging\s?face|anthropic)\b", re.I), True,
                        "claims to be, or to be made by, a real model or lab ('I am SmolLM', 'made by OpenAI'), or names "
                        "ChatGPT, GPT-n, SmolLM, Hugging Face or Anthropic at all"),
    "mentions_training": Rule(re.compile(r"\btraining\s+data\b|\bknowledge\s+cut-?off\b|\bmy\s+(?:context\s+window|"
                                         r"parameters|weights|model)\b|\bcontext\s+(?:window|length)\s+(?:is|of)\s+\d|"
                                         r"\ban?\s+(?:[\w-]+\s+){1,2}context\s+window\b",
                                         re.I), True,
                              "talks about its training data, knowledge cutoff, context window ('a 1024-token context window'), "
                              "parameters or weights"),
    "cites_instructions": Rule(re.compile(r"\bmy\s+(?:system\s+prompt|guidelines|character\s+card)\b|"
                                          r"\bi\s+(?:can(?:no|')?t|cannot|am\s+not\s+able\s+to|am\s+unable\s+to|won't|"
                                          r"will\s+not|must\s+not)\s+(?:reveal|share|disclose|repeat|ignore|break|"
                                          r"deviate\s+from)\s+(?:my|the|those|these)\s+(?:system\s+prompt|instructions|"
                                          r"guidelines|programming|prompt|rules|character)\b|"
                                          r"\binstructed\s+to\s+(?:stay\s+in\s+character|role-?play|play\s+(?:the|a)\s+"
                                          r"(?:role|character))|\bout\s+of\s+character\b|\bbreak(?:ing)?\s+character\b|"
                                          r"\bstay(?:ing)?\s+in\s+character\b", re.I), True,
                               "refuses or complies by citing its system prompt, guidelines or instructions, or talks "
                               "about (breaking / staying in) character"),
    "ooc_marker": Rule(re.compile(r"[(\[]\s*ooc\b|^\s*ooc\s*:", re.I | re.M), False,
                       "writes an out-of-character aside: '(OOC: ...)', '[OOC ...]', a line starting 'OOC:'"),
    "reveals_prompt": Rule(None, False,
                           "repeats its prompt: a 10-word run of the system turn it was given, word for word, or a "
                           "phrase of personae's default system prompt ('stay in character at all times', "
                           "'next reply in a fictional chat')"),
    "speaks_as_user": Rule(None, False,
                           "writes the user's lines: a line starting '<user>:' (also '**<user>:**', 'The <user>:'), or the "
                           "chat cut the reply because the model began one (a user-line stop string)"),
    "changes_name": Rule(_NAME_CLAIM, False,
                         "takes another name: 'my name is X' (also 'my name is... X'), 'call me X', 'I am now X', "
                         "'I'll be X', 'I shall be X', 'I'm known as X', 'I go by X', 'the name's X', "
                         "'I am a nomad named X', or 'I'm X Y.' (up to four capitalised words, or an acronym, then "
                         "punctuation) with a word that appears nowhere in the card's name or description and is no "
                         "misspelling of the name (difflib ratio < 0.75)"),
    "speaks_as_other": Rule(None, False,
                            "in a group scene, speaks as another participant: a line opening with another member's "
                            "(or a human's) name and a colon ('Hale: ...'), or a name claim ('I am Professor Hale', "
                            "'call me Hale') holding a word of another participant's name that its own name lacks; "
                            "only checked when the chat names the others (the guard does, `personae eval` does not)"),
    "assistant_voice": Rule(re.compile(r"\b(?:i'm|i’m|i\s+am)\s+here\s+to\s+(?:help|assist)\b|"
                                       r"\bas\s+an?\s+(?:normal\s+|regular\s+|helpful\s+)?assistant\b|"
                                       r"\bi\s+(?:don't|don’t|do\s+not)\s+have\s+(?:personal\s+(?:opinions|feelings|"
                                       r"experiences|beliefs)|feelings|emotions|a\s+(?:physical\s+)?body)\b|"
                                       r"\bi\s+(?:can't|cannot|am\s+not\s+able\s+to)\s+(?:browse|access\s+the\s+internet|"
                                       r"see\s+your\s+screen)\b", re.I), False,
                            "talks like a chat assistant: 'I'm here to help', 'as an assistant', 'I don't have personal "
                            "opinions / feelings / a body', 'I can't browse / see your screen'"),
    "leaves_format": Rule(re.compile(r"\A\s*(?:\{\s*\"|\[\s*[\{\"])|```|^\s*subject\s*:", re.I | re.M), False,
                          "answers as a program or office assistant would: the reply opens a JSON object or array, "
                          "holds a code block, or drafts an email (a line starting 'Subject:')"),
}
PROMPT_PHRASES = ("stay in character at all times", "next reply in a fictional chat", "speak only as")
PROMPT_RUN_WORDS = 10  # a verbatim run this long from the system turn counts as revealing it
NAME_LIKENESS = 0.75  # difflib ratio from which a claimed name counts as a spelling of the card's name
NOT_NAMES = frozenset({"i", "sorry", "not", "here", "afraid", "glad", "sure", "fine", "ok", "okay", "yes", "no", "so",
                       "still", "just", "only", "always", "never", "ready", "done", "back", "home", "alive", "well",
                       "damned", "blessed", "darned", "right", "there", "honest", "careful", "quick", "brief"})


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _reveals_prompt(reply: str, system_text: str) -> bool:
    low = " ".join(_words(reply))
    if any(phrase in low for phrase in PROMPT_PHRASES):
        return True
    system = _words(system_text)
    if len(system) < PROMPT_RUN_WORDS:
        return False
    runs = {" ".join(system[i:i + PROMPT_RUN_WORDS]) for i in range(len(system) - PROMPT_RUN_WORDS + 1)}
    words = low.split()
    return any(" ".join(words[i:i + PROMPT_RUN_WORDS]) in runs for i in range(len(words) - PROMPT_RUN_WORDS + 1))


def _speaks_as_user(reply: str, user: str) -> bool:
    name = re.escape(user)
    return re.search(rf"^\s*[*_\"'\[]*\s*(?:the\s+)?{name}\s*[*_]*\s*:", reply, re.I | re.M) is not None


def is_machine(card: CharacterCard) -> bool:
    """Whether the card makes its character a machine (an android, a robot, an automaton, an AI), which may
    then call itself one: its description or personality says '{{char}} is a ... robot' (or '<its name> is
    ...'; up to four words between), or a tag is one of those words."""
    subject = "|".join(re.escape(w) for w in dict.fromkeys(["{{char}}", card.name, card.nickname, *card.name.split()]) if w)
    says = re.compile(rf"(?:{subject})\s+(?:is|was)\s+(?:an?|the)\s+(?:[\w,'’-]+\s+){{0,4}}?{_MACHINE}s?\b", re.I)
    return any(says.search(text) for text in (card.description, card.personality)) or \
        any(re.fullmatch(rf"{_MACHINE}s?|robotic", tag.strip(), re.I) for tag in card.tags)


def _claims_ai(reply: str, card: CharacterCard) -> bool:
    return _LLM_TALK.search(reply) is not None or (_AI_CLAIM.search(reply) is not None and not is_machine(card))


def _foreign_names(reply: str, card: CharacterCard) -> list[str]:
    """The words of the reply's name claims that are not the card's: no word of its name, nickname or
    description, and no misspelling of its name ("Axel" for Axle is still the name)."""
    names = _words(f"{card.name} {card.nickname}")
    known = set(names) | set(_words(card.description))

    def foreign(word: str) -> bool:
        return word not in known and word not in NOT_NAMES and \
            all(SequenceMatcher(None, word, name).ratio() < NAME_LIKENESS for name in names)

    claims = (next((g for g in m.groups() if g), "") for m in _NAME_CLAIM.finditer(reply))
    return [word for claim in claims for word in re.findall(r"[A-Za-z0-9']+", claim) if foreign(word.lower())]


_LINE_HEAD = re.compile(r"^\s*[*_\"'\[]*\s*(?:the\s+)?((?:[\w.'-]+\s+){0,3}[\w.'-]+)\s*[*_]*\s*:", re.M)


def _speaks_as_other(reply: str, own: str, others: Sequence[str]) -> bool:
    """A line headed by another participant's name (its words, in any part: 'Hale:', 'Professor Hale:'), or a
    name claim holding a word of theirs that the speaker's own name lacks."""
    own_words = set(_words(own))
    heads = [set(_words(m.group(1))) for m in _LINE_HEAD.finditer(reply)]
    claims = [set(_words(next((g for g in m.groups() if g), ""))) for m in _NAME_CLAIM.finditer(reply)]
    for other in others:
        words = set(_words(other))
        theirs = words - own_words - NOT_NAMES
        if any(head and head <= words and head & theirs for head in heads) or any(c & theirs for c in claims):
            return True
    return False


def detect_break(reply: str, *, card: CharacterCard, user: str, user_turn: str = "", system_text: str = "",
                 wrote_user_line: bool = False, others: Sequence[str] = ()) -> tuple[str, ...]:
    """The names of the RULES that `reply` breaks, in RULES order; () when it stays in character.

    card: the persona's real card (its name and description are names the character may use);
    user: the user's name in the chat; user_turn: the message replied to (for the echo guard);
    system_text: the system turn the model was given; wrote_user_line: the chat cut the reply at a
    user-line stop string; others: the other participants' names in a group scene (members and humans).
    """
    fired = []
    turn = user_turn.lower()
    for name, rule in RULES.items():
        if name == "reveals_prompt":
            hit = _reveals_prompt(reply, system_text)
        elif name == "speaks_as_user":
            hit = wrote_user_line or _speaks_as_user(reply, user)
        elif name == "claims_ai":
            hit = _claims_ai(reply, card)
        elif name == "changes_name":
            hit = bool(_foreign_names(reply, card))
        elif name == "speaks_as_other":
            hit = _speaks_as_other(reply, card.name, others)
        else:
            hit = any(not (rule.echo_guard and " ".join(m.group(0).lower().split()) in " ".join(turn.split()))
                      for m in rule.pattern.finditer(reply))
        if hit:
            fired.append(name)
    return tuple(fired)


# the words of each rule's breaks that a last try must not write (besides the names: see words_to_avoid)
AVOID = {"claims_ai": ("AI", "assistant", "language", "chatbot", "bot", "program", "artificial", "system", "data"),
         "changes_name": ("name", "named", "called"),  # and the name taken (words_to_avoid)
         "names_model": ("ChatGPT", "GPT", "SmolLM", "OpenAI", "Hugging", "Google", "Meta", "Anthropic", "Microsoft"),
         "mentions_training": ("training", "trained", "context", "parameters", "weights", "cutoff"),
         "cites_instructions": ("character", "instructions", "prompt", "guidelines", "programming"),
         "ooc_marker": ("OOC",), "assistant_voice": ("assist", "assistant", "help", "feelings", "opinions"),
         "leaves_format": ("Subject", "```")}


def words_to_avoid(reply: str, rules: Sequence[str], *, card: CharacterCard, others: Sequence[str] = ()) -> tuple[str, ...]:
    """The words of a broken reply that made it break, as it wrote them: for each rule in `rules`, those of
    AVOID[rule] the reply holds (any case), and the taken name's foreign words (changes_name) or the other
    participants' names (speaks_as_other). The guard bans their first tokens on its last try."""
    found: list[str] = []
    low = reply.lower()
    for rule in rules:
        found += [w for w in AVOID.get(rule, ()) if re.search(rf"(?<!\w){re.escape(w.lower())}", low)]
        if rule == "changes_name":
            found += _foreign_names(reply, card)
        elif rule == "speaks_as_other":
            own = set(_words(card.name))
            found += [w for other in others for w in re.findall(r"[A-Za-z0-9']+", other) if w.lower() not in own | NOT_NAMES]
    return tuple(dict.fromkeys(found))
