// The web chat: gallery, chats and scenes, swipes, conversations to resume, import/export, creation, voice.
// Everything goes through api.js to the same /v1 routes other clients use; untrusted text only as textContent.

import { ApiError, blobUrl, getJSON, request, setApiKey, streamChat } from "./api.js";
import { el, renderRich } from "./format.js";
import { Recorder, SpokenReply, transcribe } from "./voice.js";

const $ = (id) => document.getElementById(id);
const CURRENT_ITEM = "personae.current"; // the open chat {sid, model}, so a reload resumes it
const VIEWS = ["gallery", "sessions", "create", "chat"];
const CREATE_SECONDS = 120;
const CALL_MAX_TOKENS = 60; // a spoken answer to push-to-talk stays short: a call, not a letter

const state = { personas: [], portraits: new Map(), chat: null, picked: new Set() };
window.personaeCsp = []; // CSP violations seen by this page (the tests read it; it should stay empty)
document.addEventListener("securitypolicyviolation", (e) => {
  window.personaeCsp.push(`${e.violatedDirective} ${e.blockedURI}`);
  debug("CSP violations", String(window.personaeCsp.length));
});

// ---- errors, views, debug ------------------------------------------------------------------------------
function showError(e) {
  if (e && e.name === "AbortError") return;
  const text = e instanceof ApiError ? e.readable : String((e && e.message) || e);
  $("errors").textContent = text;
  if (e instanceof ApiError && e.status === 401) $("key-form").hidden = false;
}
function clearError() { $("errors").textContent = ""; }

function show(view) {
  for (const name of VIEWS) $(name).hidden = name !== view;
  clearError();
}

const debugValues = new Map();
function debug(name, value) {
  debugValues.set(name, value);
  const list = $("debug-list");
  list.replaceChildren();
  for (const [k, v] of debugValues) {
    list.append(el("dt", { textContent: k }), el("dd", { textContent: v, "data-metric": k }));
  }
}
const ms = (t) => `${Math.round(t)} ms`;

// ---- personas and portraits ------------------------------------------------------------------------------
function persona(slug) { return state.personas.find((p) => p.id === slug) || { id: slug, name: slug, has_portrait: false }; }

function portraitUrl(slug) {
  if (!state.portraits.has(slug)) {
    const p = persona(slug);
    state.portraits.set(slug, p.has_portrait
      ? blobUrl(`/v1/personas/${encodeURIComponent(slug)}/portrait`).then((b) => b.url).catch(() => null)
      : Promise.resolve(null));
  }
  return state.portraits.get(slug);
}

function portrait(slug, small = false) {
  const img = el("img", { className: small ? "portrait small" : "portrait", alt: `Portrait of ${persona(slug).name}` });
  portraitUrl(slug).then((url) => { img.src = url || "/web/icon.svg"; }); // no portrait: a silhouette
  return img;
}

async function loadPersonas() {
  const body = await getJSON("/v1/personas");
  state.personas = body.data;
  state.portraits.clear();
  const list = $("persona-list");
  list.replaceChildren();
  for (const p of state.personas) {
    const open = el("button", { type: "button", className: "open", "aria-label": `Chat with ${p.name}` },
      portrait(p.id), el("span", { className: "name", textContent: p.name }));
    open.addEventListener("click", () => openChat([p.id]).catch(showError));
    const box = el("input", { type: "checkbox", checked: state.picked.has(p.id), "aria-label": `Add ${p.name} to a scene` });
    box.addEventListener("change", () => {
      if (box.checked) state.picked.add(p.id); else state.picked.delete(p.id);
      $("start-scene").disabled = state.picked.size < 2;
    });
    list.append(el("li", { className: "persona", "data-slug": p.id }, open,
      el("label", { className: "pick" }, box, document.createTextNode(" in a scene"))));
  }
  $("start-scene").disabled = state.picked.size < 2;
}

// ---- chats -----------------------------------------------------------------------------------------------
function newSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// Opens a chat with one persona or a scene of several; `sid` resumes a saved conversation.
async function openChat(slugs, sid = null) {
  stopReply();
  const scene = slugs.length > 1;
  const chat = { sid: sid || newSessionId(), slugs, scene, model: slugs.join("+"), messages: [], greetings: [], greeting: 0 };
  state.chat = chat;
  localStorage.setItem(CURRENT_ITEM, JSON.stringify({ sid: chat.sid, model: chat.model }));
  show("chat");
  $("messages").replaceChildren(); // not the previous chat's lines while this one loads
  $("greeting-picker").hidden = true;
  $("chat-title").textContent = slugs.map((s) => persona(s).name).join(", ");
  $("chat-portraits").replaceChildren(...slugs.map((s) => portrait(s, true)));
  $("export-button").disabled = scene;
  $("info").hidden = true;
  $("info-button").setAttribute("aria-expanded", "false");
  if (sid) {
    const stored = await getJSON(sessionPath(chat, `messages?model=${encodeURIComponent(chat.model)}`));
    chat.messages = stored.data.map((m) => storedMessage(chat, m));
  }
  if (!scene && !chat.messages.length) {
    chat.greetings = (await getJSON(`/v1/personas/${encodeURIComponent(slugs[0])}/greetings`)).data;
    if (chat.greetings[0]) chat.messages.push({ role: "assistant", content: chat.greetings[0], name: slugs[0] });
  }
  if (state.chat === chat) render();
  $("message-input").focus();
}

function sessionPath(chat, tail) { return `/v1/sessions/${encodeURIComponent(chat.sid)}/${tail}`; }

// A message as GET .../messages gives it; a reply with stored alternatives (swipes) gets them back.
function storedMessage(chat, m) {
  const out = { role: m.role, content: m.content, name: m.name || (chat.scene ? "" : chat.slugs[0]) };
  if (m.swipes && m.swipes.length > 1) { out.alts = m.swipes.slice(); out.pick = m.swipe; }
  return out;
}

// Sends a change of the last message to the stored session at once (a scene's go with its next message).
// A chat the server has not stored yet (its first reply failed) has nothing to change: the page's copy is it.
async function saveChange(chat, method, tail, json) {
  if (chat.scene) return;
  const model = encodeURIComponent(chat.model);
  try {
    await request(sessionPath(chat, method === "DELETE" ? `${tail}?model=${model}` : tail),
      { method, json: method === "DELETE" ? undefined : { model: chat.model, ...json } });
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) throw e;
  }
}

function speakerOf(m) { return m.name || state.chat.slugs[0]; }
function shownText(m) { return m.alts ? m.alts[m.pick] : m.content; }

function render() {
  const chat = state.chat;
  const list = $("messages");
  list.replaceChildren(...chat.messages.map((m, i) => messageNode(m, i === chat.messages.length - 1)));
  const canPick = !chat.scene && chat.greetings.length > 1 && !chat.messages.some((m) => m.role === "user");
  $("greeting-picker").hidden = !canPick;
  $("greeting-count").textContent = `Greeting ${chat.greeting + 1} of ${chat.greetings.length}`;
  list.lastElementChild?.scrollIntoView({ block: "end" });
}

function messageNode(m, last) {
  const user = m.role === "user";
  const text = el("div", { className: "text" });
  renderRich(text, shownText(m));
  if (m.pieces) text.dataset.pieces = String(m.pieces);
  const who = user ? "You" : persona(speakerOf(m)).name;
  const bubble = el("div", { className: "bubble" }, el("div", { className: "speaker", textContent: who }), text);
  if (!user && m.audio) bubble.append(m.audio);
  if (last && !m.streaming) bubble.append(messageActions(m));
  const node = el("li", { className: `message ${user ? "user" : "char"}${m.streaming ? " streaming" : ""}`,
    "aria-label": `${who} says` }, user ? null : portrait(speakerOf(m), true), bubble);
  m.textNode = text;
  m.node = node;
  return node;
}

function button(label, onClick, aria) {
  const b = el("button", { type: "button", textContent: label, "aria-label": aria || label });
  b.addEventListener("click", () => onClick().catch(showError));
  return b;
}

function messageActions(m) {
  const bar = el("div", { className: "actions" });
  const chat = state.chat;
  const answered = chat.messages.some((x) => x.role === "user");
  if (m.role === "assistant" && answered) {
    if (m.alts && m.alts.length > 1) {
      bar.append(button("\u25C0", async () => pick(m, -1), "Previous alternative"),
        el("span", { className: "swipe-count", textContent: `${m.pick + 1}/${m.alts.length}` }),
        button("\u25B6", async () => pick(m, 1), "Next alternative"));
    }
    bar.append(button("Regenerate", regenerate, "Regenerate the reply (swipe)"));
    if (!chat.scene) bar.append(button("Continue", async () => continueReply(m), "Continue this reply"));
  }
  if (m.role === "user") bar.append(button("Reply", async () => runReply(), "Write a reply to this message"));
  if (m.role === "assistant") bar.append(button("Speak", async () => speak(m, true), "Speak this reply"));
  if (answered) {
    bar.append(button("Edit", async () => edit(m), "Edit the last message"),
      button("Delete", async () => {
        chat.messages.pop();
        render();
        await saveChange(chat, "DELETE", "messages/last");
      }, "Delete the last message"));
  }
  return bar;
}

async function pick(m, step) {
  m.pick = (m.pick + step + m.alts.length) % m.alts.length;
  m.content = m.alts[m.pick];
  m.audio = null;
  render();
  await saveChange(state.chat, "PUT", "swipes/chosen", { index: m.pick });
}

function edit(m) {
  const area = el("textarea", { value: shownText(m), "aria-label": "Edit the message" });
  const save = button("Save", async () => {
    m.content = area.value;
    if (m.alts) m.alts[m.pick] = area.value;
    m.audio = null;
    render();
    await saveChange(state.chat, "PUT", "messages/last", { content: area.value });
  });
  const cancel = button("Cancel", async () => render());
  area.addEventListener("keydown", (e) => { if (e.key === "Escape") { e.stopPropagation(); render(); } });
  m.textNode.replaceWith(area);
  m.node.querySelector(".actions").replaceChildren(save, cancel);
  area.focus();
}

// The conversation as OpenAI messages; in a scene each line names its speaker.
function requestMessages(messages) {
  return messages.map((m) => ({ role: m.role, content: shownText(m),
    ...(state.chat.scene && m.role === "assistant" && m.name ? { name: m.name } : {}) }));
}

async function send(text) {
  const chat = state.chat;
  if (!chat || chat.busy || !text.trim()) return null;
  chat.messages.push({ role: "user", content: text });
  $("message-input").value = "";
  render();
  return runReply();
}

function regenerate() {
  const chat = state.chat;
  const last = chat.messages[chat.messages.length - 1];
  if (!last || last.role !== "assistant") return Promise.resolve();
  if (!last.alts) { last.alts = [last.content]; last.pick = 0; }
  return runReply(last);
}

// Streams one reply after the conversation (into `target`, as a new alternative, when regenerating).
// Returns timings: {firstToken, done} in performance.now() ms.
async function runReply(target = null, options = {}) {
  const chat = state.chat;
  if (chat.busy) return null;
  const history = target ? chat.messages.slice(0, chat.messages.indexOf(target)) : chat.messages.slice();
  if (!history.length || history[history.length - 1].role !== "user") return null;
  const firstTurn = !history.some((m) => m.role === "assistant");
  const m = target || { role: "assistant", content: "", name: chat.scene ? "" : chat.slugs[0] };
  if (!target) chat.messages.push(m);
  if (m.alts) { m.alts.push(""); m.pick = m.alts.length - 1; }
  const body = { model: chat.model, messages: requestMessages(history), ...(options.maxTokens ? { max_tokens: options.maxTokens } : {}) };
  return streamInto(chat, m, "/v1/chat/completions", body, {
    ...options,
    after: chat.scene && firstTurn ? () => refreshFromServer(chat) : null, // a scene's opening lines come from the server
  });
}

// Continue: more of the last reply, written on from where it stops (the server keeps one message, extended).
function continueReply(m) {
  const chat = state.chat;
  if (chat.busy) return Promise.resolve(null);
  const before = shownText(m);
  return streamInto(chat, m, sessionPath(chat, "continue"), { model: chat.model }, {
    before,
    after: async () => {
      if (shownText(m) === before.trim() && !$("errors").textContent) $("errors").textContent = "The model had nothing to add: the reply is complete.";
    },
  });
}

// Streams a reply into message `m` (which has `before` already: a continued reply keeps its text), then runs
// `after` (a refresh from the server). Returns timings: {firstToken, done} in performance.now() ms.
async function streamInto(chat, m, path, body, { before = "", voice = $("auto-voice").checked, onFirstAudio,
  onFirstToken, after } = {}) {
  m.streaming = true; m.audio = null; m.pieces = 0;
  const setText = (t) => { if (m.alts) m.alts[m.pick] = t; m.content = t; };
  setText(before);
  chat.busy = true;
  chat.controller = new AbortController();
  $("stop-button").hidden = false;
  $("send-button").disabled = true;
  clearError();
  const started = performance.now();
  const times = { started, firstToken: null, done: null };
  let spoken = null;
  try {
    await streamChat(body, {
      path, sessionId: chat.sid, signal: chat.controller.signal,
      onStart: (response) => {
        const speaker = response.headers.get("X-Personae-Speaker");
        if (speaker) m.name = speaker;
        render();
        if (voice) spoken = startVoice(m, true, onFirstAudio);
      },
      onPiece: (_, text) => {
        if (times.firstToken === null) {
          times.firstToken = performance.now();
          debug("first token", ms(times.firstToken - started));
          if (onFirstToken) onFirstToken();
        }
        setText(before + text);
        renderRich(m.textNode, before + text);
        m.pieces = (m.pieces || 0) + 1;
        m.textNode.dataset.pieces = String(m.pieces); // how many pieces the reply came in (the tests read it)
        if (spoken) spoken.feed(text);
      },
    });
  } catch (e) {
    if (e.name !== "AbortError") showError(e);
    if (!before && !shownText(m)) { // stopped or failed before any text: no empty reply is left behind
      if (m.alts) { m.alts.pop(); m.pick = m.alts.length - 1; m.content = m.alts[m.pick]; } else chat.messages.pop();
    }
  }
  times.done = performance.now();
  debug("reply", ms(times.done - started));
  setText(shownText(m).trim());
  m.streaming = false;
  if (spoken) spoken.finish(shownText(m).slice(before.length));
  try {
    if (after && state.chat === chat) await after();
  } catch (e) { showError(e); }
  chat.busy = false;
  $("stop-button").hidden = true;
  $("send-button").disabled = false;
  if (state.chat === chat) render();
  return times;
}

async function refreshFromServer(chat) {
  const stored = await getJSON(sessionPath(chat, `messages?model=${encodeURIComponent(chat.model)}`));
  if (stored.data.length) chat.messages = stored.data.map((m) => storedMessage(chat, m));
}

function stopReply() {
  if (state.chat && state.chat.controller) state.chat.controller.abort();
}

// ---- voice -------------------------------------------------------------------------------------------------
function startVoice(m, autoplay, onFirstAudio) {
  m.audio = el("audio", { controls: true, hidden: true, "aria-label": `${persona(speakerOf(m)).name}'s voice` });
  m.audio.hidden = false;
  if (m.node) m.node.querySelector(".bubble").append(m.audio);
  return new SpokenReply(speakerOf(m), m.audio, { autoplay, onFirstAudio, onError: showError });
}

async function speak(m, autoplay) {
  const spoken = startVoice(m, autoplay);
  await spoken.finish(shownText(m));
}

const recorder = new Recorder();
let recording = false;

async function talkStart() {
  if (recording || !state.chat || state.chat.busy) return;
  recording = true;
  $("talk-button").classList.add("recording");
  $("talk-button").textContent = "Recording\u2026 release to send";
  try { await recorder.start(); } catch (e) { recording = false; talkReset(); showError(`No microphone: ${e.message || e}`); }
}

function talkReset() {
  $("talk-button").classList.remove("recording");
  $("talk-button").textContent = "Hold to talk";
}

// Release: transcribe, send, speak the answer; the time from release to its first audio goes to the debug panel.
async function talkStop() {
  if (!recording) return;
  recording = false;
  const released = performance.now();
  talkReset();
  const blob = await recorder.stop();
  if (!blob || !blob.size) return;
  try {
    const text = await transcribe(blob);
    const heard = performance.now();
    debug("push-to-talk: transcribed", ms(heard - released));
    if (!text.trim()) { showError("Nothing was heard in that recording."); return; }
    state.chat.messages.push({ role: "user", content: text.trim() });
    render();
    await runReply(null, {
      voice: true, maxTokens: CALL_MAX_TOKENS,
      onFirstToken: () => debug("push-to-talk: release to first token", ms(performance.now() - released)),
      onFirstAudio: () => {
        const total = performance.now() - released;
        debug("push-to-talk: release to first audio", ms(total));
        window.personaeLastTalk = total;
      },
    });
  } catch (e) { showError(e); }
}

// ---- conversations -----------------------------------------------------------------------------------------
async function loadSessions() {
  show("sessions");
  const body = await getJSON("/v1/sessions");
  const list = $("session-list");
  list.replaceChildren();
  if (!body.data.length) list.append(el("li", { textContent: "No conversations yet." }));
  for (const s of body.data) {
    const slugs = s.model.split("+");
    const title = slugs.map((x) => persona(x).name).join(", ");
    const when = new Date(s.updated * 1000).toLocaleString();
    const b = el("button", { type: "button", "aria-label": `Resume the conversation with ${title}, ${when}` },
      el("span", { textContent: `${title} \u00b7 ${s.messages} messages \u00b7 ${when}` }),
      el("span", { className: "last", textContent: s.last }));
    b.addEventListener("click", () => openChat(slugs, s.id).catch(showError));
    list.append(el("li", {}, b));
  }
}

// ---- cards: import, export, create -------------------------------------------------------------------------
async function importCard(file) {
  clearError();
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const created = await (await request("/v1/personas", { method: "POST", form })).json();
    await loadPersonas();
    show("gallery");
    $("errors").textContent = "";
    const item = document.querySelector(`li[data-slug="${CSS.escape(created.id)}"]`);
    if (item) item.classList.add("imported");
    debug("imported", created.id);
  } catch (e) {
    if (e instanceof ApiError && e.status === 400) {
      $("errors").textContent = `The card ${file.name} was refused: ${e.message}`;
    } else showError(e);
  }
}

async function exportCard() {
  const chat = state.chat;
  const format = $("export-format").value;
  const { url } = await blobUrl(`/v1/personas/${encodeURIComponent(chat.slugs[0])}?format=${format}`);
  const a = el("a", { href: url, download: `${chat.slugs[0]}.${format}` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function createPersona(idea, name) {
  const status = $("create-status"), bar = $("create-bar");
  $("create-progress").hidden = false;
  $("create-submit").disabled = true;
  const started = performance.now();
  const tick = setInterval(() => {
    const s = (performance.now() - started) / 1000;
    bar.value = Math.min(s, CREATE_SECONDS);
    status.textContent = `Writing the card, lorebook and voice\u2026 ${s.toFixed(0)} s`;
  }, 250);
  try {
    const created = await getJSON("/v1/personas/generate", {
      method: "POST", json: { idea, ...(name ? { name } : {}), time_limit: CREATE_SECONDS },
    });
    status.textContent = `Created ${created.name} in ${created.seconds} s.`;
    bar.value = CREATE_SECONDS;
    await loadPersonas();
    await openChat([created.id]);
  } finally {
    clearInterval(tick);
    $("create-submit").disabled = false;
  }
}

// ---- lore and memory ---------------------------------------------------------------------------------------
async function showInfo() {
  const chat = state.chat;
  const lore = $("lore-list"), memory = $("memory-view");
  lore.replaceChildren(); memory.replaceChildren();
  for (const slug of chat.slugs) {
    const card = await getJSON(`/v1/personas/${encodeURIComponent(slug)}?format=json`);
    const book = (card.data || card).character_book;
    for (const entry of (book && book.entries) || []) {
      lore.append(el("li", {}, el("span", { className: "keys", textContent: `${(entry.keys || []).join(", ")}: ` }),
        document.createTextNode(entry.content || "")));
    }
    if (chat.scene) continue;
    try {
      const snap = await getJSON(`/v1/sessions/${encodeURIComponent(chat.sid)}/memory?model=${encodeURIComponent(slug)}`);
      memory.append(el("p", { textContent: `Summary: ${snap.summary || "(none yet)"}` }),
        el("p", { textContent: `Archived turns: ${snap.archived_turns}` }));
      const notes = el("ul");
      for (const n of snap.notes) notes.append(el("li", { textContent: `#${n.id} ${n.text}` }));
      for (const r of snap.recalled) notes.append(el("li", { textContent: `recalled (${r.score}): ${r.text}` }));
      memory.append(notes);
    } catch (e) { memory.append(el("p", { textContent: e.message })); }
  }
  if (!lore.children.length) lore.append(el("li", { textContent: "No lorebook entries." }));
}

// ---- wiring ------------------------------------------------------------------------------------------------
function bind() {
  $("nav-gallery").addEventListener("click", () => { show("gallery"); loadPersonas().catch(showError); });
  $("nav-sessions").addEventListener("click", () => loadSessions().catch(showError));
  $("nav-create").addEventListener("click", () => show("create"));
  $("start-scene").addEventListener("click", () => openChat([...state.picked]).catch(showError));
  $("new-chat").addEventListener("click", () => openChat(state.chat.slugs).catch(showError));
  $("export-button").addEventListener("click", () => exportCard().catch(showError));
  $("info-button").addEventListener("click", () => {
    const open = $("info").hidden;
    $("info").hidden = !open;
    $("info-button").setAttribute("aria-expanded", String(open));
    if (open) showInfo().catch(showError);
  });
  $("debug-button").addEventListener("click", () => {
    $("debug").hidden = !$("debug").hidden;
    $("debug-button").setAttribute("aria-expanded", String(!$("debug").hidden));
  });
  $("key-button").addEventListener("click", () => { $("key-form").hidden = !$("key-form").hidden; $("key-input").focus(); });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setApiKey($("key-input").value.trim());
    $("key-input").value = "";
    $("key-form").hidden = true;
    start();
  });
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); send($("message-input").value).catch(showError); });
  $("message-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send($("message-input").value).catch(showError); }
  });
  $("stop-button").addEventListener("click", stopReply);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") stopReply();
    const typing = ["TEXTAREA", "INPUT"].includes(document.activeElement?.tagName);
    if (e.key === "`" && !typing && !e.repeat) { e.preventDefault(); talkStart(); }
  });
  document.addEventListener("keyup", (e) => { if (e.key === "`") talkStop(); });
  const talk = $("talk-button");
  talk.addEventListener("pointerdown", (e) => { e.preventDefault(); talkStart(); });
  talk.addEventListener("pointerup", () => talkStop());
  talk.addEventListener("pointerleave", () => talkStop());
  talk.addEventListener("keydown", (e) => { if ((e.key === " " || e.key === "Enter") && !e.repeat) { e.preventDefault(); talkStart(); } });
  talk.addEventListener("keyup", (e) => { if (e.key === " " || e.key === "Enter") { e.preventDefault(); talkStop(); } });
  $("greeting-prev").addEventListener("click", () => pickGreeting(-1));
  $("greeting-next").addEventListener("click", () => pickGreeting(1));
  $("import-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) importCard(file).finally(() => { e.target.value = ""; });
  });
  $("create-form").addEventListener("submit", (e) => {
    e.preventDefault();
    createPersona($("create-idea").value.trim(), $("create-name").value.trim()).catch(showError);
  });
  let depth = 0;
  document.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; $("drop-zone").hidden = false; });
  document.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; $("drop-zone").hidden = true; } });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    $("drop-zone").hidden = true;
    const file = e.dataTransfer.files[0];
    if (file) importCard(file);
  });
}

function pickGreeting(step) {
  const chat = state.chat;
  chat.greeting = (chat.greeting + step + chat.greetings.length) % chat.greetings.length;
  chat.messages[0].content = chat.greetings[chat.greeting];
  render();
}

async function start() {
  clearError();
  try {
    await loadPersonas();
    const current = JSON.parse(localStorage.getItem(CURRENT_ITEM) || "null");
    if (current && current.sid && current.model) await openChat(current.model.split("+"), current.sid);
    else show("gallery");
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) localStorage.removeItem(CURRENT_ITEM); // e.g. a deleted persona
    show("gallery");
    showError(e);
  }
}

window.personae = { state, send, regenerate, continueReply, importCard }; // for the browser tests and the console
bind();
start();
