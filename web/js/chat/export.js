// A conversation as files to download: Markdown (the branch on screen, readable anywhere) and JSON
// (the conversation as the gateway stores it, alternatives included). Also the Markdown of one
// message, which "Copy" puts on the clipboard.

import { contentToBlocks } from "../chat_stream.js";

/** One message ({content, toolRuns}) as Markdown: its text as written, tool runs as fenced code. */
export function messageMarkdown(message) {
  return contentToBlocks(message.content, message.toolRuns)
    .map((block) => {
      if (block.kind === "text") return block.text;
      if (block.kind === "python_call") return fenced(block.code, "python");
      const timing = block.duration_s != null ? `, ${block.duration_s.toFixed(2)} s` : "";
      return `Output (${block.outcome}${timing}):\n\n${fenced(block.output || block.message || "", "")}`;
    })
    .join("\n\n");
}

/** The conversation's branch on screen (tree nodes) as one Markdown document. */
export function conversationMarkdown(title, nodes) {
  const heading = { user: "You", assistant: "Assistant", system: "System" };
  const turns = nodes.map((node) => `## ${heading[node.role] || node.role}\n\n${messageMarkdown(node)}`);
  return [`# ${title}`, ...turns].join("\n\n") + "\n";
}

/** Offer `text` as a file download named `name`. */
export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  // The download has started from the click; the URL is not needed after this task.
  setTimeout(() => URL.revokeObjectURL(url), 0);
}

/** A file name from a title: "Hello there, model!" -> "hello-there-model". */
export function fileStem(title) {
  return title.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 60) || "conversation";
}

// --- helpers ---------------------------------------------------------------------------------

/** A fence longer than any backtick run inside, so code holding ``` stays one block. */
function fenced(code, language) {
  const longest = Math.max(2, ...(code.match(/`+/g) || []).map((run) => run.length));
  const fence = "`".repeat(longest + 1);
  return `${fence}${language}\n${code.replace(/\n$/, "")}\n${fence}`;
}
