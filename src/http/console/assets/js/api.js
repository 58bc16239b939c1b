// The console's only way to the server: every call carries the signed-in key as a bearer token (never a cookie,
// never in a URL, so another site cannot make the browser act with it) and the stated purpose; errors arrive in
// the API's one shape; images and downloads are fetched with the key and shown from memory.

const KEY = 'facematch.key';
const PURPOSE = 'facematch.purpose';

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  get purpose() { return sessionStorage.getItem(PURPOSE) || ''; },
  signIn(key, purpose) {
    sessionStorage.setItem(KEY, key.trim());
    this.setPurpose(purpose);
  },
  setPurpose(purpose) {
    if (purpose && purpose.trim()) sessionStorage.setItem(PURPOSE, purpose.trim());
    else sessionStorage.removeItem(PURPOSE);
  },
  signOut() {
    sessionStorage.removeItem(KEY);
  },
};

/** Called when the server no longer accepts the key (revoked, expired, rotated). */
let onUnauthorized = () => {};
export function whenUnauthorized(callback) { onUnauthorized = callback; }

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function target(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value == null || value === '') continue;
    for (const one of Array.isArray(value) ? value : [value]) params.append(name, String(one));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

/** One API call; resolves to the response when it succeeded, throws `ApiError` otherwise. */
export async function call(method, path, { json, form, query, signal } = {}) {
  const headers = { authorization: `Bearer ${session.key}` };
  if (session.purpose) headers['x-facematch-purpose'] = session.purpose;
  let body;
  if (json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  const response = await fetch(target(path, query), {
    method, headers, body, signal, cache: 'no-store', credentials: 'omit', redirect: 'error',
  });
  if (response.ok) return response;
  let code = `http_${response.status}`;
  let message = response.statusText || 'request failed';
  try {
    const error = (await response.json()).error;
    code = error.code;
    message = error.message;
  } catch { /* not the API's shape: keep the status */ }
  if (response.status === 401) onUnauthorized(message);
  throw new ApiError(response.status, code, message);
}

export async function get(path, query) {
  return (await call('GET', path, { query })).json();
}

export async function post(path, json) {
  return (await call('POST', path, { json })).json();
}

export async function send(method, path, json) {
  return (await call(method, path, { json })).json();
}

export async function upload(path, form) {
  return (await call('POST', path, { form })).json();
}

/** An image the key may see, as an object URL for an `<img>` (the policy allows `blob:` images only). */
export async function image(path) {
  const response = await call('GET', path);
  return URL.createObjectURL(await response.blob());
}

/** Saves what `path` answers as a file named `filename`. */
export async function download(path, query, filename) {
  const response = await call('GET', path, { query });
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement('a');
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/**
 * Server-sent events read with `fetch`, so the key travels in a header (EventSource cannot send one and would put
 * it in the URL). Yields `{event, id, data}` until the stream ends or `signal` aborts.
 */
export async function* events(path, query, signal) {
  const response = await call('GET', path, { query, signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll('\r\n', '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const message = { event: 'message', id: null, data: '' };
      for (const line of block.split('\n')) {
        if (!line || line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') message.event = text;
        else if (field === 'id') message.id = text;
        else if (field === 'data') message.data = message.data ? `${message.data}\n${text}` : text;
      }
      if (message.data) yield message;
    }
  }
}
