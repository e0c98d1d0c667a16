// The reports page: the runs that have a report card; one run's card rendered in the page (its
// Markdown with the plots, tables and per-task scores trainer/report.py writes); and two runs side by
// side, their numbers in one table (from each card's report.json) and both cards beside it.
// Routes: #/reports, #/reports/<run>, #/reports/<run>/<other run> (run names have no "/").

import { api, ApiError, call } from "../api.js";
import { compareTable, reportRows } from "../compare.js";
import { formatTime, h, mount, scrollBox } from "../dom.js";
import { renderMarkdown, safeUrl } from "../markdown.js";

export function render(main, [run, other]) {
  const page = h("div", { class: "page" });
  mount(main, page);
  if (run && other) compareRuns(page, run, other);
  else if (run) showReport(page, run);
  else listRuns(page);
  return null;
}

// --- the list ---------------------------------------------------------------------------------

async function listRuns(page) {
  mount(page, h("h1", {}, "Reports"), h("p", { class: "muted" }, "Loading…"));
  let reports;
  try {
    reports = (await api.reports()).data;
  } catch (error) {
    return mount(page, h("h1", {}, "Reports"), h("p", { class: "muted" }, `Could not load reports: ${error.message}`));
  }
  if (!reports.length) return mount(page, h("h1", {}, "Reports"), h("p", { class: "muted" }, "No report cards yet: a pipeline job writes one at its end."));
  const picked = [];
  const compare = h("button", { type: "button", class: "button primary", disabled: true }, "Compare the two picked");
  compare.addEventListener("click", () => {
    location.hash = `#/reports/${picked.map(encodeURIComponent).join("/")}`;
  });
  // Two runs at most: ticking a third unticks the oldest pick.
  const boxes = new Map();
  const pick = (run, on) => {
    if (on) picked.push(run);
    else picked.splice(picked.indexOf(run), 1);
    if (picked.length > 2) boxes.get(picked.shift()).checked = false;
    compare.disabled = picked.length !== 2;
  };
  mount(
    page,
    h("h1", {}, "Reports"),
    scrollBox(
      "Reports table",
      h(
        "table",
        { class: "reports-table" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Compare")), h("th", { scope: "col" }, "Run"), h("th", { scope: "col" }, "Updated"))),
        h(
          "tbody",
          {},
          reports.map((r) => {
            const box = h("input", { type: "checkbox", "aria-label": `Compare ${r.run}`, onchange: (e) => pick(r.run, e.target.checked) });
            boxes.set(r.run, box);
            return h("tr", {}, h("td", {}, box), h("td", {}, h("a", { href: `#/reports/${encodeURIComponent(r.run)}` }, r.run)), h("td", {}, formatTime(r.updated)));
          }),
        ),
      ),
    ),
    h("div", { class: "row" }, compare, h("span", { class: "muted" }, "Tick two runs to compare their report cards.")),
  );
}

// --- one report card ----------------------------------------------------------------------------

async function showReport(page, run) {
  const back = h("p", {}, h("a", { href: "#/reports" }, "← All reports"));
  mount(page, back, h("p", { class: "muted" }, "Loading…"));
  try {
    mount(page, back, await reportCard(run));
  } catch (error) {
    mount(page, back, h("p", { class: "muted" }, `Could not load the report for ${run}: ${error.message}`));
  }
}

/** A run's report.md rendered as an article, its plots fetched with the API key. */
async function reportCard(run) {
  const markdown = await api.report(run);
  // Plots are named relative to the report: resolve them against the report's own URL.
  const base = new URL(api.reportBase(run), location.href);
  const resolve = (href) => safeUrl(new URL(href, base).href);
  const article = h("article", { class: "report", "aria-label": `Report for ${run}` }, renderMarkdown(markdown, resolve, { deferImages: true }));
  for (const img of article.querySelectorAll("img[data-src]")) loadImage(img);
  // A wide table scrolls sideways inside itself (css/console.css): keyboard users scroll it once
  // it has focus.
  for (const table of article.querySelectorAll("table")) table.tabIndex = 0;
  return article;
}

/** Fetch a plot with the API key (an <img> cannot send it) and show it from a blob URL. */
async function loadImage(img) {
  const src = img.dataset.src;
  if (new URL(src).origin !== location.origin) {
    img.src = src;
    return;
  }
  try {
    const blob = await (await call("GET", src)).blob();
    img.src = URL.createObjectURL(blob);
  } catch (error) {
    img.replaceWith(h("p", { class: "muted" }, `[${img.alt || "plot"}: ${error.message}]`));
  }
}

// --- two runs side by side ------------------------------------------------------------------------

async function compareRuns(page, a, b) {
  const back = h("p", {}, h("a", { href: "#/reports" }, "← All reports"));
  const numbers = scrollBox("Comparison table", h("p", { class: "muted" }, "Loading…"));
  const cards = [a, b].map((run) => h("section", { class: "card report-column", "aria-label": `Report card of ${run}` }, h("p", { class: "muted" }, "Loading…")));
  mount(
    page,
    back,
    h("h1", {}, `Reports: ${a} and ${b}`),
    h("section", { class: "card", "aria-labelledby": "numbers-heading" }, h("h2", { id: "numbers-heading" }, "Side by side"), numbers),
    h("div", { class: "report-columns" }, cards),
  );
  [a, b].forEach(async (run, i) => {
    try {
      mount(cards[i], await reportCard(run));
    } catch (error) {
      mount(cards[i], h("p", { class: "muted" }, `Could not load the report for ${run}: ${error.message}`));
    }
  });
  // report.json holds the card's numbers; a card written before it existed has only the Markdown.
  const data = await Promise.all(
    [a, b].map((run) =>
      api.reportData(run).catch((error) => {
        if (error instanceof ApiError && error.status === 404) return null;
        throw error;
      }),
    ),
  ).catch((error) => error);
  if (data instanceof Error) return mount(numbers, h("p", { class: "muted" }, `Could not load the numbers: ${data.message}`));
  const missing = [a, b].filter((_, i) => data[i] === null);
  mount(
    numbers,
    missing.length ? h("p", { class: "muted" }, `No report.json for ${missing.join(" and ")} (written by newer report cards): compare the cards below.`) : null,
    compareTable({ caption: `${a} and ${b} side by side`, columns: [a, b], rows: reportRows(data) }),
  );
}
