"""POST /v1/audio/transcriptions (Whisper) and POST /v1/audio/speech (the persona's voice), in OpenAI's shapes."""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from ..deps import StateDep, persona_named
from ..dispatch import run_job
from ..errors import APIError
from ..schemas import SpeechRequest
from ..speech_files import MEDIA_TYPES, encode

router = APIRouter(prefix="/v1/audio", tags=["audio"])


@router.post("/transcriptions")
async def transcriptions(request: Request, state: StateDep, file: Annotated[UploadFile, File()],
                         model: Annotated[str, Form()] = "whisper-1",  # accepted; the config's Whisper is used
                         language: Annotated[Optional[str], Form(max_length=16)] = None,
                         response_format: Annotated[Literal["json", "text", "verbose_json"], Form()] = "json"):
    limit = state.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise APIError(413, f"the audio file is over the {limit}-byte limit", code="body_too_large", param="file")
    name = (file.filename or "uploaded audio")[:200]
    transcript = await run_job(request, state.speech,
                               lambda job: state.agent.transcribe(data, language=language or None, name=name))
    if response_format == "text":
        return PlainTextResponse(transcript.text)
    if response_format == "verbose_json":
        return {"task": "transcribe", "language": transcript.language, "duration": transcript.seconds,
                "text": transcript.text, "segments": [], "reason": transcript.reason}
    return {"text": transcript.text}


async def _speaker(state, body: SpeechRequest):
    """The persona named by `voice`, else by `model`."""
    names = body.names()
    for name in names:
        try:
            return await persona_named(state.agent, name, param="voice")
        except APIError:
            continue
    raise APIError(404, f"no persona named {' or '.join(repr(n) for n in names) or 'in voice or model'}; "
                   f"GET /v1/models lists them", code="model_not_found", param="voice")


@router.post("/speech")
async def speech(body: SpeechRequest, request: Request, state: StateDep):
    if len(body.input) > state.settings.max_speech_chars:
        raise APIError(400, f"input: {len(body.input)} characters, over the limit of {state.settings.max_speech_chars}",
                       code="input_too_long", param="input")
    persona = await _speaker(state, body)

    def speak(job):
        samples, rate = state.agent.speak(persona.slug, body.input)
        if body.speed != 1.0:
            from ...speech.voice import time_stretch

            samples = time_stretch(samples, 1.0 / body.speed, rate)
        return samples, rate

    samples, rate = await run_job(request, state.speech, speak)
    audio = await run_in_threadpool(encode, samples, rate, body.response_format)
    return Response(audio, media_type=MEDIA_TYPES[body.response_format])
