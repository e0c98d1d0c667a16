// The chat page's keyboard shortcuts: one table that both the key handler and the help dialog read,
// so the dialog cannot list a key that does nothing. Keys the browser keeps for itself (Ctrl+T,
// Ctrl+W, Ctrl+Shift+C for its inspector, Shift+Esc for its task manager) are avoided.

import { h } from "../dom.js";

const ctrl = (e) => e.ctrlKey || e.metaKey; // Cmd on a Mac
const typing = (e) => e.target instanceof Element && e.target.closest("input, textarea, select, [contenteditable]");

// `keys`: alternatives, each a chord of keys held together, as the help dialog shows them.
export const SHORTCUTS = [
  { action: "help", keys: [["?"], ["Ctrl", "/"]], label: "Show these shortcuts", match: (e) => (e.key === "?" && !typing(e)) || (ctrl(e) && e.key === "/") },
  { action: "newChat", keys: [["Ctrl", "Shift", "O"]], label: "New chat", match: (e) => ctrl(e) && e.shiftKey && e.code === "KeyO" },
  { action: "focusInput", keys: [["/"]], label: "Focus the message box", match: (e) => e.key === "/" && !ctrl(e) && !typing(e) },
  { action: "search", keys: [["Ctrl", "Shift", "F"]], label: "Search conversations", match: (e) => ctrl(e) && e.shiftKey && e.code === "KeyF" },
  { action: "copyLastCode", keys: [["Ctrl", "Shift", ";"]], label: "Copy the last code block", match: (e) => ctrl(e) && e.shiftKey && e.code === "Semicolon" },
  { action: "copyLastReply", keys: [["Ctrl", "Shift", "X"]], label: "Copy the last reply", match: (e) => ctrl(e) && e.shiftKey && e.code === "KeyX" },
  { action: "stop", keys: [["Esc"]], label: "Stop generating", match: (e) => e.key === "Escape" },
];

/** Call `handlers[action](event)` for each shortcut pressed on `target`; returns the unbinding. */
export function bindShortcuts(target, handlers) {
  const listener = (event) => {
    if (event.defaultPrevented || event.isComposing) return;
    const shortcut = SHORTCUTS.find((s) => s.match(event));
    const handler = shortcut && handlers[shortcut.action];
    // A handler returns false when it had nothing to do (Esc with nothing streaming): the key
    // then keeps its usual meaning (closing a dialog, leaving a field).
    if (handler && handler(event) !== false) event.preventDefault();
  };
  target.addEventListener("keydown", listener);
  return () => target.removeEventListener("keydown", listener);
}

/** The help dialog listing every shortcut (and the composer's own keys). */
export function shortcutsDialog() {
  const row = (keys, label) => h("tr", {}, h("td", {}, keysView(keys)), h("td", {}, label));
  return h(
    "dialog",
    { class: "shortcuts-dialog", "aria-labelledby": "shortcuts-title" },
    h(
      "form",
      { method: "dialog", class: "stack" },
      h("h2", { id: "shortcuts-title" }, "Keyboard shortcuts"),
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Keys"), h("th", { scope: "col" }, "Action"))),
        h(
          "tbody",
          {},
          SHORTCUTS.map((s) => row(s.keys, s.label)),
          row([["Enter"]], "Send the message"),
          row([["Shift", "Enter"]], "New line in the message"),
        ),
      ),
      h("div", { class: "row end" }, h("button", { type: "submit", class: "button primary" }, "Close")),
    ),
  );
}

// [["?"], ["Ctrl", "/"]] -> "? or Ctrl+/": alternatives, each a chord of keys held together.
function keysView(alternatives) {
  const chord = (keys) => keys.flatMap((key, i) => (i ? ["+", h("kbd", {}, key)] : [h("kbd", {}, key)]));
  return alternatives.flatMap((keys, i) => (i ? [" or ", ...chord(keys)] : chord(keys)));
}
