// The chat page: conversation sidebar (stored by the gateway), the message log with streamed
// replies and python tool blocks, the composer with a stop button, and sampling settings.

import { api, ApiError } from "../api.js";
import { contentToBlocks, ReplyBuilder } from "../chat_stream.js";
import { h, mount, toast } from "../dom.js";
import { clampField, LIMITS, loadSampling, PLACEHOLDERS, samplingFields, saveSampling } from "../settings.js";

const TITLE_CHARS = 60;

export function render(main, [conversationId]) {
  const state = { id: conversationId || null, messages: [], controller: null, saving: null, sampling: loadSampling() };
  const ui = layout(state);
  mount(main, ui.root);

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    send(state, ui);
  });
  ui.input.addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter breaks the line, as in most chat apps.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.form.requestSubmit();
    }
  });
  ui.stop.addEventListener("click", () => state.controller?.abort());
  ui.root.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.controller) state.controller.abort();
  });

  loadModels(state, ui);
  refreshSidebar(state, ui);
  if (state.id) openConversation(state, ui);
  else drawMessages(state, ui);
  ui.input.focus();
  return () => state.controller?.abort();
}

function layout(state) {
  const ui = {};
  ui.list = h("ul", { class: "conv-list" });
  ui.sidebar = h(
    "aside",
    { class: "sidebar", "aria-labelledby": "conv-heading" },
    h("div", { class: "row between" }, h("h2", { id: "conv-heading" }, "Conversations"), h("a", { class: "button small", href: "#/chat" }, "New chat")),
    ui.list,
  );
  ui.log = h("div", { class: "messages", role: "log", "aria-live": "polite", "aria-label": "Messages" });
  ui.input = h("textarea", { id: "prompt", name: "prompt", rows: 3, placeholder: "Message the model (Enter sends, Shift+Enter for a new line, Esc stops)", required: true });
  ui.send = h("button", { type: "submit", class: "button primary" }, "Send");
  ui.stop = h("button", { type: "button", class: "button danger", hidden: true }, "Stop");
  ui.form = h(
    "form",
    { class: "composer", "aria-label": "Send a message" },
    h("label", { for: "prompt", class: "visually-hidden" }, "Message"),
    ui.input,
    h("div", { class: "composer-actions" }, ui.stop, ui.send),
  );
  ui.root = h(
    "div",
    { class: "chat-layout" },
    ui.sidebar,
    h("section", { class: "chat-main", "aria-labelledby": "chat-heading" }, h("h1", { id: "chat-heading", class: "visually-hidden" }, "Chat"), ui.log, ui.form),
    settingsPanel(state, ui),
  );
  return ui;
}

function settingsPanel(state, ui) {
  ui.model = h("select", { id: "model", name: "model" }, h("option", { value: "" }, "loading…"));
  ui.model.addEventListener("change", () => {
    state.sampling.model = ui.model.value;
    saveSampling(state.sampling);
  });
  const field = (name, label) => {
    const shown = (value) => (value === null ? "" : String(value));
    const placeholder = PLACEHOLDERS[name];
    const input = h("input", { id: name, name, type: "number", ...LIMITS[name], placeholder, value: shown(state.sampling[name]) });
    input.addEventListener("change", () => {
      state.sampling[name] = clampField(name, input.value);
      input.value = shown(state.sampling[name]);
      saveSampling(state.sampling);
    });
    return [h("label", { for: name }, label), input];
  };
  return h(
    "aside",
    { class: "settings", "aria-label": "Sampling settings" },
    h(
      "details",
      // Open beside the chat on wide screens; below it (narrower), closed until asked for.
      { open: window.matchMedia("(min-width: 1101px)").matches },
      h("summary", {}, "Settings"),
      h(
        "div",
        { class: "form-grid" },
        h("label", { for: "model" }, "Model"),
        ui.model,
        field("temperature", "Temperature"),
        field("top_p", "Top p"),
        field("max_tokens", "Max tokens"),
      ),
    ),
  );
}

async function loadModels(state, ui) {
  try {
    const { data } = await api.models();
    const ids = data.map((m) => m.id);
    mount(ui.model, ids.map((id) => h("option", { value: id }, id)));
    if (!ids.length) mount(ui.model, h("option", { value: "" }, "no model served"));
    ui.model.value = ids.includes(state.sampling.model) ? state.sampling.model : ids[0] || "";
  } catch (error) {
    mount(ui.model, h("option", { value: "" }, "unavailable"));
    toast(`Models: ${error.message}`, "error");
  }
}

// --- sidebar ------------------------------------------------------------------------------

async function refreshSidebar(state, ui) {
  let conversations;
  try {
    conversations = (await api.conversations()).data;
  } catch (error) {
    mount(ui.list, h("li", { class: "muted" }, `Could not load conversations: ${error.message}`));
    return;
  }
  if (!conversations.length) {
    mount(ui.list, h("li", { class: "muted" }, "No conversations yet."));
    return;
  }
  mount(ui.list, conversations.map((c) => sidebarItem(state, ui, c)));
}

function sidebarItem(state, ui, conversation) {
  const title = conversation.title || "Untitled";
  const link = h(
    "a",
    { href: `#/chat/${encodeURIComponent(conversation.id)}`, class: "conv-title", "aria-current": conversation.id === state.id ? "page" : null },
    title,
  );
  const item = h("li", { class: "conv-item", dataset: { id: conversation.id } });
  const rename = h("button", { type: "button", class: "icon-button", "aria-label": `Rename “${title}”`, title: "Rename" }, "✎");
  const remove = h("button", { type: "button", class: "icon-button", "aria-label": `Delete “${title}”`, title: "Delete" }, "×");
  rename.addEventListener("click", () => startRename(state, ui, item, conversation));
  remove.addEventListener("click", () => deleteConversation(state, ui, conversation));
  return mount(item, link, h("span", { class: "conv-actions" }, rename, remove));
}

function startRename(state, ui, item, conversation) {
  const input = h("input", { type: "text", value: conversation.title || "", "aria-label": "New title", maxlength: 200, required: true });
  const form = h("form", { class: "rename-form" }, input);
  const cancel = () => refreshSidebar(state, ui);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.renameConversation(conversation.id, input.value.trim());
    } catch (error) {
      toast(`Rename failed: ${error.message}`, "error");
    }
    refreshSidebar(state, ui);
  });
  input.addEventListener("keydown", (event) => event.key === "Escape" && cancel());
  mount(item, form);
  input.focus();
  input.select();
}

async function deleteConversation(state, ui, conversation) {
  if (!window.confirm(`Delete “${conversation.title || "Untitled"}”? This cannot be undone.`)) return;
  try {
    await api.deleteConversation(conversation.id);
  } catch (error) {
    toast(`Delete failed: ${error.message}`, "error");
    return;
  }
  if (conversation.id === state.id) location.hash = "#/chat";
  else refreshSidebar(state, ui);
}

async function openConversation(state, ui) {
  try {
    const conversation = await api.conversation(state.id);
    state.messages = conversation.messages || [];
  } catch (error) {
    toast(error instanceof ApiError && error.status === 404 ? "That conversation no longer exists." : error.message, "error");
    state.id = null;
  }
  drawMessages(state, ui);
}

// --- messages -----------------------------------------------------------------------------

function drawMessages(state, ui) {
  if (!state.messages.length) {
    mount(ui.log, h("p", { class: "empty muted" }, "Start a conversation: type a message below."));
    return;
  }
  mount(ui.log, state.messages.map((m) => messageView(m)));
  ui.log.scrollTop = ui.log.scrollHeight;
}

function messageView(message) {
  const body = h("div", { class: "message-body" });
  drawBlocks(body, contentToBlocks(message.content));
  return h(
    "article",
    { class: `message ${message.role}`, "aria-label": message.role === "user" ? "You" : "Assistant" },
    h("div", { class: "role" }, message.role === "user" ? "You" : "Assistant"),
    body,
  );
}

/** Draw blocks into `body`, reusing the nodes already there so streaming only touches the tail. */
function drawBlocks(body, blocks) {
  blocks.forEach((block, i) => {
    const existing = body.children[i];
    if (existing && existing.dataset.kind === block.kind && block.kind === "text") {
      existing.textContent = block.text;
    } else if (!existing) {
      body.append(blockView(block));
    }
  });
}

function blockView(block) {
  if (block.kind === "text") return h("div", { class: "text", dataset: { kind: "text" } }, block.text);
  if (block.kind === "python_call") {
    return h(
      "figure",
      { class: "tool tool-call", dataset: { kind: block.kind } },
      h("figcaption", {}, "python"),
      h("pre", {}, h("code", {}, block.code)),
    );
  }
  const timing = block.duration_s != null ? ` · ${block.duration_s.toFixed(2)} s` : "";
  const failed = block.outcome !== "ok";
  return h(
    "figure",
    { class: `tool tool-output${failed ? " failed" : ""}`, dataset: { kind: block.kind } },
    h("figcaption", {}, `output${failed ? ` (${block.outcome})` : ""}${timing}`),
    h("pre", {}, block.output || block.message || "(no output)"),
  );
}

// --- sending --------------------------------------------------------------------------------

async function send(state, ui) {
  const text = ui.input.value.trim();
  if (!text || state.controller) return;
  // A new conversation gets its id when its first exchange is saved: wait for that, or a quick
  // second message would create a second conversation.
  await state.saving;
  if (state.controller) return; // another send went first while this one waited
  if (!ui.model.value) {
    toast("No model to send to: the gateway lists none.", "error");
    return;
  }
  ui.input.value = "";
  state.messages.push({ role: "user", content: text });
  drawMessages(state, ui);

  const reply = new ReplyBuilder();
  const body = h("div", { class: "message-body" });
  const article = h(
    "article",
    { class: "message assistant", "aria-label": "Assistant", "aria-busy": "true" },
    h("div", { class: "role" }, "Assistant"),
    body,
  );
  ui.log.append(article);
  state.controller = new AbortController();
  busy(ui, true);

  let status = null;
  try {
    const request = {
      model: ui.model.value,
      messages: state.messages,
      ...samplingFields(state.sampling),
      stream_options: { include_usage: true },
    };
    for await (const event of api.chatStream(request, state.controller.signal)) {
      if (event.data === "[DONE]") break;
      if (reply.add(JSON.parse(event.data))) {
        drawBlocks(body, reply.blocks);
        ui.log.scrollTop = ui.log.scrollHeight;
      }
    }
    if (reply.error) status = `Error: ${reply.error}`;
    else if (reply.finishReason === "length") status = "Stopped at the max tokens limit.";
  } catch (error) {
    status = error.name === "AbortError" ? "Stopped." : `Error: ${error.message}`;
  } finally {
    state.controller = null;
    busy(ui, false);
    article.removeAttribute("aria-busy");
  }
  if (!reply.blocks.length) {
    // Nothing came back: give the message back to the composer so a retry is one keypress, and
    // keep the history alternating user/assistant as the chat format requires.
    state.messages.pop();
    ui.input.value = text;
    drawMessages(state, ui);
    if (status) toast(status, status === "Stopped." ? "info" : "error");
    return;
  }
  const tokens = reply.usage ? `${reply.usage.completion_tokens} tokens` : null;
  if (status || tokens) article.append(h("p", { class: "status muted" }, [status, tokens].filter(Boolean).join(" · ")));
  state.messages.push({ role: "assistant", content: reply.content });
  state.saving = save(state, ui);
  await state.saving;
}

function busy(ui, on) {
  ui.send.hidden = on;
  ui.stop.hidden = !on;
  ui.send.disabled = on;
  if (on) ui.stop.focus();
  else ui.input.focus();
}

async function save(state, ui) {
  try {
    if (state.id) {
      await api.updateConversation(state.id, state.messages);
    } else {
      const first = state.messages[0].content;
      const created = await api.createConversation(first.slice(0, TITLE_CHARS), state.messages);
      state.id = created.id;
      // Record the new id in the address without re-rendering the page (no hashchange).
      history.replaceState(null, "", `#/chat/${encodeURIComponent(created.id)}`);
    }
  } catch (error) {
    toast(`Could not save the conversation: ${error.message}`, "error");
  }
  refreshSidebar(state, ui);
}
