// One assistant reply as it streams in: chat.completion.chunk objects folded into an ordered list
// of blocks (text, python call, python output), which is what the chat page draws. Pure logic, no DOM.

export class ReplyBuilder {
  constructor() {
    this.blocks = []; // {kind: "text", text} | {kind: "python_call", code} | {kind: "python_output", outcome, output, message, duration_s}
    this.finishReason = null;
    this.usage = null;
    this.error = null;
  }

  /** Fold one parsed chunk in; returns true if the blocks changed. */
  add(chunk) {
    if (chunk.error) {
      // Errors cross the stream as data: {"error": {"message", ...}}.
      this.error = chunk.error.message || String(chunk.error);
      return true;
    }
    if (chunk.usage) this.usage = chunk.usage;
    let changed = false;
    for (const choice of chunk.choices || []) {
      if ((choice.index ?? 0) !== 0) continue; // the page asks for one choice
      const delta = choice.delta || {};
      if (delta.content) {
        this.appendText(delta.content);
        changed = true;
      }
      if (delta.chatforge_tool) {
        this.blocks.push(toolBlock(delta.chatforge_tool));
        changed = true;
      }
      if (choice.finish_reason) this.finishReason = choice.finish_reason;
    }
    return changed;
  }

  appendText(text) {
    const last = this.blocks.at(-1);
    if (last && last.kind === "text") last.text += text;
    else this.blocks.push({ kind: "text", text });
  }

  /** The reply as a chat message's content, the form the gateway stores and the model reads back. */
  get content() {
    return blocksToContent(this.blocks);
  }

  /** The sandbox's reports of the reply's python runs (see blocksToToolRuns). */
  get toolRuns() {
    return blocksToToolRuns(this.blocks);
  }
}

// The chat schema (chatforge/chat.py) holds an assistant turn as a string, or as parts of type
// text, python and python_output, each {type, text} only. What the sandbox said of each run (its
// outcome, duration and message) is for the page to show again, so it is kept beside the content
// as the message's `tool_runs`, one per python_output part, in order: the gateway stores a
// message's other keys as given, and the page sends the model role and content alone.
const PART_OF = { text: "text", python_call: "python", python_output: "python_output" };
const BLOCK_OF = { text: "text", python: "python_call", python_output: "python_output" };

export function blocksToContent(blocks) {
  if (blocks.length === 1 && blocks[0].kind === "text") return blocks[0].text;
  return blocks.map((b) => ({ type: PART_OF[b.kind], text: b.kind === "text" ? b.text : b.kind === "python_call" ? b.code : b.output }));
}

/** The python outputs' sandbox reports, in order (the message's `tool_runs`), or undefined. */
export function blocksToToolRuns(blocks) {
  const runs = blocks.filter((b) => b.kind === "python_output").map(({ outcome, duration_s, message }) => ({ outcome, duration_s, message }));
  return runs.length ? runs : undefined;
}

export function contentToBlocks(content, toolRuns = []) {
  if (typeof content === "string") return [{ kind: "text", text: content }];
  let run = 0;
  return content.map((part) => {
    const kind = BLOCK_OF[part.type] || "text";
    if (kind === "python_call") return { kind, code: part.text };
    if (kind === "python_output") {
      // Without its report (stored by another client), the output is all there is: shown as ok.
      const report = toolRuns?.[run++] ?? {};
      return { kind, outcome: report.outcome ?? "ok", output: part.text, message: report.message ?? "", duration_s: report.duration_s ?? null };
    }
    return { kind, text: part.text };
  });
}

function toolBlock(tool) {
  if (tool.type === "python_call") return { kind: "python_call", code: tool.code ?? "" };
  return {
    kind: "python_output",
    outcome: tool.outcome ?? "ok",
    output: tool.output ?? "",
    message: tool.message ?? "",
    duration_s: tool.duration_s ?? null,
  };
}
