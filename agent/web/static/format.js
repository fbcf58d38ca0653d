// Role-play formatting done on text nodes: *actions* in italics, "quotes" highlighted. Untrusted text
// (cards, replies, file names) only ever becomes textContent; nothing here parses HTML.

const PATTERN = /(\*[^*\n]+\*|"[^"\n]+"|\u201c[^\u201d\n]+\u201d)/g;

// Replaces el's children with spans of `text`: plain, action (*...*), quote ("...").
export function renderRich(el, text) {
  el.replaceChildren();
  let last = 0;
  for (const match of text.matchAll(PATTERN)) {
    if (match.index > last) el.append(document.createTextNode(text.slice(last, match.index)));
    const span = document.createElement("span");
    const token = match[0];
    if (token.startsWith("*")) {
      span.className = "action";
      span.textContent = token.slice(1, -1);
    } else {
      span.className = "quote";
      span.textContent = token;
    }
    el.append(span);
    last = match.index + token.length;
  }
  if (last < text.length) el.append(document.createTextNode(text.slice(last)));
}

// A small element helper: el("button", {className: "x", textContent: "y", "aria-label": "z"}, child...).
// Properties are set as DOM properties; only aria-*, data-*, role and for go through setAttribute.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key.startsWith("aria-") || key.startsWith("data-") || key === "role" || key === "for") node.setAttribute(key, value);
    else if (key === "innerHTML" || key === "outerHTML") throw new Error("no HTML from strings");
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}
