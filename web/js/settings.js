// Sampling settings the chat page sends with each request, remembered in this browser.

const STORAGE = "chatforge.sampling";

// The OpenAI defaults for temperature and top_p; 512 tokens keeps a small model's reply short.
export const DEFAULTS = Object.freeze({ model: "", temperature: 1.0, top_p: 1.0, max_tokens: 512 });

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

/** Clamp a field to its bounds; a blank or non-number field falls back to its default. */
export function clampField(name, raw) {
  const value = Number(raw);
  if (raw === "" || !Number.isFinite(value)) return DEFAULTS[name];
  const { min, max } = LIMITS[name];
  const clamped = Math.min(max, Math.max(min, value));
  return name === "max_tokens" ? Math.round(clamped) : clamped;
}
