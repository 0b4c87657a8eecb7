// The REST API as the dashboard calls it: the token kept for the browser session, errors as the
// API states them ({"error": "…"}), thrown as ApiError.

const TOKEN_KEY = "weir-token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/**
 * Calls the API; `body` is sent as is (a string: a job file; bytes: a module) or as JSON (an
 * object). Every request that changes something names its content type: the server refuses the
 * types a page on another site could send without asking (text/plain among them).
 */
export async function call(method, path, body) {
  const headers = {};
  const saved = token();
  if (saved) headers.Authorization = `Bearer ${saved}`;
  let payload = body;
  if (typeof body === "string") {
    headers["Content-Type"] = "application/toml";
  } else if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) {
    headers["Content-Type"] = "application/wasm";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  } else if (method !== "GET") {
    headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload });
  } catch (e) {
    throw new ApiError(0, `the server cannot be reached (${e.message})`);
  }
  const text = await response.text();
  let json;
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    json = { error: text };
  }
  if (!response.ok) throw new ApiError(response.status, json.error || `${response.status} ${response.statusText}`);
  return json;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);

/** Polls `path` until its `status` is no longer `in-progress`; returns the last answer. */
async function settle(path, { every = 300, limit = 600_000 } = {}) {
  const until = Date.now() + limit;
  for (;;) {
    const answer = await get(path);
    if (answer.status !== "in-progress" || Date.now() > until) return answer;
    await new Promise((resolve) => setTimeout(resolve, every));
  }
}

/**
 * POSTs `body` to `path`, which starts a request the API answers with a `request-id` (a
 * savepoint, an upgrade, a rollback); calls `accepted`, then waits at `statusPath(id)` until it
 * settles. Resolves to its status when that is `expected`; else throws `failed(status)`.
 */
export async function awaitRequest({ path, body, statusPath, expected, failed, accepted = () => {} }) {
  const { "request-id": id } = await post(path, body);
  accepted();
  const status = await settle(statusPath(id));
  if (status.status !== expected) throw new Error(failed(status));
  return status;
}
