// One message in the chat log: its body (a user's text as typed; a reply's Markdown, code blocks
// with copy buttons, and python tool calls as collapsible blocks), and its actions: copy, edit (a
// question) or regenerate (a reply), and ‹ 2/3 › to switch between alternatives.

import { contentToBlocks } from "../chat_stream.js";
import { h } from "../dom.js";
import { codeLanguage, highlightedCode } from "../markdown.js";
import { copyText } from "./clipboard.js";
import { messageMarkdown } from "./export.js";
import { StreamingMarkdown } from "./markdown_stream.js";

const ROLE_NAMES = { user: "You", assistant: "Assistant", system: "System" };

/**
 * `handlers`: {edit(node, text), regenerate(node), switchTo(node, step), busy()}; busy() says a
 * reply is streaming, when the actions wait.
 */
export class MessageView {
  constructor(node, handlers) {
    this.node = node;
    this.handlers = handlers;
    this.body = h("div", { class: "message-body" });
    this.actions = h("div", { class: "message-actions", role: "group", "aria-label": "Message actions", hidden: true });
    this.article = h(
      "article",
      { class: `message ${node.role}`, "aria-label": ROLE_NAMES[node.role] || node.role },
      h("div", { class: "role" }, ROLE_NAMES[node.role] || node.role),
      this.body,
      this.actions,
    );
    this.reply = node.role === "assistant" ? new ReplyBody(this.body) : null;
    this.drawContent();
  }

  drawContent() {
    if (this.reply) this.reply.update(contentToBlocks(this.node.content, this.node.toolRuns));
    else this.body.replaceChildren(h("div", { class: "text" }, this.node.content));
  }

  /** Mark the reply as streaming: no actions until finish(). */
  startStreaming() {
    this.article.setAttribute("aria-busy", "true");
    this.actions.hidden = true;
  }

  /** The streamed reply so far (ReplyBuilder blocks). */
  stream(blocks) {
    this.reply.update(blocks);
  }

  /** Streaming is over: the status line (why it stopped, tokens), then the actions. */
  finish(status, alternatives) {
    this.article.removeAttribute("aria-busy");
    if (status) this.article.insertBefore(h("p", { class: "status muted" }, status), this.actions);
    this.showActions(alternatives);
  }

  showActions({ index, count }) {
    const node = this.node;
    const button = (label, text, onclick) =>
      h("button", { type: "button", class: "icon-button", "aria-label": label, title: label, onclick }, text);
    const whenIdle = (fn) => () => (this.handlers.busy() ? null : fn());
    const switcher =
      count > 1
        ? h(
            "span",
            { class: "alternatives" },
            h("button", { type: "button", class: "icon-button", "aria-label": "Previous version", disabled: index === 0, onclick: whenIdle(() => this.handlers.switchTo(node, -1)) }, "‹"),
            h("span", { class: "alt-count" }, `${index + 1}/${count}`),
            h("button", { type: "button", class: "icon-button", "aria-label": "Next version", disabled: index === count - 1, onclick: whenIdle(() => this.handlers.switchTo(node, 1)) }, "›"),
          )
        : null;
    const copy = button("Copy message", "Copy", () => copyText(messageMarkdown(node), "the message"));
    const change =
      node.role === "user"
        ? button("Edit message", "✎ Edit", whenIdle(() => this.startEdit()))
        : button("Regenerate reply", "↻ Regenerate", whenIdle(() => this.handlers.regenerate(node)));
    this.actions.replaceChildren(...[switcher, copy, change].filter(Boolean));
    this.actions.hidden = false;
  }

  /** Edit a question in place; sending it forks the conversation there. */
  startEdit() {
    const input = h("textarea", { class: "edit-input", rows: 3, "aria-label": "Edited message" });
    input.value = this.node.content;
    const form = h(
      "form",
      { class: "edit-form" },
      input,
      h("div", { class: "row end" }, h("button", { type: "button", class: "button ghost small", onclick: () => this.cancelEdit() }, "Cancel"), h("button", { type: "submit", class: "button primary small" }, "Send")),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (text && !this.handlers.busy()) this.handlers.edit(this.node, text);
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        this.cancelEdit();
      } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    this.body.replaceChildren(form);
    this.actions.hidden = true;
    input.focus();
  }

  cancelEdit() {
    this.drawContent();
    this.actions.hidden = false;
    this.actions.querySelector('[aria-label="Edit message"]')?.focus();
  }
}

// --- a reply's body ---------------------------------------------------------------------------

/** Blocks (text, python call, python output) to DOM, reusing what is drawn as the list grows. */
class ReplyBody {
  constructor(body) {
    this.body = body;
    this.views = [];
  }

  update(blocks) {
    blocks.forEach((block, i) => {
      this.views[i] ??= this.create(block, this.views[i - 1]);
      this.views[i].update(block);
    });
  }

  create(block, previous) {
    if (block.kind === "text") {
      const element = this.body.appendChild(h("div", { class: "text markdown" }));
      const markdown = new StreamingMarkdown(element, decorateCode);
      return { update: (b) => markdown.update(b.text) };
    }
    // An output joins the call before it; one without (never streamed, but storable) stands alone.
    const tool = block.kind === "python_output" && previous?.tool && !previous.tool.hasOutput ? previous.tool : new ToolBlock();
    if (!tool.element.isConnected) this.body.append(tool.element);
    return { tool, update: (b) => (b.kind === "python_call" ? tool.setCall(b.code) : tool.setOutput(b)) };
  }
}

/** A python tool call and its output, collapsed to one line: outcome and duration. */
class ToolBlock {
  constructor() {
    this.hasOutput = false;
    this.outcome = h("span", { class: "tool-outcome" }, "running…");
    this.time = h("span", { class: "tool-time" });
    this.code = h("div", { class: "tool-code" });
    this.codeSection = h("div", { class: "tool-section", hidden: true }, h("div", { class: "tool-label" }, "Code"), this.code);
    this.output = h("pre", { class: "tool-result" });
    this.outputSection = h("div", { class: "tool-section", hidden: true }, h("div", { class: "tool-label" }, "Output"), this.output);
    this.element = h(
      "details",
      { class: "tool", dataset: { outcome: "running" } },
      h("summary", {}, h("span", { class: "tool-name" }, "Python"), this.outcome, this.time),
      this.codeSection,
      this.outputSection,
    );
  }

  setCall(code) {
    if (this.callCode === code) return;
    this.callCode = code;
    this.code.replaceChildren(highlightedCode(code, "python"));
    this.codeSection.hidden = false;
  }

  setOutput({ outcome, output, message, duration_s }) {
    this.hasOutput = true;
    this.element.dataset.outcome = outcome;
    this.outcome.textContent = outcome;
    this.time.textContent = duration_s != null ? `${duration_s.toFixed(2)} s` : "";
    this.output.textContent = [output, outcome === "ok" ? "" : message].filter(Boolean).join("\n") || "(no output)";
    this.outputSection.hidden = false;
  }
}

/** A copy button and language label above each code block of a freshly rendered piece. */
function decorateCode(piece) {
  for (const pre of piece.querySelectorAll("pre")) {
    const code = pre.querySelector("code") || pre;
    const language = codeLanguage(code);
    const copy = h("button", { type: "button", class: "icon-button copy-code", "aria-label": "Copy code" }, "Copy");
    copy.addEventListener("click", () => copyText(code.textContent, "the code"));
    const block = h("div", { class: "code-block" }, h("div", { class: "code-head" }, h("span", { class: "code-lang" }, language || "code"), copy));
    pre.replaceWith(block);
    block.append(pre);
  }
}
