// Voice: each reply spoken sentence by sentence through POST /v1/audio/speech (WAV clips played in order in
// the reply's own <audio>, joined into one WAV at the end for replay), and push-to-talk: MediaRecorder ->
// POST /v1/audio/transcriptions.

import { blobUrl, request } from "./api.js";

const SENTENCE_END = /[.!?\u2026]+["\u201d*)]*\s+/g;
const CLAUSE_END = /[,;:\u2014]\s+/g;
const FIRST_CLIP = { longer: 40, min: 12 }; // a first sentence over 40 characters is voiced from its first clause of 12 or more

// Where the first clause of `text` ends: after a comma, semicolon, colon or dash at FIRST_CLIP.min characters or
// more and before any sentence end; -1 if none.
export function firstClauseEnd(text) {
  CLAUSE_END.lastIndex = FIRST_CLIP.min;
  const clause = CLAUSE_END.exec(text);
  if (!clause) return -1;
  SENTENCE_END.lastIndex = 0;
  const sentence = SENTENCE_END.exec(text);
  return sentence && sentence.index < clause.index ? -1 : clause.index + clause[0].length;
}

// A long first sentence split after its first clause: [clause, rest], or [sentence] (its first clip comes sooner:
// speech takes about as long to synthesize as its text is long).
export function firstClip(sentence) {
  if (sentence.length <= FIRST_CLIP.longer) return [sentence];
  const end = firstClauseEnd(sentence);
  if (end < 0 || sentence.length - end < FIRST_CLIP.min) return [sentence];
  return [sentence.slice(0, end).trim(), sentence.slice(end).trim()];
}

// Splits off the complete sentences of `text` after `from`: [sentences, new from].
export function completeSentences(text, from) {
  const out = [];
  SENTENCE_END.lastIndex = from;
  let match;
  while ((match = SENTENCE_END.exec(text))) {
    const end = match.index + match[0].length;
    const sentence = text.slice(from, end).trim();
    if (sentence) out.push(sentence);
    from = end;
  }
  return [out, from];
}

// The PCM data of a WAV file and its format chunk: {fmt: Uint8Array, data: Uint8Array}.
function wavParts(buffer) {
  const view = new DataView(buffer);
  let offset = 12, fmt = null, data = null;
  while (offset + 8 <= buffer.byteLength) {
    const id = String.fromCharCode(...new Uint8Array(buffer, offset, 4));
    const size = view.getUint32(offset + 4, true);
    const body = new Uint8Array(buffer, offset + 8, Math.min(size, buffer.byteLength - offset - 8));
    if (id === "fmt ") fmt = body;
    if (id === "data") data = body;
    offset += 8 + size + (size % 2);
  }
  return { fmt, data };
}

// Joins WAV clips of one voice (same format) into one WAV Blob.
export function joinWavs(buffers) {
  const parts = buffers.map(wavParts).filter((p) => p.fmt && p.data);
  if (!parts.length) return null;
  const length = parts.reduce((n, p) => n + p.data.length, 0);
  const fmt = parts[0].fmt;
  const out = new Uint8Array(12 + 8 + fmt.length + 8 + length);
  const view = new DataView(out.buffer);
  const ascii = (at, s) => { for (let i = 0; i < 4; i++) out[at + i] = s.charCodeAt(i); };
  ascii(0, "RIFF"); view.setUint32(4, out.length - 8, true); ascii(8, "WAVE");
  ascii(12, "fmt "); view.setUint32(16, fmt.length, true); out.set(fmt, 20);
  let at = 20 + fmt.length;
  ascii(at, "data"); view.setUint32(at + 4, length, true); at += 8;
  for (const p of parts) { out.set(p.data, at); at += p.data.length; }
  return new Blob([out], { type: "audio/wav" });
}

// One reply's voice: feed() the text as it streams, finish() at the end. Sentences are synthesized in order
// (one request at a time) and played in `audio` one after another when `autoplay`; afterwards the element
// holds the whole reply as one WAV. onFirstAudio() fires when the first clip starts playing.
export class SpokenReply {
  constructor(model, audio, { autoplay = true, onFirstAudio, onError } = {}) {
    Object.assign(this, { model, audio, autoplay, onFirstAudio, onError });
    this.from = 0; this.clips = []; this.pending = Promise.resolve(); this.playing = false;
    this.next = 0; this.finished = false; this.firstHeard = false;
    audio.addEventListener("ended", () => this.playNext());
    audio.addEventListener("playing", () => {
      if (!this.firstHeard) { this.firstHeard = true; if (this.onFirstAudio) this.onFirstAudio(); }
    });
  }

  feed(text) {
    if (!this.said) { // the first clause is voiced as soon as the guard has shown it, before its sentence ends
      const unread = text.slice(this.from), end = firstClauseEnd(unread);
      SENTENCE_END.lastIndex = 0;
      if (end >= 0 && !SENTENCE_END.test(unread)) {
        this.sayNext(unread.slice(0, end));
        this.from += end;
      }
    }
    const [sentences, from] = completeSentences(text, this.from);
    this.from = from;
    sentences.forEach((s) => this.sayNext(s));
  }

  finish(text) {
    const rest = text.slice(this.from).trim();
    if (rest) this.sayNext(rest);
    this.pending = this.pending.then(() => { this.finished = true; this.settle(); });
    return this.pending;
  }

  sayNext(sentence) {
    (this.said ? [sentence] : firstClip(sentence)).forEach((part) => this.say(part));
    this.said = true;
  }

  say(sentence) {
    this.pending = this.pending.then(async () => {
      try {
        const response = await request("/v1/audio/speech", {
          method: "POST", json: { model: this.model, input: sentence.slice(0, 4000), response_format: "wav" },
        });
        this.clips.push(await response.arrayBuffer());
        if (this.autoplay && !this.playing) this.playNext();
      } catch (e) {
        if (e.code !== "invalid_value" && this.onError) this.onError(e); // nothing speakable: skipped
      }
    });
  }

  playNext() {
    if (this.next >= this.clips.length) { this.playing = false; this.settle(); return; }
    this.playing = true;
    const blob = new Blob([this.clips[this.next++]], { type: "audio/wav" });
    this.audio.src = URL.createObjectURL(blob);
    this.audio.play().catch(() => { this.playing = false; });
  }

  // Once every clip is in and played (or autoplay is off): the whole reply as one WAV, for replay.
  settle() {
    if (!this.finished || this.playing || this.joined) return;
    const whole = joinWavs(this.clips);
    if (!whole) return;
    this.joined = true;
    this.audio.src = URL.createObjectURL(whole);
    this.audio.dataset.bytes = String(whole.size);
    this.audio.hidden = false;
  }
}

// Hold-to-record: start() on press, stop() on release resolves to the recorded Blob.
export class Recorder {
  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    this.chunks = [];
    this.recorder = new MediaRecorder(this.stream);
    this.recorder.addEventListener("dataavailable", (e) => { if (e.data.size) this.chunks.push(e.data); });
    this.recorder.start();
  }

  stop() {
    return new Promise((resolve) => {
      if (!this.recorder || this.recorder.state === "inactive") { resolve(null); return; }
      this.recorder.addEventListener("stop", () => {
        this.stream.getTracks().forEach((t) => t.stop());
        resolve(new Blob(this.chunks, { type: this.recorder.mimeType || "audio/webm" }));
      }, { once: true });
      this.recorder.stop();
    });
  }
}

export async function transcribe(blob) {
  const form = new FormData();
  const ext = (blob.type.split("/")[1] || "webm").split(";")[0];
  form.append("file", blob, `speech.${ext}`);
  form.append("model", "whisper-1");
  // The browser's language, so Whisper skips detecting it (a second pass over the audio, about as long as the first).
  const language = (navigator.language || "").split("-")[0].toLowerCase();
  if (/^[a-z]{2}$/.test(language)) form.append("language", language);
  return (await (await request("/v1/audio/transcriptions", { method: "POST", form })).json()).text;
}

export { blobUrl };
