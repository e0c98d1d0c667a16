// The models page: what is served and the last deployment's progress (loading, then serving or
// failed), every checkpoint with its metrics, eval scores and its stage's curves, a side-by-side
// comparison of the checkpoints picked, and deploy (admin keys only; the gateway answers 403
// otherwise and the page says so).

import { api } from "../api.js";
import { describeCurve, sparkline } from "../charts.js";
import { checkpointRows, compareTable } from "../compare.js";
import { formatNumber, formatTime, h, mount, scrollBox, toast } from "../dom.js";

const DEPLOY_POLL_MS = 500; // loading a small model takes seconds; a big one, minutes
const COMPARE_AT_MOST = 4; // columns that still fit beside each other

export function render(main) {
  const page = {
    served: h("div", {}),
    deployment: h("div", { id: "deployment-status", class: "deployment", role: "status" }),
    table: scrollBox("Checkpoints table"),
    compare: scrollBox("Comparison table"),
    checkpoints: [],
    picked: new Set(),
    curves: new Map(), // "run/stage" -> promise of its curves
    timer: null,
  };
  mount(
    main,
    h(
      "div",
      { class: "page" },
      h("h1", {}, "Models and checkpoints"),
      h("section", { class: "card", "aria-labelledby": "served-heading" }, h("h2", { id: "served-heading" }, "Served now"), page.served, page.deployment),
      h("section", { class: "card", "aria-labelledby": "ckpt-heading" }, h("h2", { id: "ckpt-heading" }, "Checkpoints"), page.table),
      h(
        "section",
        { class: "card", "aria-labelledby": "compare-heading" },
        h("h2", { id: "compare-heading" }, "Compare checkpoints"),
        h("p", { class: "muted" }, `Tick up to ${COMPARE_AT_MOST} checkpoints in the table to see their numbers side by side.`),
        page.compare,
      ),
    ),
  );
  drawServed(page);
  drawCheckpoints(page);
  followDeployment(page);
  return () => clearTimeout(page.timer);
}

// --- served model and deployment --------------------------------------------------------------

async function drawServed(page) {
  try {
    const { data } = await api.models();
    if (!data.length) return mount(page.served, h("p", { class: "muted" }, "No model is served."));
    mount(
      page.served,
      h(
        "ul",
        { class: "served-list" },
        data.map((m) => h("li", {}, h("strong", {}, m.id), m.checkpoint ? ` — checkpoint ${m.checkpoint}` : "", m.context_length ? ` · context ${m.context_length} tokens` : "")),
      ),
    );
  } catch (error) {
    mount(page.served, h("p", { class: "muted" }, `Could not load models: ${error.message}`));
  }
}

/** Show the current deployment record; while it is loading, poll until it serves or fails. */
async function followDeployment(page, announce = false) {
  clearTimeout(page.timer);
  let record;
  try {
    record = await api.deployment();
  } catch {
    // Nothing deployed through the API yet (404), or no access to the record.
    return mount(page.deployment, h("p", { class: "deployment-line muted" }, "No deployment through the API yet."), progressSlot(null));
  }
  drawDeployment(page.deployment, record);
  if (record.state === "loading") {
    page.timer = setTimeout(() => followDeployment(page, true), DEPLOY_POLL_MS);
    return;
  }
  if (!announce) return;
  drawServed(page);
  if (record.state === "serving") toast(`Deployed ${record.checkpoint}`);
  else toast(`Deploy of ${record.checkpoint} failed: ${record.message}`, "error");
}

function drawDeployment(box, record) {
  const since = record.deployed ? ` since ${formatTime(record.deployed)}` : "";
  const lines = {
    loading: [h("span", { class: "phase-status running" }, "loading"), ` ${record.checkpoint}…`],
    serving: [h("span", { class: "phase-status done" }, "serving"), ` ${record.checkpoint}${since}`],
    failed: [h("span", { class: "phase-status failed" }, "failed"), ` ${record.checkpoint}: ${record.message}`],
  };
  mount(box, h("p", { class: "deployment-line", dataset: { state: record.state } }, "Last deployment: ", lines[record.state] ?? record.state), progressSlot(record));
}

/** The loading bar, its space kept when there is none (the cards below do not move when a load
 * starts or ends). Indeterminate: the inference service reports no fraction while it loads. */
function progressSlot(record) {
  const loading = record?.state === "loading";
  return h("progress", { class: loading ? null : "idle", "aria-label": loading ? `Loading ${record.checkpoint}` : null, "aria-hidden": loading ? null : "true" });
}

async function deploy(page, checkpoint) {
  if (!window.confirm(`Serve ${checkpoint} instead of the current model?`)) return;
  try {
    drawDeployment(page.deployment, await api.deploy(checkpoint));
  } catch (error) {
    toast(`Deploy failed: ${error.message}`, "error");
    return;
  }
  page.timer = setTimeout(() => followDeployment(page, true), DEPLOY_POLL_MS);
}

// --- checkpoints --------------------------------------------------------------------------------

async function drawCheckpoints(page) {
  let checkpoints;
  try {
    checkpoints = (await api.checkpoints()).data;
  } catch (error) {
    return mount(page.table, h("p", { class: "muted" }, `Could not load checkpoints: ${error.message}`));
  }
  page.checkpoints = checkpoints;
  if (!checkpoints.length) {
    mount(page.compare);
    return mount(page.table, h("p", { class: "muted" }, "No checkpoints yet: train one on the Jobs page."));
  }
  // At first, compare the latest two that were evaluated (or the latest two at all).
  const evaluated = checkpoints.filter((c) => c.eval);
  for (const c of (evaluated.length >= 2 ? evaluated : checkpoints).slice(-2)) page.picked.add(c.id);

  // One column per metric any checkpoint reports, in first-seen order (the step has its own), then
  // the headline eval scores; the per-task scores are in the comparison.
  const metricNames = [...new Set(checkpoints.flatMap((c) => Object.keys(c.metrics || {}).filter((k) => k !== "step" && typeof c.metrics[k] === "number")))];
  const evalColumns = [
    ["eval bpb", (c) => c.eval?.bpb],
    ["CORE", (c) => c.eval?.core?.score],
    ["ChatCORE", (c) => c.eval?.chat?.chatcore],
  ].filter(([, get]) => checkpoints.some((c) => typeof get(c) === "number"));
  const value = (v) => (typeof v === "number" ? formatNumber(v) : "");
  mount(
    page.table,
    h(
      "table",
      { class: "checkpoints-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          [h("span", { class: "visually-hidden" }, "Compare"), "Checkpoint", "Step", "Saved", ...metricNames, ...evalColumns.map(([name]) => name), "Stage curves", h("span", { class: "visually-hidden" }, "Deploy")].map((label) =>
            h("th", { scope: "col" }, label),
          ),
        ),
      ),
      h(
        "tbody",
        {},
        checkpoints.map((c) =>
          h(
            "tr",
            { dataset: { id: c.id } },
            h("td", {}, compareBox(page, c)),
            h("td", {}, h("code", {}, c.id)),
            h("td", {}, formatNumber(c.step)),
            h("td", {}, formatTime(c.created)),
            metricNames.map((name) => h("td", {}, value(c.metrics?.[name]))),
            evalColumns.map(([, get]) => h("td", {}, value(get(c)))),
            h("td", { class: "curves-cell" }, curvesCell(page, c)),
            h("td", {}, h("button", { type: "button", class: "button small", "aria-label": `Deploy ${c.id}`, onclick: () => deploy(page, c.id) }, "Deploy")),
          ),
        ),
      ),
    ),
  );
  drawComparison(page);
}

function compareBox(page, checkpoint) {
  const box = h("input", { type: "checkbox", "aria-label": `Compare ${checkpoint.id}`, checked: page.picked.has(checkpoint.id) });
  box.addEventListener("change", () => {
    if (box.checked && page.picked.size >= COMPARE_AT_MOST) {
      box.checked = false;
      toast(`Compare at most ${COMPARE_AT_MOST} checkpoints at a time.`);
      return;
    }
    if (box.checked) page.picked.add(checkpoint.id);
    else page.picked.delete(checkpoint.id);
    drawComparison(page);
  });
  return box;
}

/** The stage's loss and validation bits-per-byte curves, this checkpoint's step marked. The cell
 * holds two fixed-size images from the start, so the table does not move when they are drawn. */
function curvesCell(page, checkpoint) {
  const key = `${checkpoint.run}/${checkpoint.stage}`;
  if (!page.curves.has(key)) page.curves.set(key, api.stageCurves(checkpoint.run, checkpoint.stage).catch(() => null));
  const loss = sparkline([], { label: "loss: loading" });
  const bpb = sparkline([], { label: "validation bits per byte: loading" });
  page.curves.get(key).then((curves) => {
    if (!curves) return;
    const mark = checkpoint.step;
    loss.replaceWith(sparkline(curves.loss, { label: describeCurve("loss", curves.loss), mark }));
    bpb.replaceWith(sparkline(curves.val_bpb, { label: describeCurve("validation bits per byte", curves.val_bpb), mark }));
  });
  return h("div", { class: "curves" }, h("span", { class: "curve-label", "aria-hidden": "true" }, "loss"), loss, h("span", { class: "curve-label", "aria-hidden": "true" }, "bpb"), bpb);
}

function drawComparison(page) {
  const picked = page.checkpoints.filter((c) => page.picked.has(c.id));
  if (picked.length < 2) return mount(page.compare, h("p", { class: "muted" }, "Pick at least two checkpoints."));
  mount(page.compare, compareTable({ caption: "Checkpoints side by side", columns: picked.map((c) => c.id), rows: checkpointRows(picked) }));
}
