// Math in Markdown: `$…$` and `\(…\)` inline, `$$…$$` and `\[…\]` displayed. A marked extension
// turns them into placeholders holding the TeX as plain text (so the sanitizer sees only text), and
// typesetMath() has KaTeX replace each placeholder with MathML, which the browser lays out itself
// (no KaTeX fonts or stylesheet needed). KaTeX is 600 kB, so it is imported the first time a
// message has math; until then the TeX shows as written.

import { escapeHtml } from "./dom.js";

const KATEX_URL = "../vendor/katex-0.19.1/katex.mjs";
// trust: false keeps \href, \url and \includegraphics off; the size limits keep a hostile macro
// from hanging the page.
const KATEX_OPTIONS = { output: "mathml", throwOnError: false, trust: false, strict: "ignore", maxSize: 50, maxExpand: 500 };

// A single `$` pair only counts when it hugs its content and is not followed by a digit, the
// usual rule (Pandoc's) that keeps "from $5 to $10" as money.
const INLINE = [
  [/^\$\$(?!\$)([\s\S]+?)\$\$/, true],
  [/^\\\[([\s\S]+?)\\\]/, true],
  [/^\\\(([\s\S]+?)\\\)/, false],
  [/^\$(?![\s$])((?:\\.|[^\\$\n])+?)(?<!\s)\$(?!\d)/, false],
];
const BLOCK = /^ {0,3}(?:\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\]) *(?:\n+|$)/;

export const mathExtensions = [
  {
    name: "mathBlock",
    level: "block",
    start: (src) => src.match(/^ {0,3}(\$\$|\\\[)/m)?.index,
    tokenizer(src) {
      const match = BLOCK.exec(src);
      if (match) return { type: "mathBlock", raw: match[0], tex: (match[1] ?? match[2]).trim() };
      return undefined;
    },
    renderer: (token) => `<div class="math-display">${escapeHtml(token.tex)}</div>\n`,
  },
  {
    name: "mathInline",
    level: "inline",
    start: (src) => src.match(/\$|\\[([]/)?.index,
    tokenizer(src) {
      for (const [pattern, display] of INLINE) {
        const match = pattern.exec(src);
        if (match) return { type: "mathInline", raw: match[0], tex: match[1].trim(), display };
      }
      return undefined;
    },
    renderer: (token) => `<span class="math-${token.display ? "display" : "inline"}">${escapeHtml(token.tex)}</span>`,
  },
];

/** Typeset every math placeholder under `root`: now if KaTeX is loaded, else once it is. */
export function typesetMath(root) {
  const pending = [...root.querySelectorAll(".math-inline, .math-display")];
  if (!pending.length) return;
  if (katex) {
    pending.forEach(typeset);
    return;
  }
  loading ??= import(KATEX_URL).then((module) => (katex = module.default));
  loading.then(
    () => pending.forEach(typeset),
    (error) => console.warn(`math stays as TeX: KaTeX did not load (${error})`),
  );
}

// --- helpers ---------------------------------------------------------------------------------

let katex = null;
let loading = null;
const done = new WeakSet();

function typeset(el) {
  if (done.has(el)) return;
  done.add(el);
  katex.render(el.textContent, el, { ...KATEX_OPTIONS, displayMode: el.classList.contains("math-display") });
}
