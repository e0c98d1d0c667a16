// A small Markdown renderer for report cards: the subset our reports use (headings, paragraphs,
// lists, tables, fenced code, quotes, rules, emphasis, code spans, links, images). It builds DOM
// nodes directly, never innerHTML, so no input can inject markup or script. No CDN, no build step.

import { h } from "./dom.js";

/**
 * Render `source` into a DocumentFragment. `resolveUrl(href)` maps link and image targets (report
 * plots are relative to the report); it may return null to drop an unsafe target. With
 * `deferImages`, images get `data-src` instead of `src`, for a caller that fetches them itself
 * (an <img> cannot send the API key).
 */
export function renderMarkdown(source, resolveUrl = safeUrl, { deferImages = false } = {}) {
  const opts = { resolveUrl, deferImages };
  const lines = source.replace(/\r\n?/g, "\n").split("\n");
  const out = document.createDocumentFragment();
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (/^\s*$/.test(line)) {
      i++;
    } else if (/^```/.test(line)) {
      const lang = line.slice(3).trim();
      const body = [];
      for (i++; i < lines.length && !/^```\s*$/.test(lines[i]); i++) body.push(lines[i]);
      i++; // the closing fence (or the end of the text)
      out.append(h("pre", {}, h("code", { class: lang ? `language-${lang}` : null }, body.join("\n"))));
    } else if (/^#{1,6}\s/.test(line)) {
      const level = line.match(/^#+/)[0].length;
      out.append(h(`h${level}`, {}, inline(line.slice(level).trim().replace(/\s#+$/, ""), opts)));
      i++;
    } else if (/^\s{0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) {
      out.append(h("hr"));
      i++;
    } else if (isTableStart(lines, i)) {
      i = table(lines, i, out, opts);
    } else if (/^>/.test(line)) {
      const body = [];
      for (; i < lines.length && /^>/.test(lines[i]); i++) body.push(lines[i].replace(/^>\s?/, ""));
      out.append(h("blockquote", {}, renderMarkdown(body.join("\n"), resolveUrl, { deferImages })));
    } else if (LIST_ITEM.test(line)) {
      i = list(lines, i, out, opts);
    } else {
      const body = [];
      for (; i < lines.length && !/^\s*$/.test(lines[i]) && !startsBlock(lines, i); i++) body.push(lines[i].trim());
      out.append(h("p", {}, inline(body.join(" "), opts)));
    }
  }
  return out;
}

const LIST_ITEM = /^\s{0,3}([-*+]|\d{1,9}[.)])\s+/;

function startsBlock(lines, i) {
  const line = lines[i];
  return /^(```|#{1,6}\s|>)/.test(line) || LIST_ITEM.test(line) || isTableStart(lines, i);
}

function isTableStart(lines, i) {
  return (
    /^\s*\|.*\|\s*$/.test(lines[i]) && i + 1 < lines.length && /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)+\|?\s*$/.test(lines[i + 1])
  );
}

function cells(row) {
  return row.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
}

function table(lines, i, out, opts) {
  const head = cells(lines[i]);
  const aligns = cells(lines[i + 1]).map((c) => (c.endsWith(":") ? (c.startsWith(":") ? "center" : "right") : null));
  const rows = [];
  for (i += 2; i < lines.length && /^\s*\|/.test(lines[i]); i++) rows.push(cells(lines[i]));
  const cell = (tag, text, col) => h(tag, { style: aligns[col] ? `text-align:${aligns[col]}` : null }, inline(text, opts));
  out.append(
    h(
      "div",
      { class: "table-scroll" },
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, head.map((c, col) => cell("th", c, col)))),
        h("tbody", {}, rows.map((r) => h("tr", {}, head.map((_, col) => cell("td", r[col] ?? "", col))))),
      ),
    ),
  );
  return i;
}

function list(lines, i, out, opts) {
  const ordered = /^\s*\d/.test(lines[i]);
  const items = [];
  while (i < lines.length && LIST_ITEM.test(lines[i]) && /^\s*\d/.test(lines[i]) === ordered) {
    const text = [lines[i].replace(LIST_ITEM, "")];
    // Continuation lines are indented; a blank line or a new item ends this one.
    for (i++; i < lines.length && /^\s{2,}\S/.test(lines[i]) && !LIST_ITEM.test(lines[i]); i++) text.push(lines[i].trim());
    items.push(h("li", {}, inline(text.join(" "), opts)));
  }
  out.append(h(ordered ? "ol" : "ul", {}, items));
  return i;
}

// Inline spans, earliest match first: code, image, link, strong, emphasis.
const INLINE = /`([^`]+)`|!\[([^\]]*)\]\(([^)\s]+)(?:\s+"[^"]*")?\)|\[([^\]]+)\]\(([^)\s]+)(?:\s+"[^"]*")?\)|\*\*(.+?)\*\*|__(.+?)__|\*([^*\s][^*]*?)\*|\b_([^_\s][^_]*?)_\b/;

function inline(text, opts) {
  const nodes = [];
  while (text) {
    const m = INLINE.exec(text);
    if (!m) {
      nodes.push(text);
      break;
    }
    if (m.index > 0) nodes.push(text.slice(0, m.index));
    text = text.slice(m.index + m[0].length);
    if (m[1] !== undefined) nodes.push(h("code", {}, m[1]));
    else if (m[3] !== undefined) {
      const src = opts.resolveUrl(m[3]);
      const attrs = opts.deferImages ? { "data-src": src, alt: m[2] } : { src, alt: m[2], loading: "lazy" };
      nodes.push(src ? h("img", attrs) : m[2]);
    } else if (m[5] !== undefined) {
      const href = opts.resolveUrl(m[5]);
      nodes.push(href ? h("a", { href, rel: "noopener noreferrer" }, inline(m[4], opts)) : inline(m[4], opts));
    } else if (m[6] !== undefined || m[7] !== undefined) nodes.push(h("strong", {}, inline(m[6] ?? m[7], opts)));
    else nodes.push(h("em", {}, inline(m[8] ?? m[9], opts)));
  }
  return nodes;
}

/** Allow relative URLs and http(s) only: a report must not smuggle in javascript: links. */
export function safeUrl(href) {
  try {
    const url = new URL(href, document.baseURI);
    return url.protocol === "http:" || url.protocol === "https:" ? href : null;
  } catch {
    return null;
  }
}
