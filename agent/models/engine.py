"""An LM that runs in another process: a client for servers that speak the OpenAI completions API.

llama.cpp's `llama-server`, llama-cpp-python's `python -m llama_cpp.server`, Ollama, KoboldCpp, vLLM, SGLang
and TabbyAPI all serve `POST /v1/completions`. personae builds the whole prompt itself (card, lore, memory,
the model's own chat template) and sends it as text; `load_engine(url, model=...)` checks the engine at
start (`GET /v1/models`) so a wrong URL or model fails before the first turn. The API key comes from
`PERSONAE_LM_API_KEY` only and is never logged.

Every failure is an `EngineError` that names the URL and says what came back; connection failures, 429 and
5xx before the first streamed byte are retried a bounded number of times, nothing is retried once text
has been streamed (a turn is stored only when its stream ends, so a cut stream stores nothing).

One client serves every session and thread: its pooled `httpx.Client` (thread-safe, keep-alive) carries at most
`max_concurrency` streams at once, so one personae process feeds the engine's own batching (vLLM, llama.cpp's
`llama-server -np N`); a stream past that waits for a free slot, cancellable, and at most `timeout` seconds.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Optional

API_KEY_ENV = "PERSONAE_LM_API_KEY"
RETRY_STATUS = {429, 500, 502, 503, 504}

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """The engine is unreachable, too slow, refused the request, or did not answer in the OpenAI shape.

    status: what personae's own server answers its client with: 503 when the engine is down or slow, 502
    when it answered wrongly.
    """

    def __init__(self, message: str, *, status: int = 502):
        super().__init__(message)
        self.status = status


def base_url(url: str) -> str:
    """'http://host:8080', 'http://host:8080/' and 'http://host:8080/v1' -> 'http://host:8080'."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"lm.url must start with http:// or https://, got {url!r}")
    return url[:-3] if url.endswith("/v1") else url


def _excerpt(response) -> str:
    try:
        body = response.read().decode("utf-8", "replace")
    except Exception:  # a stream cut while reading its error body
        body = ""
    try:
        found = json.loads(body)
        error = found.get("error", found) if isinstance(found, dict) else found
        body = error.get("message", body) if isinstance(error, dict) else str(error)
    except ValueError:
        pass
    return " ".join(body.split())[:300]


@dataclass
class EngineClient:
    """url: the server's base URL; model: the name it serves the LM under; timeout: seconds to wait for
    the first byte and between streamed chunks (and, apart, for a free slot); retries: extra tries of a
    request that failed before it streamed anything; max_concurrency: streams in flight at once, over all
    threads (more wait for a slot).

    Thread-safe: many threads may stream through one client at once."""
    url: str
    model: str = ""
    timeout: float = 60.0
    retries: int = 2
    max_concurrency: int = 8

    def __post_init__(self):
        import httpx

        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        self.url = base_url(self.url)
        key = os.environ.get(API_KEY_ENV, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # a connection per stream in flight, plus two so /v1/models and /tokenize never queue behind streams
        connections = self.max_concurrency + 2
        self._http = httpx.Client(base_url=self.url, headers=headers,
                                  limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
                                  timeout=httpx.Timeout(self.timeout, connect=min(5.0, self.timeout)))
        self._slots = threading.BoundedSemaphore(self.max_concurrency)

    def close(self) -> None:
        self._http.close()

    def _where(self, path: str) -> str:
        return f"{self.url}{path}"

    def _send(self, method: str, path: str, *, body: Optional[dict] = None, stream: bool = False):
        """The response (status 2xx), after up to `retries` more tries on connection errors, timeouts, 429, 5xx."""
        import httpx

        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.25 * 2 ** attempt, 4.0))
            try:
                request = self._http.build_request(method, path, json=body)
                response = self._http.send(request, stream=stream)
            except httpx.TimeoutException:
                last = EngineError(f"the LM engine at {self._where(path)} did not answer within {self.timeout:g} s "
                                   f"(lm.timeout)", status=503)
                continue
            except httpx.HTTPError as e:
                last = EngineError(f"the LM engine at {self._where(path)} is not reachable "
                                   f"({type(e).__name__}: {e}); is it running? (lm.url)", status=503)
                continue
            if response.status_code < 300:
                return response
            detail = _excerpt(response)
            response.close()
            if response.status_code in (401, 403):
                raise EngineError(f"the LM engine at {self._where(path)} refused the API key "
                                  f"(HTTP {response.status_code}; set {API_KEY_ENV}): {detail}")
            if response.status_code == 404:
                raise EngineError(f"the LM engine at {self._where(path)} answered 404 ({detail}): not an "
                                  f"OpenAI-compatible server, or it has no model {self.model!r} (lm.url, lm.model)")
            last = EngineError(f"the LM engine at {self._where(path)} answered HTTP {response.status_code}: {detail}",
                               status=503 if response.status_code in RETRY_STATUS else 502)
            if response.status_code not in RETRY_STATUS:
                break
        raise last

    def _json(self, response, path: str):
        try:
            return response.json()
        except ValueError:
            raise EngineError(f"the LM engine at {self._where(path)} did not answer with JSON: "
                              f"{response.text[:200]!r}") from None

    def models(self) -> list[dict]:
        """GET /v1/models: the engine's model entries (each has an "id")."""
        found = self._json(self._send("GET", "/v1/models"), "/v1/models")
        data = found.get("data") if isinstance(found, dict) else None
        if not isinstance(data, list) or not all(isinstance(m, dict) and "id" in m for m in data):
            raise EngineError(f"the LM engine at {self._where('/v1/models')} is not OpenAI-shaped: "
                              f"no data list of models in {str(found)[:200]!r}")
        return data

    def tokenize(self, text: str) -> Optional[list[int]]:
        """The engine's own token ids for `text` (special tokens parsed), or None when it has no tokenize
        endpoint: llama.cpp's /tokenize, llama-cpp-python's /extras/tokenize and vLLM's /tokenize are tried."""
        for path, body in (("/tokenize", {"model": self.model, "prompt": text, "content": text,
                                           "add_special_tokens": False, "with_pieces": False}),
                           ("/extras/tokenize", {"model": self.model, "input": text})):
            try:
                response = self._http.post(path, json=body)
            except Exception:
                return None
            if response.status_code < 300:
                try:
                    tokens = response.json().get("tokens")
                except (ValueError, AttributeError):  # not JSON, or not an object
                    tokens = None
                if isinstance(tokens, list) and all(isinstance(t, int) for t in tokens):
                    return tokens
        return None

    def _take_slot(self, cancel: Optional[threading.Event]) -> bool:
        """Waits for one of the `max_concurrency` stream slots: True once taken, False when `cancel` is set first;
        EngineError (503) after `timeout` seconds of waiting."""
        deadline = time.monotonic() + self.timeout
        while True:
            wait = deadline - time.monotonic()
            if cancel is not None and cancel.is_set():
                return False
            if wait <= 0:
                raise EngineError(f"{self.max_concurrency} requests to the LM engine at {self.url} were still in flight "
                                  f"after {self.timeout:g} s; this one stopped waiting (lm.max_concurrency, lm.timeout)",
                                  status=503)
            if self._slots.acquire(timeout=min(wait, 0.05) if cancel is not None else wait):
                return True

    def stream_completion(self, body: dict, cancel: Optional[threading.Event] = None) -> Iterator[dict]:
        """POST /v1/completions with stream=true: the parsed `data:` chunks until `[DONE]`.

        Holds one of the `max_concurrency` slots from the first `next()` until the generator ends or is closed;
        while it waits for one, setting `cancel` ends it with no chunks. Retries (see `_send`) only before the
        response starts; a stream that breaks later raises EngineError. Closing the generator closes the
        connection, which stops the engine's generation.
        """
        if not self._take_slot(cancel):
            return
        try:
            yield from self._stream_completion(body)
        finally:
            self._slots.release()

    def _stream_completion(self, body: dict) -> Iterator[dict]:
        import httpx

        path = "/v1/completions"
        response = self._send("POST", path, body={**body, "model": self.model, "stream": True}, stream=True)
        try:
            if response.headers.get("content-type", "").startswith("application/json"):
                response.read()  # an engine that ignores stream=true: its whole answer as one chunk
                yield self._json(response, path)
                return
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # SSE comments, event names, keep-alive blank lines
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise EngineError(f"the LM engine at {self._where(path)} streamed a line that is not JSON: "
                                      f"{data[:200]!r}") from None
                if "error" in chunk:
                    raise EngineError(f"the LM engine at {self._where(path)} failed mid-reply: "
                                      f"{str(chunk['error'])[:300]}")
                yield chunk
        except httpx.TimeoutException:
            raise EngineError(f"the LM engine at {self._where(path)} stopped streaming for {self.timeout:g} s "
                              f"(lm.timeout)", status=503) from None
        except httpx.HTTPError as e:
            raise EngineError(f"the LM engine at {self._where(path)} broke off the reply ({type(e).__name__}: {e})",
                              status=503) from None
        finally:
            response.close()


def load_engine(url: str, *, model: str = "", timeout: float = 60.0, retries: int = 2,
                max_concurrency: int = 8) -> EngineClient:
    """A client for the engine at `url`, checked: it answers /v1/models and serves `model` (default: the
    only or first model it lists). EngineError naming the URL otherwise; never hangs past `timeout`."""
    client = EngineClient(url, model=model, timeout=timeout, retries=retries, max_concurrency=max_concurrency)
    served = [m["id"] for m in client.models()]
    if not model:
        if not served:
            raise EngineError(f"the LM engine at {client.url} serves no models")
        client.model = served[0]
    elif model not in served:
        log.warning("the LM engine at %s lists %s, not %r; asking for %r anyway (aliases)", client.url,
                    ", ".join(served) or "no models", model, model)
    log.info("LM engine %s, model %s, at most %d requests at once", client.url, client.model, max_concurrency)
    return client
