// Side-by-side comparisons: checkpoints on the models page, runs on the reports page. The rows are
// built from the gateway's data by pure functions (tested in the browser on their own); one table
// builder draws them, a column per thing compared and the best value of each row marked.

import { formatNumber, h } from "./dom.js";

/** Bits per byte and losses are better low; scores and accuracies high. */
export function lowerIsBetter(label) {
  return /bpb|loss|bits/i.test(label);
}

/** The index of the best value (null values skipped), or -1 when fewer than two can be compared. */
export function bestIndex(values, lower) {
  const present = values.map((v, i) => [v, i]).filter(([v]) => typeof v === "number" && Number.isFinite(v));
  if (present.length < 2) return -1;
  const [value, index] = present.reduce((a, b) => ((lower ? b[0] < a[0] : b[0] > a[0]) ? b : a));
  return present.filter(([v]) => v === value).length === present.length ? -1 : index; // a tie: no best
}

/**
 * Rows for checkpoints as GET /v1/checkpoints lists them: step, their metrics, then the eval
 * results (bits per byte, CORE and its tasks, ChatCORE and its tasks). `better` is "lower",
 * "higher" or null (not a score). Rows no checkpoint has are left out.
 */
export function checkpointRows(checkpoints) {
  const rows = [{ label: "step", values: checkpoints.map((c) => c.step ?? null), better: null }];
  const metricNames = union(checkpoints.map((c) => Object.keys(c.metrics || {}).filter((k) => k !== "step" && typeof c.metrics[k] === "number")));
  for (const name of metricNames) rows.push(scoreRow(name, checkpoints.map((c) => c.metrics?.[name])));
  rows.push(scoreRow("eval bpb", checkpoints.map((c) => c.eval?.bpb)));
  rows.push(...suiteRows("CORE", checkpoints.map((c) => c.eval?.core), "score"));
  rows.push(...suiteRows("ChatCORE", checkpoints.map((c) => c.eval?.chat), "chatcore"));
  return rows.filter((row) => row.values.some((v) => v !== null));
}

/**
 * Rows for runs as their report.json has them (trainer/report.py: summary_data): per stage the
 * final loss, bits per byte, CORE, ChatCORE and each task's accuracy, then the run's totals.
 */
export function reportRows(reports) {
  const stages = union(reports.map((r) => (r?.stages || []).map((s) => s.stage)));
  const rows = [];
  for (const stage of stages) {
    const rowsOf = reports.map((r) => (r?.stages || []).find((s) => s.stage === stage) ?? null);
    rows.push({ label: `${stage}: steps`, values: rowsOf.map((s) => s?.step ?? null), better: null });
    rows.push({ label: `${stage}: tokens`, values: rowsOf.map((s) => s?.tokens ?? null), better: null });
    for (const [key, label] of [["final_loss", "final loss"], ["val_bpb", "val bpb"], ["eval_bpb", "eval bpb"], ["core", "CORE"], ["chatcore", "ChatCORE"]]) {
      rows.push(scoreRow(`${stage}: ${label}`, rowsOf.map((s) => s?.[key])));
    }
    for (const [key, suite] of [["core_tasks", "CORE"], ["chat_tasks", "chat"]]) {
      const tasks = union(rowsOf.map((s) => Object.keys(s?.[key] || {})));
      for (const task of tasks) rows.push(scoreRow(`${stage}: ${suite} ${task}`, rowsOf.map((s) => s?.[key]?.[task]?.accuracy), "higher"));
    }
  }
  rows.push({ label: "total time (s)", values: reports.map((r) => r?.total_duration_s ?? null), better: null });
  rows.push({ label: "estimated cost ($)", values: reports.map((r) => r?.estimated_cost_dollars ?? null), better: null });
  return rows.filter((row) => row.values.some((v) => v !== null));
}

/** A table: `columns` head the values, one row per row, each row's best value marked. */
export function compareTable({ caption, columns, rows, className = "compare-table" }) {
  return h(
    "table",
    { class: className },
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "measure"), columns.map((c) => h("th", { scope: "col" }, c)))),
    h(
      "tbody",
      {},
      rows.map((row) => {
        const best = row.better ? bestIndex(row.values, row.better === "lower") : -1;
        return h(
          "tr",
          { dataset: { row: row.label } },
          h("th", { scope: "row" }, row.label, row.better ? betterHint(row.better) : null),
          row.values.map((v, i) =>
            h("td", { class: i === best ? "best" : null }, v === null ? "—" : formatNumber(v), i === best ? h("span", { class: "visually-hidden" }, " (best)") : null),
          ),
        );
      }),
    ),
  );
}

// --- helpers -------------------------------------------------------------------------------------

/** An arrow for the eye, words for a screen reader. */
function betterHint(better) {
  return [
    h("span", { class: "better muted", "aria-hidden": "true", title: `${better} is better` }, better === "lower" ? " ↓" : " ↑"),
    h("span", { class: "visually-hidden" }, ` (${better} is better)`),
  ];
}

function scoreRow(label, values, better = lowerIsBetter(label) ? "lower" : "higher") {
  return { label, values: values.map((v) => (typeof v === "number" ? v : null)), better };
}

/** CORE or ChatCORE and then each of its tasks' accuracy. */
function suiteRows(name, suites, scoreKey) {
  const rows = [scoreRow(name, suites.map((s) => s?.[scoreKey]), "higher")];
  const tasks = union(suites.map((s) => Object.keys(s?.tasks || {})));
  for (const task of tasks) rows.push(scoreRow(`${name === "CORE" ? "CORE" : "chat"} ${task}`, suites.map((s) => s?.tasks?.[task]?.accuracy), "higher"));
  return rows;
}

/** The distinct strings of several lists, in first-seen order. */
function union(lists) {
  return [...new Set(lists.flat())];
}
