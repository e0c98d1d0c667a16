// Markdown to safe DOM, for assistant messages and report cards: marked parses (GitHub-flavoured,
// inline HTML allowed as GitHub allows it), highlight.js colours fenced code, and DOMPurify decides
// what survives. Model output is untrusted, so the sanitizer is the gate: no scripts, event
// handlers, styles, forms, frames or media; links only to http(s) and opened with rel=noopener;
// images never fetched from anywhere unless the caller asks to load them itself.

import DOMPurify from "../vendor/dompurify-3.5.0/purify.es.mjs";
import hljs from "../vendor/highlightjs-cdn-assets-11.12.0/highlight.min.js";
import { Marked } from "../vendor/marked-18.3.0/marked.esm.js";
import { escapeHtml } from "./dom.js";
import { mathExtensions, typesetMath } from "./math.js";

/**
 * Render `source` into a sanitized DocumentFragment. `resolveUrl(href)` maps link and image targets
 * (report plots are relative to the report) and returns null to drop one. Images: with
 * `deferImages` an <img> keeps its target in `data-src` for a caller that fetches it (an <img>
 * cannot send the API key); otherwise it becomes a link to the image, so a reply cannot make the
 * browser fetch a tracking pixel. Inline data: images (no network) are shown as they are.
 */
export function renderMarkdown(source, resolveUrl = safeUrl, { deferImages = false } = {}) {
  const fragment = sanitize(parser.parse(source), { resolveUrl, deferImages });
  typesetMath(fragment);
  return fragment;
}

/** Sanitize an HTML string into a DocumentFragment (the gate renderMarkdown's output goes through). */
export function sanitize(html, { resolveUrl = safeUrl, deferImages = false } = {}) {
  policy = { resolveUrl, deferImages };
  try {
    const fragment = purifier.sanitize(html, PURIFY_CONFIG);
    linkImages(fragment);
    return fragment;
  } finally {
    policy = null;
  }
}

/** Allow relative URLs and http(s) only: no javascript:, data: or other schemes in links. */
export function safeUrl(href) {
  try {
    const url = new URL(href, document.baseURI);
    return url.protocol === "http:" || url.protocol === "https:" ? href : null;
  } catch {
    return null;
  }
}

/** The language a code element was tagged with (`language-python` -> "python"), or "". */
export function codeLanguage(code) {
  return [...code.classList].find((c) => c.startsWith("language-"))?.slice("language-".length) || "";
}

// --- the parser --------------------------------------------------------------------------------

const parser = new Marked({
  gfm: true,
  extensions: mathExtensions,
  renderer: {
    // Fenced code: highlighted when the fence names a language highlight.js knows. Without a name
    // nothing is guessed: auto-detection is slow and, on a streaming reply, changes its mind.
    code: ({ text, lang }) => codeHtml(text, (lang || "").trim().split(/\s+/)[0]),
  },
});

/** A highlighted <pre><code> block for `text` in `language`, sanitized like the rest. */
export function highlightedCode(text, language) {
  return sanitize(codeHtml(text, language));
}

function codeHtml(text, language) {
  const name = language.toLowerCase();
  const known = name && hljs.getLanguage(name);
  const body = known ? hljs.highlight(text, { language: name, ignoreIllegals: true }).value : escapeHtml(text);
  const tag = /^[\w+#.-]+$/.test(name) ? ` language-${name}` : "";
  return `<pre><code class="hljs${tag}">${body}</code></pre>\n`;
}

// --- the sanitizer -----------------------------------------------------------------------------

// Our own instance, so these hooks apply to this module's calls only.
const purifier = DOMPurify(window);
let policy = null; // the current call's {resolveUrl, deferImages}, read by the hooks

const PURIFY_CONFIG = {
  USE_PROFILES: { html: true }, // no SVG or MathML from the model (KaTeX's MathML is added after)
  RETURN_DOM_FRAGMENT: true,
  ALLOW_DATA_ATTR: false, // data-* is ours (data-src); the model's are dropped
  // Anything that fetches, submits, embeds or restyles the page; `id` and `name` could collide
  // with the app's own elements.
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "option", "iframe", "frame",
    "object", "embed", "video", "audio", "source", "track", "picture", "link", "meta", "base", "dialog"],
  FORBID_ATTR: ["style", "id", "name", "srcset", "background", "poster", "formaction", "action", "ping"],
};

// Classes the renderer and highlight.js write (`hljs-title function_`); any other class (the
// app's own `toast`, `visually-hidden`) would let a reply dress up as the page, so it is removed.
const OWN_CLASS = /^(hljs(-[\w-]+)?|language-[\w+#.-]+|math-(inline|display)|[a-z]+_)$/;

purifier.addHook("uponSanitizeAttribute", (node, data) => {
  if (data.attrName === "class") {
    data.attrValue = data.attrValue.split(/\s+/).filter((c) => OWN_CLASS.test(c)).join(" ");
    if (!data.attrValue) data.keepAttr = false;
  }
});

purifier.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    const href = policy.resolveUrl(node.getAttribute("href"));
    if (href === null) node.removeAttribute("href");
    else {
      node.setAttribute("href", href);
      node.setAttribute("rel", "noopener noreferrer nofollow");
      if (!href.startsWith("#")) node.setAttribute("target", "_blank"); // away from the chat, not in its place
    }
  }
  if (node.tagName === "IMG") {
    // The src goes now, while the node is in DOMPurify's inert document: once the fragment is in
    // the page, an <img> with a src would be fetched at once.
    const src = node.getAttribute("src") || "";
    node.removeAttribute("src");
    if (INLINE_IMAGE.test(src)) node.setAttribute("src", src);
    else {
      const target = src ? policy.resolveUrl(src) : null;
      if (target !== null) node.setAttribute(policy.deferImages ? "data-src" : "data-link", target);
    }
  }
});

const INLINE_IMAGE = /^data:image\/(png|gif|jpeg|webp);base64,[a-z0-9+/=\s]+$/i;

/** Images the caller will not load become a link to the image (or their alt text). */
function linkImages(fragment) {
  for (const img of fragment.querySelectorAll("img:not([src]):not([data-src])")) {
    const label = img.getAttribute("alt") || "image";
    const href = img.getAttribute("data-link");
    const doc = img.ownerDocument;
    let replacement = doc.createTextNode(label);
    if (href) {
      replacement = doc.createElement("a");
      for (const [name, value] of Object.entries({ href, rel: "noopener noreferrer nofollow", target: "_blank", class: "image-link" })) {
        replacement.setAttribute(name, value);
      }
      replacement.textContent = `🖼 ${label}`;
    }
    img.replaceWith(replacement);
  }
}
