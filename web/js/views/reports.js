// The reports page: a run's report card (Markdown with PNG plots), as the gateway serves it.

import { api, call } from "../api.js";
import { formatTime, h, mount } from "../dom.js";
import { renderMarkdown, safeUrl } from "../markdown.js";

export function render(main, [run]) {
  const page = h("div", { class: "page" });
  mount(main, page);
  if (run) showReport(page, run);
  else listRuns(page);
  return null;
}

async function listRuns(page) {
  mount(page, h("h1", {}, "Reports"), h("p", { class: "muted" }, "Loading…"));
  try {
    const { data } = await api.reports();
    mount(
      page,
      h("h1", {}, "Reports"),
      data.length
        ? h("ul", { class: "report-list" }, data.map((r) => h("li", {}, h("a", { href: `#/reports/${encodeURIComponent(r.run)}` }, r.run), h("span", { class: "muted" }, ` · ${formatTime(r.updated)}`))))
        : h("p", { class: "muted" }, "No report cards yet: a pipeline job writes one at its end."),
    );
  } catch (error) {
    mount(page, h("h1", {}, "Reports"), h("p", { class: "muted" }, `Could not load reports: ${error.message}`));
  }
}

async function showReport(page, run) {
  const back = h("p", {}, h("a", { href: "#/reports" }, "← All reports"));
  mount(page, back, h("p", { class: "muted" }, "Loading…"));
  try {
    const markdown = await api.report(run);
    // Plots are named relative to the report: resolve them against the report's own URL.
    const base = new URL(api.reportBase(run), location.href);
    const resolve = (href) => safeUrl(new URL(href, base).href);
    const article = h("article", { class: "report", "aria-label": `Report for ${run}` }, renderMarkdown(markdown, resolve, { deferImages: true }));
    mount(page, back, article);
    for (const img of article.querySelectorAll("img[data-src]")) loadImage(img);
  } catch (error) {
    mount(page, back, h("p", { class: "muted" }, `Could not load the report for ${run}: ${error.message}`));
  }
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
