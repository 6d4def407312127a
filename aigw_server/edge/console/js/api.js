// The signed-in session and every call to the gateway's public REST API, always with the user's own token.

const SESSION_KEY = "aigw.session";
const REFRESH_MARGIN_MS = 30_000;

/** An answer the gateway refused, in its own terms (google.rpc.Status). */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

let current = readSession();
let refreshing = null;

function readSession() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
  } catch {
    return null;
  }
}

function keep(username, answer) {
  current = {
    username,
    role: answer.role,
    access: answer.access_token,
    refresh: answer.refresh_token,
    expiresAt: Date.now() + answer.expires_in * 1000,
  };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(current));
}

function forget() {
  current = null;
  sessionStorage.removeItem(SESSION_KEY);
  window.dispatchEvent(new CustomEvent("aigw:signed-out"));
}

export function session() {
  return current;
}

export function isAdmin() {
  return current?.role === "admin";
}

async function errorOf(res) {
  let code = 0;
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body && typeof body.message === "string" && body.message) {
      message = body.message;
      code = body.code || 0;
    } else if (body?.error?.message) {
      message = body.error.message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(res.status, code, message, res.headers.get("retry-after"));
}

async function token(form) {
  const res = await fetch("/auth/token", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(form),
  });
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

export async function signIn(username, password) {
  keep(username, await token({ username, password }));
  return current;
}

async function refresh() {
  if (!refreshing) {
    const held = current;
    refreshing = token({ grant_type: "refresh_token", refresh_token: held.refresh })
      .then((answer) => keep(held.username, answer))
      .catch((err) => {
        forget();
        throw err;
      })
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

/** Revokes the refresh token on the server first, so a signed-out session cannot be revived from a copy. */
export async function signOut() {
  const held = current;
  if (held?.refresh) {
    await fetch("/auth/revoke", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: held.refresh }),
    }).catch(() => undefined);
  }
  forget();
}

/**
 * Calls the API: `json` is sent as a JSON body, `body` as is (with `headers`).
 * Answers the parsed JSON, or the Response itself with `stream: true`.
 */
export async function call(method, path, { json, body, headers = {}, stream = false, signal } = {}) {
  if (!current) throw new ApiError(401, 16, "You are signed out.");
  if (current.expiresAt - REFRESH_MARGIN_MS < Date.now()) await refresh();
  const send = () => {
    const all = { ...headers, authorization: `Bearer ${current.access}` };
    if (json !== undefined) all["content-type"] = "application/json";
    return fetch(path, { method, headers: all, body: json !== undefined ? JSON.stringify(json) : body, signal });
  };
  let res = await send();
  if (res.status === 401 && current) {
    await refresh();
    res = await send();
  }
  if (!res.ok) throw await errorOf(res);
  return stream ? res : res.json();
}

export const get = (path, options) => call("GET", path, options);

/** The events of a text/event-stream answer, as {event, data} with `data` parsed from JSON. */
export async function* events(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

/** A query string from the non-empty entries of an object (arrays repeat their key). */
export function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== null && item !== "") q.append(key, String(item));
    }
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}
