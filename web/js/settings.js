// Sampling settings the chat page sends with each request, remembered in this browser.

const STORAGE = "chatforge.sampling";

// A blank field (null) is not sent. Blank temperature and top_p take the server's one default
// (docs/contracts.md: temperature 0.8 with top-k 50), the same as any other client that leaves them
// out. Blank max_tokens lets the gateway allow as many tokens as the model's context leaves, so no
// fixed number can overrun a small model's context (the demo's is 256 tokens).
export const DEFAULTS = Object.freeze({ model: "", temperature: null, top_p: null, max_tokens: null });
export const PLACEHOLDERS = Object.freeze({ temperature: "default", top_p: "default", max_tokens: "auto" });

// Bounds the gateway accepts (services/gateway/gateway/openai_types.py).
export const LIMITS = Object.freeze({
  temperature: { min: 0, max: 2, step: 0.05 },
  top_p: { min: 0.01, max: 1, step: 0.01 },
  max_tokens: { min: 1, max: 4096, step: 1 },
});

export function loadSampling() {
  try {
    return { ...DEFAULTS, ...JSON.parse(localStorage.getItem(STORAGE) || "{}") };
  } catch {
    return { ...DEFAULTS };
  }
}

export function saveSampling(sampling) {
  localStorage.setItem(STORAGE, JSON.stringify(sampling));
}

/** Clamp a field to its bounds; a blank or non-number field falls back to its default (blank: not sent). */
export function clampField(name, raw) {
  const value = Number(raw);
  if (raw === "" || !Number.isFinite(value)) return DEFAULTS[name];
  const { min, max } = LIMITS[name];
  const clamped = Math.min(max, Math.max(min, value));
  return name === "max_tokens" ? Math.round(clamped) : clamped;
}

/** The request's sampling fields: only those the user set. */
export function samplingFields(sampling) {
  const out = {};
  for (const name of ["temperature", "top_p", "max_tokens"]) {
    if (sampling[name] !== null && sampling[name] !== undefined) out[name] = sampling[name];
  }
  return out;
}
