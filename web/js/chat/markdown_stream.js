// A Markdown text drawn as it streams: one element per piece of splitBlocks(), and a piece is
// rendered again only when its text changed. Finished pieces therefore keep their DOM nodes (a
// code block the reader is selecting or copying is not replaced under them), and only the last,
// growing piece is redrawn, in one synchronous replaceChildren: nothing flickers.

import { renderMarkdown } from "../markdown.js";
import { splitBlocks } from "./blocks.js";

export class StreamingMarkdown {
  /** `decorate(element)` runs on each freshly rendered piece (the chat adds copy buttons). */
  constructor(container, decorate = () => {}) {
    this.container = container;
    this.decorate = decorate;
    this.pieces = []; // {text, element}
  }

  /** Show `text` (the whole text so far, not a delta). */
  update(text) {
    const texts = splitBlocks(text);
    texts.forEach((piece, i) => {
      let current = this.pieces[i];
      if (current && current.text === piece) return;
      if (!current) {
        current = { text: piece, element: document.createElement("div") };
        current.element.className = "md-piece";
        this.container.append(current.element);
        this.pieces.push(current);
      }
      current.text = piece;
      current.element.replaceChildren(renderMarkdown(piece));
      this.decorate(current.element);
    });
    // A text only grows while streaming; a shorter one (a stored text drawn again) drops the rest.
    for (const extra of this.pieces.splice(texts.length)) extra.element.remove();
  }
}
