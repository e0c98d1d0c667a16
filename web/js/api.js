// The gateway's HTTP API as the UI uses it: one place that adds the API key, turns OpenAI-shaped
// error bodies into ApiError, and names every route the pages call.

import { readEvents } from "./sse.js";

const KEY_STORAGE = "chatforge.apiKey";

export class ApiError extends Error {
  // `param`: the request field at fault, as the gateway names it ("run", "config.num_steps"), so a
  // form can show the message next to that field.
  constructor(status, message, code = null, param = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.param = param;
  }
}

export function getApiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

// Pages register here to hear about a 401/403, so the key dialog can open wherever it happened.
const authListeners = new Set();
export function onAuthProblem(listener) {
  authListeners.add(listener);
}

function headers(extra = {}) {
  const key = getApiKey();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

async function fail(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  let param = null;
  try {
    const body = await response.json();
    // {"error": {"message", "type", "param", "code"}}, or FastAPI's {"detail": ...} as a fallback.
    if (body?.error?.message) {
      message = body.error.message;
      code = body.error.code ?? body.error.type ?? null;
      param = body.error.param ?? null;
    } else if (body?.detail) {
      message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    }
  } catch {
    // Not JSON (a proxy's HTML page): the status line is all we have.
  }
  const error = new ApiError(response.status, message, code, param);
  if (response.status === 401 || response.status === 403) {
    for (const listener of authListeners) listener(error);
  }
  throw error;
}

/** fetch() against the gateway; resolves to the Response when it is 2xx, else throws ApiError. */
export async function call(method, path, { body, signal, accept } = {}) {
  const init = { method, signal, headers: headers(accept ? { Accept: accept } : {}) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) await fail(response);
  return response;
}

export async function json(method, path, options) {
  const response = await call(method, path, options);
  return response.status === 204 ? null : response.json();
}

/** POST or GET a server-sent-event stream; yields {event, data, id}. */
export async function* stream(method, path, { body, signal } = {}) {
  const response = await call(method, path, { body, signal, accept: "text/event-stream" });
  yield* readEvents(response);
}

const enc = encodeURIComponent;

// Routes, as the gateway (services/gateway) exposes them.
export const api = {
  models: () => json("GET", "/v1/models"),
  chatStream: (request, signal) => stream("POST", "/v1/chat/completions", { body: { ...request, stream: true }, signal }),

  conversations: (query = "") => json("GET", query ? `/v1/conversations?q=${enc(query)}` : "/v1/conversations"),
  conversation: (id) => json("GET", `/v1/conversations/${enc(id)}`),
  createConversation: (title, messages) => json("POST", "/v1/conversations", { body: { title, messages } }),
  updateConversation: (id, messages) => json("PATCH", `/v1/conversations/${enc(id)}`, { body: { messages } }),
  renameConversation: (id, title) => json("PATCH", `/v1/conversations/${enc(id)}`, { body: { title } }),
  deleteConversation: (id) => json("DELETE", `/v1/conversations/${enc(id)}`),

  jobs: () => json("GET", "/v1/jobs"),
  job: (id) => json("GET", `/v1/jobs/${enc(id)}`),
  submitJob: (spec) => json("POST", "/v1/jobs", { body: spec }),
  cancelJob: (id) => json("POST", `/v1/jobs/${enc(id)}/cancel`),
  jobEvents: (id, after, signal) => stream("GET", `/v1/jobs/${enc(id)}/events?after=${enc(after)}`, { signal }),
  jobLogs: async (id) => (await call("GET", `/v1/jobs/${enc(id)}/logs`)).text(),
  jobArtifacts: (id) => json("GET", `/v1/jobs/${enc(id)}/artifacts`),

  reports: () => json("GET", "/v1/reports"),
  reportBase: (run) => `/v1/reports/${enc(run)}/`,
  report: async (run) => (await call("GET", `/v1/reports/${enc(run)}/report.md`)).text(),
  reportData: (run) => json("GET", `/v1/reports/${enc(run)}/report.json`),

  checkpoints: () => json("GET", "/v1/checkpoints"),
  stageCurves: (run, stage) => json("GET", `/v1/checkpoints/${enc(run)}/${enc(stage)}/curves`),
  // Answers at once (state "loading"); poll deployment() for "serving" or "failed".
  deploy: (checkpoint) => json("POST", "/v1/deployments", { body: { checkpoint, wait: false } }),
  deployment: () => json("GET", "/v1/deployments/current"),
};
