// The page's only way to the server: the same /v1 routes every other client uses, with the API key
// (kept in this tab's sessionStorage, sent as a Bearer header, never in a URL).

const KEY_ITEM = "personae.key";

export class ApiError extends Error {
  constructor(status, message, code, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
  // A sentence a person can act on.
  get readable() {
    if (this.status === 0) return `The server is unreachable (${this.message}): is personae serve running?`;
    if (this.status === 401) return "The server needs its API key: enter it with the key button.";
    if (this.status === 429) return `The server is busy: try again in ${this.retryAfter || "a few"} s. (${this.message})`;
    return `${this.message} (${this.status})`;
  }
}

export function apiKey() { return sessionStorage.getItem(KEY_ITEM) || ""; }
export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key); else sessionStorage.removeItem(KEY_ITEM);
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

async function failure(response) {
  let message = response.statusText || "request failed", code = null;
  try {
    const body = await response.json();
    if (body && body.error) { message = String(body.error.message); code = body.error.code; }
  } catch (_) { /* not JSON */ }
  return new ApiError(response.status, message, code, response.headers.get("Retry-After"));
}

// fetch() with the key; network failures and non-2xx answers become ApiError.
export async function request(path, { method = "GET", json, form, signal, headers: extra } = {}) {
  const init = { method, signal, headers: headers(extra) };
  if (json !== undefined) { init.body = JSON.stringify(json); init.headers["Content-Type"] = "application/json"; }
  if (form !== undefined) init.body = form;
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, String(e.message || e));
  }
  if (!response.ok) throw await failure(response);
  return response;
}

export async function getJSON(path, options) { return (await request(path, options)).json(); }

// An image or audio answer as a blob: URL (an <img src> could not send the key).
export async function blobUrl(path, options) {
  const blob = await (await request(path, options)).blob();
  return { url: URL.createObjectURL(blob), size: blob.size };
}

// POST /v1/chat/completions (or `path`: a session's /continue) with stream: true. Calls onStart(response) once
// the headers are in, onPiece(piece, text) per content delta; resolves to the whole text. A streamed error
// object, or the connection lost mid-reply, becomes an ApiError.
export async function streamChat(body, { sessionId, signal, onStart, onPiece, path = "/v1/chat/completions" }) {
  const response = await request(path, {
    method: "POST", json: { ...body, stream: true }, signal,
    headers: sessionId ? { "X-Session-Id": sessionId } : {},
  });
  if (onStart) onStart(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "", text = "";
  for (;;) {
    let read;
    try {
      read = await reader.read();
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, `the connection was lost mid-reply: ${e.message || e}`);
    }
    const { value, done } = read;
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return text;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(500, chunk.error.message, chunk.error.code);
        const piece = chunk.choices && chunk.choices[0] && chunk.choices[0].delta.content;
        if (piece) { text += piece; onPiece(piece, text); }
      }
    }
  }
  return text;
}
