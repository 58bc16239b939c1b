// Building the page from data without ever parsing it as HTML (names and comments come from users), and the
// console's formats for scores, rates and times.

/** An element with attributes (`on…` functions become listeners) and children (text is never parsed as HTML). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/** An SVG element (boxes drawn over a photo). */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function score(value) {
  return value == null ? '—' : Number(value).toFixed(3);
}

/** An FPIR as a percentage a reviewer reads at a glance ("0.021 %"), or "—" when the model has no calibration. */
export function rate(value) {
  if (value == null) return '—';
  const percent = value * 100;
  const digits = percent >= 1 ? 1 : percent >= 0.01 ? 3 : 5;
  return `${percent.toFixed(digits)} %`;
}

export function when(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function duration(seconds) {
  if (seconds == null) return '—';
  const s = Math.max(0, Math.round(seconds));
  return s < 90 ? `${s} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`;
}

export function badge(text, kind = text) {
  return h('span', { class: `badge ${kind}` }, text.replaceAll('_', ' '));
}

/** Announces `text` to screen readers. */
export function announce(text) {
  const live = document.getElementById('live');
  if (live) live.textContent = text;
}

/** True when a key press belongs to a field being typed in, not to the page's shortcuts. */
export function typing(event) {
  const tag = event.target?.tagName;
  return tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT' || event.ctrlKey || event.metaKey || event.altKey;
}
