"""Text for speech: cleans a reply into what a voice should say, and cuts a token stream into sentences.

`SentenceSplitter` hands each finished sentence (markup still in it) to `speakable`, whose plain text goes
to a `Synthesizer`; so the first sentence can be spoken while the LM is still writing the rest.
"""
from __future__ import annotations

import html
import re

from ..persona.macros import substitute

# --- speakable -----------------------------------------------------------------------------------------

_FENCE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)  # an unclosed fence runs to the end: it is still code
_HTML_DROP = re.compile(r"<(script|style)\b.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_HTML_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.DOTALL)
_OOC = re.compile(r"\(\(.*?(?:\)\)|\Z)|[\[(]\s*OOC\b[^\])]*[\])]?", re.DOTALL | re.IGNORECASE)
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\((?:[^)]*)\)")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"')\]]*[^\s<>\"')\].,;:!?]", re.IGNORECASE)
_INLINE_CODE = re.compile(r"`([^`]*)`")
_LINE_MARKUP = re.compile(  # headings, quotes, bullets, rules
    r"^[ \t]*(?:#{1,6}[ \t]+|>[ \t]?|[-+•][ \t]+|\*[ \t]+(?=\S)|(?:[-*_][ \t]*){3,}$)", re.MULTILINE)
_BOLD = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)
_ACTION = re.compile(r"\*([^*]+)\*")
_UNDERSCORE = re.compile(r"(?<!\w)__?([^_\n]+?)__?(?!\w)")
_STRIKE = re.compile(r"~~(.+?)~~")
_EMOJI = re.compile(
    "[\U0001F000-\U0001FAFF\U00002600-\U000027BF\U00002B00-\U00002BFF\U0001F1E6-\U0001F1FF"
    "\U0000FE00-\U0000FE0F\U0000200D\U000020E3\U0000E000-\U0000F8FF\U000E0020-\U000E007F]")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?…])")
_LEADING_PUNCT = re.compile(r"^[\s,.;:!?…\-–—]+")
_REPEATED_COMMA = re.compile(r"([,;:])(?:\s*[,;:])+")
_UNPUNCTUATED_LINE_END = re.compile(r"(?<=[\w)\]\"'”’])[ \t]*\n\s*")  # a heading or list item: pause as at a period


def speakable(text: str, *, char: str, user: str, read_actions: bool = False) -> str:
    """A reply (or one sentence of it) -> the plain words a voice should say; "" when nothing is left.

    Drops *action text* (unless `read_actions`, which keeps its words), code fences, ((OOC)) and [OOC: ...]
    asides, HTML tags, markdown markers and emoji; reads URLs as "link"; resolves {{char}}/{{user}}.
    "*waves* Hi, {{user}}! See https://x.org" -> "Hi, Ann! See link"
    """
    text = substitute(text, char=char, user=user).replace("\r\n", "\n")
    text = _FENCE.sub(" ", text)
    text = _HTML_DROP.sub(" ", text)
    text = _HTML_TAG.sub(" ", text)
    text = html.unescape(text)
    text = _OOC.sub(" ", text)
    text = _IMAGE.sub(" ", text)
    text = _LINK.sub(r"\1", text)
    text = _URL.sub("link", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = _LINE_MARKUP.sub("", text)
    text = _BOLD.sub(r"\1", text)
    text = _ACTION.sub(r" \1 " if read_actions else " ", text)
    text = text.replace("*", " ")  # a lone asterisk left over from unbalanced markup
    text = _UNDERSCORE.sub(r"\1", text)
    text = _STRIKE.sub(r"\1", text)
    text = _EMOJI.sub(" ", text)
    text = _UNPUNCTUATED_LINE_END.sub(". ", text.strip())
    text = " ".join(text.split())
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _REPEATED_COMMA.sub(r"\1", text)
    text = _LEADING_PUNCT.sub("", text)
    return text if any(c.isalnum() for c in text) else ""


# --- sentence splitting --------------------------------------------------------------------------------

# Abbreviations whose period never ends a sentence ("Mr. Smith"), and those that end one only before a
# capital letter ("apples, etc. Then ...").
NEVER_FINAL = frozenset("mr mrs ms mx dr st mt prof capt cpt lt col gen sgt rev fr sr jr e.g i.e vs cf viz".split())
FINAL_BEFORE_CAPITAL = frozenset("etc approx al".split())

_TERMINATOR = re.compile(r"[.!?…]+[\"'”’)\]»*]*|\n")
_BULLET = re.compile(r"^[ \t]*\*[ \t]+", re.MULTILINE)
_WORD_BEFORE = re.compile(r"([\w.]+)$")


def _open_action(text: str) -> bool:
    """True when `text` leaves a single-asterisk *action* open (bold ** pairs and "* " bullets don't count)."""
    return _BULLET.sub("", text).replace("**", "").count("*") % 2 == 1


def _in_block(text: str) -> bool:
    """True inside an unclosed ``` fence or ((OOC)) aside, where no sentence may end."""
    return text.count("```") % 2 == 1 or text.count("((") > text.count("))")


class SentenceSplitter:
    """Cuts streamed text into sentences for speech, giving the same sentences however the text is chunked.

    `feed(piece)` returns the sentences completed so far; `flush()` returns the rest at the end of the reply.
    A sentence ends at . ! ? … (with any closing quotes or brackets) followed by a space and a word that
    isn't lower-case and isn't after an abbreviation, initial ("J. R. R."), or decimal; or at a newline.
    Fragments shorter than `min_chars` join the next sentence unless a newline ends them; a run-on longer
    than `max_chars` is cut at its last comma or space. An *action* cut by a sentence end is closed and
    reopened, so each sentence has balanced asterisks for `speakable`.
    """

    def __init__(self, *, min_chars: int = 20, max_chars: int = 300):
        if not 0 <= min_chars < max_chars:
            raise ValueError(f"need 0 <= min_chars < max_chars, got {min_chars}, {max_chars}")
        self.min_chars = min_chars  # shorter fragments ("Aye.") merge with the next sentence
        self.max_chars = max_chars  # a sentence longer than this is cut at a clause break
        self._text = ""  # text not yet returned, starting at a sentence start

    def feed(self, piece: str) -> list[str]:
        """Adds the next piece of the reply (a token or a few); returns the sentences it completed."""
        self._text += piece.replace("\r", "")
        return self._split(final=False)

    def flush(self) -> list[str]:
        """The remaining sentences, the last one even without an end mark; resets for the next reply."""
        sentences = self._split(final=True)
        rest = self._text.strip()
        self._text = ""
        if rest:
            sentences.append(rest + "*" if _open_action(rest) else rest)
        return sentences

    def _split(self, *, final: bool) -> list[str]:
        sentences = []
        search_from = 0  # merged short fragments stay in the buffer; look for the next end after them
        while True:
            end = self._next_end(search_from, final=final)
            limit = self.max_chars
            if end is not None and end[0] <= limit:
                cut, hard = end
                if hard or len(self._text[:cut].strip()) >= self.min_chars:
                    sentences.extend(self._emit(cut))
                    search_from = 0
                else:
                    search_from = cut
                continue
            if len(self._text) > limit and not _in_block(self._text[:limit]):
                sentences.extend(self._emit(self._clause_cut(limit)))
                search_from = 0
                continue
            return sentences

    def _emit(self, cut: int) -> list[str]:
        sentence, rest = self._text[:cut].strip(), self._text[cut:].lstrip()
        if _open_action(sentence):
            sentence, rest = sentence + "*", "*" + rest
        self._text = rest
        return [sentence] if sentence.strip("* ") else []

    def _clause_cut(self, limit: int) -> int:
        window = self._text[:limit]
        for mark in (", ", "; ", ": ", " - ", " — ", " "):
            at = window.rfind(mark, self.min_chars)
            if at != -1:
                return at + len(mark.rstrip())
        return limit

    def _next_end(self, start: int, *, final: bool) -> tuple[int, bool] | None:
        """(index just past the first sentence end at or after `start`, ended by a newline); None if
        there is none yet, or if deciding needs text that hasn't arrived."""
        text = self._text
        for match in _TERMINATOR.finditer(text, start):
            if _in_block(text[:match.start()]):
                continue
            if match.group() == "\n":
                return match.start(), True
            verdict = self._ends_sentence(match, final=final)
            if verdict is None:
                return None
            if verdict:
                return match.end(), False
        return None

    def _ends_sentence(self, match: re.Match, *, final: bool) -> bool | None:
        """Whether the terminator `match` ends a sentence; None when the text after it is still to come."""
        text, end = self._text, match.end()
        after = end
        while after < len(text) and text[after] in " \t":
            after += 1
        if after == len(text):
            return True if final else None
        if text[after] == "\n":
            return True
        if after == end:  # "3.14", "e.g.", "...and": no space after the mark
            return False
        following = text[after]
        if following.islower():  # '"Stop!" she cried.' and unknown abbreviations ("approx. ten")
            return False
        marks = match.group().rstrip("\"'”’)]»*")
        if marks != ".":
            return True  # ! ? ?! and ellipses before a capital
        word = _WORD_BEFORE.search(text, 0, match.start())
        word = word.group(1).lower() if word else ""
        if word in NEVER_FINAL:
            return False
        if word in FINAL_BEFORE_CAPITAL:
            return following.isupper()
        before = text[match.start() - 2] if match.start() >= 2 else " "
        if len(word) == 1 and word != "i" and text[match.start() - 1].isupper() and not before.isalnum():
            return not following.isupper()  # "J. R. R. Tolkien": an initial before a capital
        return True
