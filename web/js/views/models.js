// The models page: the model being served, every trained checkpoint with its metrics, and a
// deploy button (admin keys only; the gateway answers 403 otherwise and the page says so).

import { api } from "../api.js";
import { formatNumber, formatTime, h, mount, toast } from "../dom.js";

export function render(main) {
  const served = h("div", {});
  const table = h("div", { class: "table-scroll" });
  mount(
    main,
    h(
      "div",
      { class: "page" },
      h("h1", {}, "Models and checkpoints"),
      h("section", { class: "card", "aria-labelledby": "served-heading" }, h("h2", { id: "served-heading" }, "Served now"), served),
      h("section", { class: "card", "aria-labelledby": "ckpt-heading" }, h("h2", { id: "ckpt-heading" }, "Checkpoints"), table),
    ),
  );
  const refresh = () => Promise.all([drawServed(served), drawCheckpoints(table, refresh)]);
  refresh();
  return null;
}

async function drawServed(box) {
  try {
    const { data } = await api.models();
    if (!data.length) return mount(box, h("p", { class: "muted" }, "No model is served."));
    mount(
      box,
      h(
        "ul",
        {},
        data.map((m) => h("li", {}, h("strong", {}, m.id), m.checkpoint ? ` — checkpoint ${m.checkpoint}` : "", m.context_length ? ` · context ${m.context_length} tokens` : "")),
      ),
    );
  } catch (error) {
    mount(box, h("p", { class: "muted" }, `Could not load models: ${error.message}`));
  }
}

async function drawCheckpoints(box, refresh) {
  let checkpoints;
  try {
    checkpoints = (await api.checkpoints()).data;
  } catch (error) {
    return mount(box, h("p", { class: "muted" }, `Could not load checkpoints: ${error.message}`));
  }
  if (!checkpoints.length) return mount(box, h("p", { class: "muted" }, "No checkpoints yet: train one on the Jobs page."));
  // One column per metric any checkpoint reports (bpb, CORE, chat evals...), in first-seen order;
  // the step has its own column already.
  const metricNames = [...new Set(checkpoints.flatMap((c) => Object.keys(c.metrics || {}).filter((k) => k !== "step" && typeof c.metrics[k] === "number")))];
  mount(
    box,
    h(
      "table",
      { class: "checkpoints-table" },
      h(
        "thead",
        {},
        h("tr", {}, ["Checkpoint", "Step", "Saved", ...metricNames, ""].map((label) => h("th", { scope: "col" }, label))),
      ),
      h(
        "tbody",
        {},
        checkpoints.map((c) =>
          h(
            "tr",
            { dataset: { id: c.id } },
            h("td", {}, h("code", {}, c.id)),
            h("td", {}, formatNumber(c.step)),
            h("td", {}, formatTime(c.created)),
            metricNames.map((name) => h("td", {}, name in (c.metrics || {}) ? formatNumber(c.metrics[name]) : "")),
            h("td", {}, h("button", { type: "button", class: "button small", onclick: () => deploy(c.id, refresh) }, "Deploy")),
          ),
        ),
      ),
    ),
  );
}

async function deploy(checkpoint, refresh) {
  if (!window.confirm(`Serve ${checkpoint} instead of the current model?`)) return;
  try {
    await api.deploy(checkpoint);
    toast(`Deployed ${checkpoint}`);
    refresh();
  } catch (error) {
    toast(`Deploy failed: ${error.message}`, "error");
  }
}
