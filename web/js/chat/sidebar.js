// The conversation list: the gateway's stored conversations, newest first, searched by title and
// text (the gateway's `q`), each renamed inline or deleted.

import { api } from "../api.js";
import { h, mount, toast } from "../dom.js";

const SEARCH_DELAY_MS = 250; // one request per pause in typing, not one per key

/**
 * `page`: {currentId() -> the open conversation's id or null, titleChanged(title) for the open
 * one's new title, currentDeleted()}.
 */
export class Sidebar {
  constructor(page) {
    this.page = page;
    this.list = h("ul", { class: "conv-list" });
    this.search = h("input", { type: "search", class: "conv-search", "aria-label": "Search conversations", placeholder: "Search conversations", autocomplete: "off" });
    let timer = null;
    this.search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.refresh(), SEARCH_DELAY_MS);
    });
    this.element = h(
      "aside",
      { class: "sidebar", "aria-labelledby": "conv-heading" },
      h("div", { class: "row between" }, h("h2", { id: "conv-heading" }, "Conversations"), h("a", { class: "button small", href: "#/chat" }, "New chat")),
      this.search,
      this.list,
    );
  }

  focusSearch() {
    this.search.focus();
    this.search.select();
  }

  async refresh() {
    const query = this.search.value.trim();
    let conversations;
    try {
      conversations = (await api.conversations(query)).data;
    } catch (error) {
      mount(this.list, h("li", { class: "muted" }, `Could not load conversations: ${error.message}`));
      return;
    }
    if (query !== this.search.value.trim()) return; // a newer search is on its way
    if (!conversations.length) {
      mount(this.list, h("li", { class: "muted" }, query ? `No conversation mentions “${query}”.` : "No conversations yet."));
      return;
    }
    mount(this.list, conversations.map((c) => this.item(c)));
  }

  item(conversation) {
    const title = conversation.title || "Untitled";
    const current = conversation.id === this.page.currentId();
    const link = h("a", { href: `#/chat/${encodeURIComponent(conversation.id)}`, class: "conv-title", "aria-current": current ? "page" : null }, title);
    const item = h("li", { class: "conv-item", dataset: { id: conversation.id } });
    const rename = h("button", { type: "button", class: "icon-button", "aria-label": `Rename “${title}”`, title: "Rename" }, "✎");
    const remove = h("button", { type: "button", class: "icon-button", "aria-label": `Delete “${title}”`, title: "Delete" }, "×");
    rename.addEventListener("click", () => this.startRename(item, conversation));
    remove.addEventListener("click", () => this.delete(conversation));
    return mount(item, link, h("span", { class: "conv-actions" }, rename, remove));
  }

  startRename(item, conversation) {
    const input = h("input", { type: "text", value: conversation.title || "", "aria-label": "New title", maxlength: 200, required: true });
    const form = h("form", { class: "rename-form" }, input);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const title = input.value.trim();
      try {
        await api.renameConversation(conversation.id, title);
        if (conversation.id === this.page.currentId()) this.page.titleChanged(title);
      } catch (error) {
        toast(`Rename failed: ${error.message}`, "error");
      }
      this.refresh();
    });
    input.addEventListener("keydown", (event) => {
      if (event.key !== "Escape") return;
      event.preventDefault(); // the page's Esc (stop) is not meant
      this.refresh();
    });
    mount(item, form);
    input.focus();
    input.select();
  }

  async delete(conversation) {
    if (!window.confirm(`Delete “${conversation.title || "Untitled"}”? This cannot be undone.`)) return;
    try {
      await api.deleteConversation(conversation.id);
    } catch (error) {
      toast(`Delete failed: ${error.message}`, "error");
      return;
    }
    if (conversation.id === this.page.currentId()) this.page.currentDeleted();
    else this.refresh();
  }
}
