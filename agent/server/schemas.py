"""Request and response bodies in OpenAI's shapes (only the fields personae uses; unknown ones are ignored).

Routes validate requests with these models; responses are built as plain dicts in the same shapes.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..untrusted_text import lone_surrogate, surrogate_problem

MAX_SEED = 2**63 - 1  # OpenAI's seed is an int64; negative seeds are refused (numpy's generators take none)


class TextBody(BaseModel):
    """A request body whose text must be valid Unicode: a lone surrogate (JSON's "\\ud800") in any field is a
    400 naming the field (`messages[2].content`), before anything tokenizes, stores or encodes it."""

    @field_validator("*")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        found = lone_surrogate(_plain(value))
        if found:
            raise ValueError(surrogate_problem(found[1]) + (f" (at {found[0]})" if found[0] else ""))
        return value


def _plain(value: Any) -> Any:
    """A field's value with models as dicts, for `lone_surrogate`."""
    if isinstance(value, TextBody):
        return None  # checked its own fields already
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


class TextPart(BaseModel):  # checked by its ChatMessage: a union's error here would name both of its branches
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]  # image and audio parts are refused by validation
    text: str


class ChatMessage(TextBody):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]  # developer is read as system
    content: Union[str, list[TextPart], None] = None
    name: Optional[str] = Field(None, max_length=200)  # who wrote it: in a group scene (model "mara+hale") a persona's slug or name, a human's name; a named system message is a speaker's line (named_text)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False  # a last chunk with the usage and no choices


class SamplingBody(TextBody):
    """What a request that writes a reply may say about it: the persona, sampling, stop strings, streaming."""
    # frequency_penalty, logit_bias, presence_penalty, ... are accepted and ignored, as SillyTavern sends them
    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=200)  # the persona (slug or card name), personas joined by '+' (a group scene), a scene's name, or the plain model's id
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)  # the newer name of max_tokens
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None

    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return tuple(s for s in stops if s)


class ChatCompletionRequest(SamplingBody):
    messages: list[ChatMessage] = Field(min_length=1)
    n: Optional[int] = None  # only 1
    user: Optional[str] = Field(None, max_length=200)  # the session id, when no X-Session-Id header is sent


class ContinueRequest(SamplingBody):
    """POST /v1/sessions/{id}/continue: more of the stored session's last reply (`model`: its persona)."""


class VoiceRef(TextBody):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(max_length=200)  # a custom voice: here a persona


class SpeechRequest(TextBody):
    model_config = ConfigDict(extra="ignore")
    model: str = Field("", max_length=200)  # a persona, or an OpenAI model name when `voice` is the persona
    input: str = Field(min_length=1)
    voice: Union[str, VoiceRef] = ""  # a persona, or an OpenAI voice name when `model` is the persona
    response_format: Literal["wav", "pcm", "mp3", "opus", "aac", "flac"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)

    def names(self) -> list[str]:
        """The persona names to try, voice first."""
        voice = self.voice.id if isinstance(self.voice, VoiceRef) else self.voice
        return [name for name in (voice, self.model) if name.strip()]
