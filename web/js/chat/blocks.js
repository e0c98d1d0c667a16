// Where a streaming Markdown text can be cut so that each piece renders on its own, the same way
// as in the whole text: the pieces a reply has finished never change again, so their DOM is kept
// while only the last piece re-renders as tokens arrive. Pure logic, no DOM.
//
// A cut goes before a line that follows a blank line, starts in column 0 with a non-space
// character, and is outside a fenced code block: such a line always starts a new top-level block.
// Indented lines (a list item's second paragraph, indented code) stay with what they continue.
// A cut depends only on the text before it and the first character after it, so once made it
// stays made as more text arrives, and the pieces of a finished reply are the same whether it
// streamed in or was loaded whole.

// A backtick fence's info string has no backtick ("```js x```" is inline code, not a fence).
const FENCE = /^ {0,3}(`{3,}(?=[^`]*$)|~{3,})/;

/** Split `text` into consecutive pieces (joined, they are `text`); all but the last are final. */
export function splitBlocks(text) {
  const pieces = [];
  let start = 0; // where the current piece began
  let fence = null; // the open fence's marker ("```", "~~~~"), or null outside code
  let afterBlank = false;
  let pos = 0;
  while (pos < text.length) {
    const newline = text.indexOf("\n", pos);
    const complete = newline !== -1;
    const line = complete ? text.slice(pos, newline) : text.slice(pos);
    if (!fence && afterBlank && pos > start && /^\S/.test(line)) {
      pieces.push(text.slice(start, pos));
      start = pos;
    }
    // Only a whole line can open or close a fence: "``" may yet become "```python".
    if (!complete) break;
    if (fence) {
      if (closesFence(line, fence)) fence = null;
      afterBlank = false;
    } else {
      fence = line.match(FENCE)?.[1] ?? null;
      afterBlank = line.trim() === "";
    }
    pos = newline + 1;
  }
  pieces.push(text.slice(start));
  return pieces;
}

function closesFence(line, fence) {
  const match = line.match(/^ {0,3}(`{3,}|~{3,})\s*$/);
  return Boolean(match) && match[1][0] === fence[0] && match[1].length >= fence.length;
}
