// The job submission form: a stage or the whole pipeline, a run name, the flags most runs change as
// fields and any other flag as JSON. The jobs page uses it for new jobs and, prefilled from a job,
// to resubmit that job with edits. The gateway validates the spec (chatforge/contracts/jobs.py):
// its 400 names the field at fault (`param`: "run", "config.num_steps") and the form shows the
// message next to that field, marked aria-invalid and described by the message.

import { api } from "./api.js";
import { h } from "./dom.js";

// JobSpec.stage: one stage of `chatforge train`, or the pipeline of them all.
const STAGES = ["tokenizer", "base", "mid", "sft", "rl", "eval", "report"];
const PRESETS = ["tiny", "d12", "d20", "d26"];
// The flags most runs change get fields; a blank field is left out, so the stage's recipe decides.
const FIELDS = [
  { name: "preset", label: "Preset", kind: "select" },
  { name: "depth", label: "Depth", kind: "number" },
  { name: "num_steps", label: "Steps", kind: "number" },
  { name: "workers", label: "Workers", kind: "number" },
  { name: "gpu", label: "Use GPUs", kind: "checkbox" },
  // The pipeline's RL stage: the preset decides (on from d12 up) unless this says otherwise.
  { name: "rl", label: "Reinforcement learning", kind: "tristate", choices: [["", "(preset default)"], ["true", "run RL"], ["false", "skip RL"]] },
  // mid, sft and the pipeline: who the model says it is (trainer/identity.yaml by default).
  { name: "identity", label: "Identity file", kind: "text", placeholder: "trainer/identity.yaml" },
];

/**
 * The form, named `label`. `spec` ({stage, run, config}) prefills it; `onSubmitted(job)` runs with
 * the created job. `prefix` keeps element ids unique when a page has two forms.
 */
export function jobForm({ prefix = "job", spec = null, label = "Submit a job", submitLabel = "Submit", onSubmitted }) {
  const id = (name) => `${prefix}-${name.replaceAll("_", "-")}`;
  const inputs = {
    stage: h("select", { id: id("stage"), name: "stage" }, h("option", { value: "pipeline" }, "whole pipeline"), STAGES.map((s) => h("option", { value: s }, s))),
    run: h("input", { id: id("run"), name: "run", type: "text", value: "demo", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]*", maxlength: 64, autocomplete: "off" }),
  };
  for (const field of FIELDS) inputs[field.name] = fieldInput(field, id(field.name));
  inputs.config = h("textarea", { id: id("config"), name: "config", rows: 3, spellcheck: false, placeholder: '{"seed": 1, "eval_every_steps": 50}' });
  const formError = h("p", { class: "form-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "button primary" }, submitLabel);

  const row = (name, label) => [h("label", { for: inputs[name].id, class: name === "config" ? "full" : null }, label), withError(inputs[name], name === "config")];
  const form = h(
    "form",
    { class: "form-grid job-form", "aria-label": label },
    row("stage", "Stage"),
    row("run", "Run name"),
    FIELDS.map((field) => row(field.name, field.label)),
    row("config", "Other flags (JSON object, optional)"),
    h("div", { class: "full" }, formError),
    h("div", { class: "full row end" }, submit),
  );
  if (spec) prefill(inputs, spec);

  // A field's message goes away as soon as it is edited.
  for (const input of Object.values(inputs)) input.addEventListener("input", () => clearError(input));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(inputs, formError);
    let config;
    try {
      config = jobConfig(inputs);
    } catch (e) {
      showError(inputs.config, e.message);
      inputs.config.focus();
      return;
    }
    submit.disabled = true;
    try {
      onSubmitted(await api.submitJob({ stage: inputs.stage.value, run: inputs.run.value, config }));
    } catch (e) {
      const field = fieldFor(inputs, e.param);
      if (field) {
        showError(field, withoutParam(e.message, e.param, field === inputs.config));
        field.focus();
      } else {
        formError.textContent = e.message;
      }
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

// --- helpers -------------------------------------------------------------------------------------

function fieldInput(field, id) {
  if (field.kind === "select") return h("select", { id, name: field.name }, h("option", { value: "" }, "(stage default)"), PRESETS.map((p) => h("option", { value: p }, p)));
  if (field.kind === "checkbox") return h("input", { id, name: field.name, type: "checkbox" });
  if (field.kind === "tristate") return h("select", { id, name: field.name }, field.choices.map(([value, label]) => h("option", { value }, label)));
  if (field.kind === "text") return h("input", { id, name: field.name, type: "text", placeholder: field.placeholder, autocomplete: "off", spellcheck: false });
  return h("input", { id, name: field.name, type: "number", min: 1, step: 1, inputmode: "numeric" });
}

/** The input and, under it, the slot its error message goes in (referenced by aria-describedby). */
function withError(input, full) {
  return h("div", { class: full ? "field full" : "field" }, input, h("p", { id: `${input.id}-error`, class: "field-error", hidden: true }));
}

function showError(input, message) {
  const slot = document.getElementById(`${input.id}-error`);
  slot.textContent = message;
  slot.hidden = false;
  input.setAttribute("aria-invalid", "true");
  input.setAttribute("aria-describedby", slot.id);
}

function clearError(input) {
  const slot = document.getElementById(`${input.id}-error`);
  if (slot) {
    slot.textContent = "";
    slot.hidden = true;
  }
  input.removeAttribute("aria-invalid");
  input.removeAttribute("aria-describedby");
}

function clearErrors(inputs, formError) {
  for (const input of Object.values(inputs)) clearError(input);
  formError.textContent = "";
}

/** The input the gateway's `param` names: "stage", "run", "config.<flag>" (a flag without a field
 * of its own is in the JSON box), or null for a problem with no field. */
function fieldFor(inputs, param) {
  if (!param) return null;
  if (param === "stage" || param === "run") return inputs[param];
  if (param === "config") return inputs.config;
  const flag = param.startsWith("config.") ? param.slice("config.".length).split(".")[0] : null;
  if (!flag) return null;
  return FIELDS.some((f) => f.name === flag) ? inputs[flag] : inputs.config;
}

/** "config.depth: Input should be ..." beside the Depth field needs no "config.depth: ". The JSON
 * box holds many flags, so there the message keeps the name of the one at fault. */
function withoutParam(message, param, keepName) {
  const prefix = `${param}: `;
  if (!message.startsWith(prefix)) return message;
  return keepName ? `${param.replace(/^config\./, "")}: ${message.slice(prefix.length)}` : message.slice(prefix.length);
}

function prefill(inputs, { stage, run, config = {} }) {
  inputs.stage.value = stage;
  inputs.run.value = run;
  const rest = { ...config };
  for (const field of FIELDS) {
    if (!(field.name in rest)) continue;
    if (field.kind === "checkbox") inputs[field.name].checked = rest[field.name] === true;
    else inputs[field.name].value = String(rest[field.name]);
    delete rest[field.name];
  }
  if (Object.keys(rest).length) inputs.config.value = JSON.stringify(rest, null, 1);
}

/** Flag values by field name, as JobSpec.config wants them (numbers, strings, booleans, lists). */
function jobConfig(inputs) {
  let extra = {};
  const text = inputs.config.value;
  if (text.trim()) {
    try {
      extra = JSON.parse(text);
    } catch (e) {
      throw new Error(`Not valid JSON: ${e.message}`);
    }
    const scalar = (v) => v === null || typeof v !== "object";
    const values = Object.values(extra ?? {}).every((v) => scalar(v) || (Array.isArray(v) && v.every(scalar)));
    if (typeof extra !== "object" || extra === null || Array.isArray(extra) || !values) {
      throw new Error("Must be a JSON object of values (numbers, strings, true/false, lists of them).");
    }
  }
  const config = {};
  for (const field of FIELDS) {
    const input = inputs[field.name];
    if (field.kind === "checkbox") {
      if (input.checked) config[field.name] = true;
    } else if (input.value !== "") {
      config[field.name] = field.kind === "number" ? Number(input.value) : field.kind === "tristate" ? input.value === "true" : input.value;
    }
  }
  return { ...config, ...extra };
}
