// The jobs page: submit a stage or a pipeline, list jobs, and follow one job live: its curves (loss,
// validation bits per byte, learning rate, throughput) and a pipeline's stage timeline from its
// server-sent events, logs that follow the end, cancel, and resubmit with edits.

import { api, ApiError } from "../api.js";
import { LineChart } from "../charts.js";
import { formatDuration, formatNumber, formatTime, h, mount, scrollBox, toast } from "../dom.js";
import { jobForm } from "../job_form.js";
import { FINAL_STATES, JobProgress } from "../job_progress.js";

const POLL_MS = 5000; // the list is cheap to fetch; events make the detail view live instead
const LOG_POLL_MS = 2000; // logs have no stream of their own: re-read while the job runs

export function render(main, [jobId]) {
  return jobId ? renderJob(main, jobId) : renderList(main);
}

// --- list and submit ------------------------------------------------------------------------

function renderList(main) {
  const table = scrollBox("Jobs table");
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
  const form = jobForm({
    onSubmitted: (job) => {
      toast(`Submitted ${job.id}`);
      refresh();
    },
  });
  mount(
    main,
    h(
      "div",
      { class: "page" },
      h("h1", {}, "Training jobs"),
      h(
        "div",
        { class: "grid-2" },
        h("section", { class: "card", "aria-labelledby": "submit-heading" }, h("h2", { id: "submit-heading" }, "Submit a job"), form),
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

// --- one job --------------------------------------------------------------------------------

// The curves drawn from the job's events (job_progress.js collects them), in this order.
const CHARTS = [
  { name: "loss", title: "Training loss" },
  { name: "val_bpb", title: "Validation bits per byte" },
  { name: "lr", title: "Learning rate" },
  { name: "tokens_per_s", title: "Throughput (tokens/s)", format: (v) => formatNumber(Math.round(v)) },
];

function renderJob(main, jobId) {
  const controller = new AbortController();
  const progress = new JobProgress();
  const ui = {
    heading: h("h1", {}, `Job ${jobId}`),
    state: h("span", {}),
    summary: h("dl", { class: "stats" }),
    bar: h("progress", { max: 1, "aria-label": "Stage progress" }),
    stage: h("p", { class: "muted" }),
    timelineCard: h("section", { class: "card", "aria-labelledby": "timeline-heading", hidden: true }),
    timeline: h("ol", { class: "timeline", "aria-label": "Stages" }),
    charts: [],
    events: h("ol", { class: "event-log", tabindex: 0, "aria-label": "Events" }),
    logs: h("pre", { class: "logs", tabindex: 0, "aria-label": "Logs" }, "…"),
    follow: h("input", { type: "checkbox", id: "logs-follow", checked: true }),
    cancel: h("button", { type: "button", class: "button danger", hidden: true }, "Cancel job"),
    resubmit: h("button", { type: "button", class: "button", "aria-expanded": "false", "aria-controls": "resubmit-section", disabled: true }, "Resubmit with changes"),
    resubmitCard: h("section", { class: "card", id: "resubmit-section", "aria-labelledby": "resubmit-heading", hidden: true }),
    message: h("p", { role: "status" }),
    config: h("pre", {}),
    artifacts: scrollBox("Checkpoints of this run"),
  };
  mount(ui.timelineCard, h("h2", { id: "timeline-heading" }, "Stages"), ui.timeline);
  const chartFigures = CHARTS.map(chartFigure);

  ui.cancel.addEventListener("click", async () => {
    if (!window.confirm(`Cancel job ${jobId}?`)) return;
    try {
      showJob(ui, await api.cancelJob(jobId), progress);
    } catch (error) {
      toast(`Cancel failed: ${error.message}`, "error");
    }
  });
  const logs = followLogs(jobId, ui, progress);
  mount(
    main,
    h(
      "div",
      { class: "page" },
      h("p", {}, h("a", { href: "#/jobs" }, "← All jobs")),
      h("div", { class: "row between" }, h("div", { class: "row" }, ui.heading, ui.state), h("div", { class: "row" }, ui.resubmit, ui.cancel)),
      ui.message,
      ui.resubmitCard,
      h("section", { class: "card", "aria-labelledby": "progress-heading" }, h("h2", { id: "progress-heading" }, "Progress"), ui.stage, ui.bar, ui.summary),
      ui.timelineCard,
      h("section", { class: "card", "aria-labelledby": "curves-heading" }, h("h2", { id: "curves-heading" }, "Curves"), h("div", { class: "chart-grid" }, chartFigures)),
      h(
        "section",
        { class: "card", "aria-labelledby": "logs-heading" },
        h(
          "div",
          { class: "row between" },
          h("h2", { id: "logs-heading" }, "Logs"),
          h("div", { class: "row" }, h("label", { class: "row inline-check" }, ui.follow, "Follow the end"), h("button", { type: "button", class: "button small", "aria-label": "Refresh logs", onclick: logs.load }, "Refresh")),
        ),
        ui.logs,
      ),
      h("section", { class: "card", "aria-labelledby": "events-heading" }, h("h2", { id: "events-heading" }, "Events"), ui.events),
      h(
        "section",
        { class: "card", "aria-labelledby": "artifacts-heading" },
        h("div", { class: "row between" }, h("h2", { id: "artifacts-heading" }, "Checkpoints of this run"), h("button", { type: "button", class: "button small", "aria-label": "Refresh checkpoints", onclick: () => loadArtifacts(jobId, ui) }, "Refresh")),
        ui.artifacts,
      ),
      h("section", { class: "card", "aria-labelledby": "config-heading" }, h("h2", { id: "config-heading" }, "Config"), ui.config),
    ),
  );
  // Charts measure their container: make them once it is in the page.
  ui.charts = chartFigures.map((figure, i) => ({ ...CHARTS[i], figure, chart: new LineChart(figure.querySelector(".chart-area"), { format: CHARTS[i].format }) }));

  api
    .job(jobId)
    .then((job) => {
      showJob(ui, job, progress);
      setUpResubmit(ui, job);
      followEvents(jobId, ui, progress, controller.signal);
    })
    .catch((error) => mount(ui.stage, `Could not load the job: ${error.message}`));
  logs.load();
  loadArtifacts(jobId, ui);
  ui.onCheckpoint = () => loadArtifacts(jobId, ui);
  return () => {
    controller.abort();
    logs.stop();
    for (const { chart } of ui.charts) chart.destroy();
  };
}

function chartFigure({ name, title }) {
  const captionId = `chart-${name}-title`;
  return h(
    "figure",
    { class: "chart-card", "aria-labelledby": captionId, dataset: { curve: name } },
    h("figcaption", { id: captionId }, h("span", { class: "chart-title" }, title), " ", h("span", { class: "chart-value" }, "")),
    // Fixed height from the start (css/console.css): data arriving never moves what is below.
    h("div", { class: "chart-frame" }, h("div", { class: "chart-area" }), h("p", { class: "chart-empty muted" }, "No data yet")),
  );
}

// Redraw at most once a frame: a reconnect replays thousands of events at once.
function scheduleCharts(ui, progress) {
  if (ui.chartsPending) return;
  ui.chartsPending = true;
  requestAnimationFrame(() => {
    ui.chartsPending = false;
    drawCharts(ui, progress);
  });
}

function drawCharts(ui, progress) {
  for (const { name, figure, chart, format = formatNumber } of ui.charts) {
    const points = progress.curves[name];
    const byStage = new Map();
    for (const p of points) {
      if (!byStage.has(p.stage)) byStage.set(p.stage, []);
      byStage.get(p.stage).push([p.x, p.y]);
    }
    const series = [...byStage].map(([label, pts]) => ({ label, points: pts }));
    chart.set(series);
    figure.querySelector(".chart-empty").hidden = points.length > 0;
    // The numbers a screen reader (or anyone) can read: the latest value of each stage.
    figure.querySelector(".chart-value").textContent = series.map((s) => `${byStage.size > 1 ? `${s.label} ` : ""}${format(s.points.at(-1)[1])}`).join(" · ");
  }
}

function setUpResubmit(ui, job) {
  ui.resubmit.disabled = false;
  ui.resubmit.addEventListener("click", () => {
    const open = ui.resubmitCard.hidden;
    ui.resubmit.setAttribute("aria-expanded", String(open));
    if (!open) {
      ui.resubmitCard.hidden = true;
      return;
    }
    // Prefilled from this job's spec; a new job when submitted, this one is left as it is.
    const form = jobForm({
      prefix: "resubmit",
      spec: job,
      label: "Resubmit with changes",
      submitLabel: "Submit as a new job",
      onSubmitted: (created) => {
        toast(`Submitted ${created.id}`);
        location.hash = `#/jobs/${encodeURIComponent(created.id)}`;
      },
    });
    mount(ui.resubmitCard, h("h2", { id: "resubmit-heading" }, "Resubmit with changes"), form);
    ui.resubmitCard.hidden = false;
    form.querySelector("select, input").focus();
  });
}

/** The logs panel: re-read while the job runs; keep to the end unless the reader scrolled up. */
function followLogs(jobId, ui, progress) {
  let timer = null;
  const atEnd = () => ui.logs.scrollHeight - ui.logs.scrollTop - ui.logs.clientHeight < 8;
  ui.logs.addEventListener("scroll", () => {
    ui.follow.checked = atEnd(); // scrolling up to read stops following; back at the end resumes it
  });
  ui.follow.addEventListener("change", () => {
    if (ui.follow.checked) ui.logs.scrollTop = ui.logs.scrollHeight;
  });
  const load = async () => {
    let text;
    try {
      text = (await api.jobLogs(jobId)) || "(no log lines yet)";
    } catch (error) {
      text = `Could not load logs: ${error.message}`;
    }
    if (text === ui.logs.textContent) return; // unchanged: leave the reader's scroll position alone
    ui.logs.textContent = text;
    if (ui.follow.checked) ui.logs.scrollTop = ui.logs.scrollHeight;
  };
  const tick = async () => {
    const ended = FINAL_STATES.has(progress.state);
    await load();
    if (!ended) timer = setTimeout(tick, LOG_POLL_MS); // one last read after the job ended
  };
  timer = setTimeout(tick, LOG_POLL_MS);
  return { load, stop: () => clearTimeout(timer) };
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
  ui.timelineCard.hidden = job.stage !== "pipeline";
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
  // Every number has its place from the start ("—" until it is known), so a new stage, which
  // clears them, does not make the card shorter.
  mount(
    ui.summary,
    Object.entries(labels).map(([key, label]) =>
      h("div", { class: "stat" }, h("dt", {}, label), h("dd", {}, key in progress.latest ? (show[key] || formatNumber)(progress.latest[key]) : "—")),
    ),
  );
  drawTimeline(ui, progress);
  scheduleCharts(ui, progress);
}

function drawTimeline(ui, progress) {
  const longest = Math.max(1, ...progress.timeline.map((p) => (p.end ?? 0) - (p.start ?? 0)));
  mount(
    ui.timeline,
    progress.timeline.map((phase) => {
      const seconds = (phase.end ?? 0) - (phase.start ?? 0);
      const steps = phase.numSteps ? `step ${phase.step} of ${phase.numSteps}` : phase.step ? `step ${phase.step}` : "";
      return h(
        "li",
        { class: `timeline-item ${phase.status}`, dataset: { stage: phase.stage } },
        h("span", { class: "timeline-stage" }, phase.stage),
        h("span", { class: `phase-status ${phase.status}` }, phase.status),
        h("span", { class: "timeline-detail muted" }, [steps, formatDuration(seconds)].filter(Boolean).join(" · ")),
        // How long, against the longest phase: a picture of where the time went.
        h("span", { class: "timeline-bar", "aria-hidden": "true" }, h("span", { style: `width: ${Math.max(2, (100 * seconds) / longest).toFixed(1)}%` })),
      );
    }),
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
