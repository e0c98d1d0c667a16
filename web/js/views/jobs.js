// The jobs page: submit a stage or a pipeline, list jobs, and follow one job live (progress from
// its server-sent events, cancel, logs).

import { api, ApiError } from "../api.js";
import { formatDuration, formatNumber, formatTime, h, mount, toast } from "../dom.js";
import { FINAL_STATES, JobProgress } from "../job_progress.js";

const POLL_MS = 5000; // the list is cheap to fetch; events make the detail view live instead

export function render(main, [jobId]) {
  return jobId ? renderJob(main, jobId) : renderList(main);
}

// --- list and submit ------------------------------------------------------------------------

function renderList(main) {
  const table = h("div", { class: "table-scroll" });
  let timer = null;
  const refresh = async () => {
    try {
      drawJobs(table, (await api.jobs()).data);
    } catch (error) {
      mount(table, h("p", { class: "muted" }, `Could not load jobs: ${error.message}`));
      // A key without the admin scope will not gain it by asking every few seconds.
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) clearInterval(timer);
    }
  };
  mount(
    main,
    h(
      "div",
      { class: "page" },
      h("h1", {}, "Training jobs"),
      h(
        "div",
        { class: "grid-2" },
        h("section", { class: "card", "aria-labelledby": "submit-heading" }, h("h2", { id: "submit-heading" }, "Submit a job"), submitForm(refresh)),
        h(
          "section",
          { class: "card jobs-card", "aria-labelledby": "jobs-heading" },
          h("div", { class: "row between" }, h("h2", { id: "jobs-heading" }, "Jobs"), h("button", { type: "button", class: "button small", "aria-label": "Refresh jobs", onclick: refresh }, "Refresh")),
          table,
        ),
      ),
    ),
  );
  timer = setInterval(refresh, POLL_MS);
  refresh();
  return () => clearInterval(timer);
}

function drawJobs(table, jobs) {
  if (!jobs.length) {
    mount(table, h("p", { class: "muted" }, "No jobs yet."));
    return;
  }
  mount(
    table,
    h(
      "table",
      { class: "jobs-table" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Job"), h("th", { scope: "col" }, "What"), h("th", { scope: "col" }, "State"), h("th", { scope: "col" }, "Created"))),
      h(
        "tbody",
        {},
        jobs.map((job) =>
          h(
            "tr",
            { dataset: { id: job.id } },
            h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.id)),
            h("td", {}, describe(job)),
            h("td", {}, badge(job.state)),
            h("td", {}, formatTime(job.created)),
          ),
        ),
      ),
    ),
  );
}

function describe(job) {
  return `${job.stage === "pipeline" ? "whole pipeline" : job.stage} · ${job.run}`;
}

function badge(state) {
  return h("span", { class: `badge ${state}` }, state);
}

// The gateway's JobSpec (chatforge/contracts/jobs.py): a stage or "pipeline", a run name, and flag
// values for `chatforge train <stage>` by their field names, typed (numbers as numbers: "2" is refused).
const STAGES = ["tokenizer", "base", "mid", "sft", "rl", "eval", "report"];

function submitForm(onSubmitted) {
  const stage = h("select", { id: "job-stage", name: "stage" }, h("option", { value: "pipeline" }, "whole pipeline"), STAGES.map((s) => h("option", { value: s }, s)));
  const run = h("input", { id: "job-run", name: "run", type: "text", value: "demo", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]*", maxlength: 64 });
  // The flags most runs change get fields; any other flag goes in the JSON box. Blank fields are
  // left out, so the stage's recipe decides.
  const preset = h("select", { id: "job-preset", name: "preset" }, h("option", { value: "" }, "(stage default)"), PRESETS.map((p) => h("option", { value: p }, p)));
  const number = (id, name) => h("input", { id, name, type: "number", min: 1, step: 1, inputmode: "numeric" });
  const fields = { preset, depth: number("job-depth", "depth"), num_steps: number("job-steps", "num_steps"), workers: number("job-workers", "workers") };
  const gpu = h("input", { id: "job-gpu", name: "gpu", type: "checkbox" });
  const extra = h("textarea", { id: "job-config", name: "config", rows: 3, spellcheck: false, placeholder: '{"seed": 1, "eval_every_steps": 50}' });
  const error = h("p", { class: "hint", role: "alert" });
  const form = h(
    "form",
    { class: "form-grid", "aria-label": "Submit a job" },
    h("label", { for: "job-stage" }, "Stage"),
    stage,
    h("label", { for: "job-run" }, "Run name"),
    run,
    h("label", { for: "job-preset" }, "Preset"),
    preset,
    h("label", { for: "job-depth" }, "Depth"),
    fields.depth,
    h("label", { for: "job-steps" }, "Steps"),
    fields.num_steps,
    h("label", { for: "job-workers" }, "Workers"),
    fields.workers,
    h("label", { for: "job-gpu" }, "Use GPUs"),
    h("div", {}, gpu),
    h("label", { for: "job-config", class: "full" }, "Other flags (JSON object, optional)"),
    h("div", { class: "full" }, extra),
    h("div", { class: "full" }, error),
    h("div", { class: "full row end" }, h("button", { type: "submit", class: "button primary" }, "Submit")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    let config;
    try {
      config = jobConfig(fields, gpu.checked, extra.value);
    } catch (e) {
      error.textContent = e.message;
      extra.focus();
      return;
    }
    try {
      const job = await api.submitJob({ stage: stage.value, run: run.value, config });
      toast(`Submitted ${job.id}`);
      onSubmitted();
    } catch (e) {
      error.textContent = e.message;
    }
  });
  return form;
}

const PRESETS = ["tiny", "d12", "d20", "d26"];

/** Flag values by field name, as the gateway's JobSpec.config wants them (numbers, strings, booleans, lists). */
function jobConfig(fields, gpu, extraText) {
  let extra = {};
  if (extraText.trim()) {
    try {
      extra = JSON.parse(extraText);
    } catch (e) {
      throw new Error(`Other flags are not valid JSON: ${e.message}`);
    }
    const scalar = (v) => v === null || typeof v !== "object";
    const values = Object.values(extra ?? {}).every((v) => scalar(v) || (Array.isArray(v) && v.every(scalar)));
    if (typeof extra !== "object" || extra === null || Array.isArray(extra) || !values) {
      throw new Error("Other flags must be a JSON object of values (numbers, strings, true/false, lists of them).");
    }
  }
  const config = {};
  for (const [name, input] of Object.entries(fields)) {
    if (input.value === "") continue;
    config[name] = input.type === "number" ? Number(input.value) : input.value;
  }
  if (gpu) config.gpu = true;
  return { ...config, ...extra };
}

// --- one job --------------------------------------------------------------------------------

function renderJob(main, jobId) {
  const controller = new AbortController();
  const progress = new JobProgress();
  const ui = {
    heading: h("h1", {}, `Job ${jobId}`),
    state: h("span", {}),
    summary: h("dl", { class: "stats" }),
    bar: h("progress", { max: 1, "aria-label": "Stage progress" }),
    stage: h("p", { class: "muted" }),
    events: h("ol", { class: "event-log", "aria-label": "Events" }),
    logs: h("pre", { class: "logs", tabindex: 0, "aria-label": "Logs" }, "…"),
    cancel: h("button", { type: "button", class: "button danger", hidden: true }, "Cancel job"),
    message: h("p", { role: "status" }),
    config: h("pre", {}),
    artifacts: h("div", { class: "table-scroll" }),
  };
  ui.cancel.addEventListener("click", async () => {
    if (!window.confirm(`Cancel job ${jobId}?`)) return;
    try {
      showJob(ui, await api.cancelJob(jobId), progress);
    } catch (error) {
      toast(`Cancel failed: ${error.message}`, "error");
    }
  });
  const loadLogs = async () => {
    try {
      ui.logs.textContent = (await api.jobLogs(jobId)) || "(no log lines yet)";
      ui.logs.scrollTop = ui.logs.scrollHeight;
    } catch (error) {
      ui.logs.textContent = `Could not load logs: ${error.message}`;
    }
  };
  mount(
    main,
    h(
      "div",
      { class: "page" },
      h("p", {}, h("a", { href: "#/jobs" }, "← All jobs")),
      h("div", { class: "row between" }, h("div", { class: "row" }, ui.heading, ui.state), ui.cancel),
      ui.message,
      h("section", { class: "card", "aria-labelledby": "progress-heading" }, h("h2", { id: "progress-heading" }, "Progress"), ui.stage, ui.bar, ui.summary, h("h3", {}, "Events"), ui.events),
      h("section", { class: "card", "aria-labelledby": "logs-heading" }, h("div", { class: "row between" }, h("h2", { id: "logs-heading" }, "Logs"), h("button", { type: "button", class: "button small", "aria-label": "Refresh logs", onclick: loadLogs }, "Refresh")), ui.logs),
      h(
        "section",
        { class: "card", "aria-labelledby": "artifacts-heading" },
        h("div", { class: "row between" }, h("h2", { id: "artifacts-heading" }, "Checkpoints of this run"), h("button", { type: "button", class: "button small", "aria-label": "Refresh checkpoints", onclick: () => loadArtifacts(jobId, ui) }, "Refresh")),
        ui.artifacts,
      ),
      h("section", { class: "card", "aria-labelledby": "config-heading" }, h("h2", { id: "config-heading" }, "Config"), ui.config),
    ),
  );
  api
    .job(jobId)
    .then((job) => {
      showJob(ui, job, progress);
      followEvents(jobId, ui, progress, controller.signal);
    })
    .catch((error) => mount(ui.stage, `Could not load the job: ${error.message}`));
  loadLogs();
  loadArtifacts(jobId, ui);
  // Logs have no stream of their own: re-read them while the job runs.
  const logTimer = setInterval(() => FINAL_STATES.has(progress.state) || loadLogs(), POLL_MS);
  ui.onCheckpoint = () => loadArtifacts(jobId, ui);
  return () => {
    controller.abort();
    clearInterval(logTimer);
  };
}

async function loadArtifacts(jobId, ui) {
  let artifacts;
  try {
    artifacts = (await api.jobArtifacts(jobId)).data;
  } catch (error) {
    return mount(ui.artifacts, h("p", { class: "muted" }, `Could not load artifacts: ${error.message}`));
  }
  if (!artifacts.length) return mount(ui.artifacts, h("p", { class: "muted" }, "No checkpoints yet."));
  const metric = (m) =>
    Object.entries(m || {})
      .filter(([, v]) => typeof v === "number")
      .map(([k, v]) => `${k} ${formatNumber(v)}`)
      .join(", ");
  mount(
    ui.artifacts,
    h(
      "table",
      { class: "artifacts-table" },
      h("thead", {}, h("tr", {}, ["Checkpoint", "Step", "Metrics"].map((label) => h("th", { scope: "col" }, label)))),
      h("tbody", {}, artifacts.map((a) => h("tr", {}, h("td", {}, h("a", { href: "#/models" }, a.name)), h("td", {}, formatNumber(a.step)), h("td", {}, metric(a.metrics))))),
    ),
  );
}

function showJob(ui, job, progress) {
  ui.heading.textContent = `Job ${job.id} · ${describe(job)}`;
  ui.config.textContent = `${job.entrypoint}\n\n${JSON.stringify(job.config, null, 2)}`;
  showState(ui, job, progress);
}

function showState(ui, { state, message }, progress) {
  progress.state = state;
  mount(ui.state, badge(state));
  ui.message.textContent = message || "";
  ui.cancel.hidden = FINAL_STATES.has(state);
  drawProgress(ui, progress);
}

// After a broken stream (a gateway restart, a proxy's idle timeout) the page reconnects and asks for
// the events after the last one it saw, so none is lost or shown twice.
const RECONNECT_MS = 2000;

async function followEvents(jobId, ui, progress, signal) {
  let after = "0";
  let lastState = null;
  let told = false;
  while (!signal.aborted) {
    try {
      for await (const event of api.jobEvents(jobId, after, signal)) {
        if (event.id) after = event.id;
        if (event.event === "end") return; // the job is over and every event has been sent
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          continue; // a line the page does not know
        }
        const type = data.type || event.event;
        // Each connection starts with the job's state: after a reconnect that is no news.
        if (type === "state" && data.state === lastState) continue;
        if (type === "state") lastState = data.state;
        progress.add(type, data);
        ui.events.append(h("li", {}, eventLine(type, data)));
        while (ui.events.children.length > 200) ui.events.firstChild.remove();
        ui.events.scrollTop = ui.events.scrollHeight;
        if (type === "state") showState(ui, data, progress);
        else drawProgress(ui, progress);
        if (type === "checkpoint") ui.onCheckpoint();
      }
    } catch (error) {
      if (error.name === "AbortError") return;
      if (error instanceof ApiError && error.status < 500) {
        toast(`Event stream: ${error.message}`, "error"); // asking again will not help
        return;
      }
    }
    if (!told) {
      toast("Lost the job's event stream; reconnecting…");
      told = true;
    }
    await sleep(RECONNECT_MS, signal);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => clearTimeout(timer) || resolve(), { once: true });
  });
}

function drawProgress(ui, progress) {
  const fraction = progress.fraction;
  if (fraction === null) ui.bar.removeAttribute("value");
  else ui.bar.value = fraction;
  ui.stage.textContent = progress.stage
    ? `Stage ${progress.stage}: step ${progress.step}${progress.numSteps ? ` of ${progress.numSteps}` : ""}`
    : `State: ${progress.state ?? "unknown"}`;
  const labels = { loss: "Loss", val_bpb: "Val bits/byte", lr: "Learning rate", tokens_per_s: "Tokens/s", mfu: "MFU", eta_s: "ETA" };
  const show = { mfu: (v) => `${(100 * v).toFixed(1)}%`, eta_s: formatDuration };
  mount(
    ui.summary,
    Object.entries(labels)
      .filter(([key]) => key in progress.latest)
      .map(([key, label]) => h("div", { class: "stat" }, h("dt", {}, label), h("dd", {}, (show[key] || formatNumber)(progress.latest[key])))),
  );
}

function eventLine(type, data) {
  const when = data.time ? new Date(data.time * 1000).toLocaleTimeString() : "";
  const fields = Object.entries(data)
    .filter(([k, v]) => !["type", "version", "time", "run", "line"].includes(k) && v !== "" && typeof v !== "object")
    .map(([k, v]) => `${k}=${typeof v === "number" ? formatNumber(v) : v}`)
    .join(" ");
  return `${when} ${type} ${fields}`.trim();
}
