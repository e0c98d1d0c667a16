// The chat page: the conversation list (chat/sidebar.js), the messages of the branch on screen
// (chat/message_view.js) with replies streamed as Markdown, the composer with its stop button,
// sampling settings, export and keyboard shortcuts. A conversation is a tree (chat/tree.js):
// editing a question or regenerating a reply adds an alternative instead of replacing anything,
// and the whole tree is stored by the gateway.

import { api, ApiError } from "../api.js";
import { ReplyBuilder } from "../chat_stream.js";
import { h, mount, toast } from "../dom.js";
import { fillModelPicker } from "../model_picker.js";
import { clampField, LIMITS, loadSampling, PLACEHOLDERS, samplingFields, saveSampling } from "../settings.js";
import { copyText } from "../chat/clipboard.js";
import { conversationMarkdown, download, fileStem, messageMarkdown } from "../chat/export.js";
import { MessageView } from "../chat/message_view.js";
import { bindShortcuts, shortcutsDialog } from "../chat/shortcuts.js";
import { Sidebar } from "../chat/sidebar.js";
import { ConversationTree } from "../chat/tree.js";

const TITLE_CHARS = 60;

export function render(main, [conversationId]) {
  const state = {
    id: conversationId || null,
    title: null,
    tree: new ConversationTree(),
    controller: null, // the streaming request's, while a reply streams
    saving: null, // the save in flight
    models: null, // the model list's load: a message sent before it ends waits for it
    sampling: loadSampling(),
  };
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
  const unbind = bindShortcuts(document, shortcutHandlers(state, ui));

  state.models = loadModels(state, ui);
  ui.sidebar.refresh();
  if (state.id) openConversation(state, ui);
  else drawMessages(state, ui);
  ui.input.focus();
  return () => {
    state.controller?.abort();
    unbind();
  };
}

function layout(state) {
  const ui = {};
  ui.sidebar = new Sidebar({
    currentId: () => state.id,
    titleChanged: (title) => showTitle(state, ui, title),
    currentDeleted: () => (location.hash = "#/chat"),
  });
  ui.log = h("div", { class: "messages", role: "log", "aria-live": "polite", "aria-label": "Messages" });
  ui.input = h("textarea", { id: "prompt", name: "prompt", rows: 3, placeholder: "Message the model (Enter sends, Shift+Enter for a new line, Esc stops, ? for shortcuts)", required: true });
  ui.send = h("button", { type: "submit", class: "button primary" }, "Send");
  ui.stop = h("button", { type: "button", class: "button danger", hidden: true }, "Stop");
  ui.form = h(
    "form",
    { class: "composer", "aria-label": "Send a message" },
    h("label", { for: "prompt", class: "visually-hidden" }, "Message"),
    ui.input,
    h("div", { class: "composer-actions" }, ui.stop, ui.send),
  );
  ui.help = shortcutsDialog();
  ui.title = h("span", { class: "chat-title" }, "New chat");
  const exportButton = (format) => h("button", { type: "button", class: "button small ghost", onclick: () => exportConversation(state, format) }, format === "md" ? "Markdown" : "JSON");
  ui.exports = h("span", { class: "chat-exports", role: "group", "aria-label": "Export the conversation", hidden: true }, h("span", { class: "muted" }, "Export:"), exportButton("md"), exportButton("json"));
  const head = h(
    "div",
    { class: "chat-head" },
    ui.title,
    ui.exports,
    h("button", { type: "button", class: "icon-button", "aria-label": "Keyboard shortcuts", title: "Keyboard shortcuts (?)", "aria-haspopup": "dialog", onclick: () => ui.help.showModal() }, "⌨"),
  );
  ui.root = h(
    "div",
    { class: "chat-layout" },
    ui.sidebar.element,
    h("section", { class: "chat-main", "aria-labelledby": "chat-heading" }, h("h1", { id: "chat-heading", class: "visually-hidden" }, "Chat"), head, ui.log, ui.form),
    settingsPanel(state, ui),
    ui.help,
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
    await fillModelPicker(ui.model, state.sampling.model);
  } catch (error) {
    mount(ui.model, h("option", { value: "" }, "unavailable"));
    toast(`Models: ${error.message}`, "error");
  }
}

async function openConversation(state, ui) {
  try {
    const conversation = await api.conversation(state.id);
    state.tree = ConversationTree.fromMessages(conversation.messages || []);
    showTitle(state, ui, conversation.title);
  } catch (error) {
    toast(error instanceof ApiError && error.status === 404 ? "That conversation no longer exists." : error.message, "error");
    state.id = null;
  }
  drawMessages(state, ui);
}

function showTitle(state, ui, title) {
  state.title = title;
  ui.title.textContent = title || "New chat";
}

// --- messages -----------------------------------------------------------------------------

/** Draw the branch on screen; returns the message views, in order. */
function drawMessages(state, ui, { streaming = null } = {}) {
  const path = state.tree.path();
  ui.exports.hidden = !path.length;
  if (!path.length) {
    mount(ui.log, h("p", { class: "empty muted" }, "Start a conversation: type a message below."));
    return [];
  }
  const handlers = messageHandlers(state, ui);
  const views = path.map((node) => new MessageView(node, handlers));
  for (const view of views) {
    if (view.node === streaming) view.startStreaming();
    else view.showActions(state.tree.alternativesOf(view.node));
  }
  mount(ui.log, views.map((v) => v.article));
  ui.log.scrollTop = ui.log.scrollHeight;
  return views;
}

function messageHandlers(state, ui) {
  return {
    busy: () => Boolean(state.controller),
    switchTo: (node, step) => {
      state.tree.switchFrom(node, step);
      drawMessages(state, ui);
      save(state, ui);
    },
    regenerate: (reply) => {
      const question = state.tree.parentOf(reply);
      const fresh = state.tree.fork(reply, "");
      generate(state, ui, question, fresh, () => state.tree.remove(fresh, reply));
    },
    edit: (question, text) => {
      const edited = state.tree.fork(question, text);
      const reply = state.tree.addChild(edited, "assistant", "");
      generate(state, ui, edited, reply, () => state.tree.remove(edited, question));
    },
  };
}

// --- sending --------------------------------------------------------------------------------

async function send(state, ui) {
  const text = ui.input.value.trim();
  if (!text || state.controller) return;
  // A new conversation gets its id when its first exchange is saved: wait for that, or a quick
  // second message would create a second conversation.
  await state.saving;
  // A message typed as the page opens waits for the model list instead of finding it empty.
  await state.models;
  if (state.controller) return; // another send went first while this one waited
  if (!ui.model.value) {
    toast("No model to send to: the gateway lists none.", "error");
    return;
  }
  ui.input.value = "";
  const question = state.tree.append("user", text);
  const reply = state.tree.append("assistant", "");
  const replied = await generate(state, ui, question, reply, () => state.tree.remove(question, null));
  // Nothing came back: give the message back to the composer so a retry is one keypress.
  if (!replied) ui.input.value = text;
}

/**
 * Stream the model's answer to the conversation up to `question` into `reply` (a new, empty node
 * already on the branch shown). If nothing comes back, `undo()` takes the new nodes out again, so
 * the history keeps alternating user/assistant as the chat format requires. Returns whether a
 * reply was kept.
 */
async function generate(state, ui, question, reply, undo) {
  const view = drawMessages(state, ui, { streaming: reply }).at(-1);
  const builder = new ReplyBuilder();
  state.controller = new AbortController();
  busy(ui, true);

  let status = null;
  try {
    const request = {
      model: ui.model.value,
      messages: state.tree.historyTo(question),
      ...samplingFields(state.sampling),
      stream_options: { include_usage: true },
    };
    for await (const event of api.chatStream(request, state.controller.signal)) {
      if (event.data === "[DONE]") break;
      if (builder.add(JSON.parse(event.data))) {
        // Follow the reply down unless the reader scrolled up to read something else.
        const following = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 48;
        view.stream(builder.blocks);
        if (following) ui.log.scrollTop = ui.log.scrollHeight;
      }
    }
    if (builder.error) status = `Error: ${builder.error}`;
    else if (builder.finishReason === "length") status = "Stopped at the max tokens limit.";
  } catch (error) {
    status = error.name === "AbortError" ? "Stopped." : `Error: ${error.message}`;
  } finally {
    state.controller = null;
    busy(ui, false);
  }
  if (!builder.blocks.length) {
    undo();
    drawMessages(state, ui);
    if (status) toast(status, status === "Stopped." ? "info" : "error");
    return false;
  }
  reply.content = builder.content;
  reply.toolRuns = builder.toolRuns;
  const tokens = builder.usage ? `${builder.usage.completion_tokens} tokens` : null;
  // Saved before the reply is marked finished (aria-busy goes): a reader who reloads as soon as
  // the reply looks done finds it in the stored conversation.
  state.saving = save(state, ui);
  await state.saving;
  // The streamed DOM stays as it is (finished code blocks keep their nodes): only the status
  // line and the actions are added.
  view.finish([status, tokens].filter(Boolean).join(" · "), state.tree.alternativesOf(reply));
  return true;
}

function busy(ui, on) {
  ui.send.hidden = on;
  ui.stop.hidden = !on;
  ui.send.disabled = on;
  if (on) ui.stop.focus();
  else ui.input.focus();
}

async function save(state, ui) {
  const messages = state.tree.toMessages();
  try {
    if (state.id) {
      await api.updateConversation(state.id, messages);
    } else {
      const title = messages[0].content.slice(0, TITLE_CHARS);
      const created = await api.createConversation(title, messages);
      state.id = created.id;
      showTitle(state, ui, created.title);
      // Record the new id in the address without re-rendering the page (no hashchange).
      history.replaceState(null, "", `#/chat/${encodeURIComponent(created.id)}`);
    }
  } catch (error) {
    toast(`Could not save the conversation: ${error.message}`, "error");
  }
  ui.sidebar.refresh();
}

// --- export and shortcuts -----------------------------------------------------------------------

function exportConversation(state, format) {
  const title = state.title || state.tree.path()[0]?.content.slice(0, TITLE_CHARS) || "Conversation";
  if (format === "md") {
    download(`${fileStem(title)}.md`, conversationMarkdown(title, state.tree.path()), "text/markdown");
  } else {
    const record = { object: "conversation", id: state.id, title, messages: state.tree.toMessages() };
    download(`${fileStem(title)}.json`, JSON.stringify(record, null, 2) + "\n", "application/json");
  }
}

function shortcutHandlers(state, ui) {
  const lastReply = () => state.tree.path().findLast((node) => node.role === "assistant" && node.content);
  return {
    help: () => (ui.help.open ? ui.help.close() : ui.help.showModal()),
    newChat: () => {
      if (location.hash === "#/chat" || location.hash === "") {
        // Already on a new chat's address: no hashchange would come, so start over here.
        state.id = null;
        state.tree = new ConversationTree();
        showTitle(state, ui, null);
        drawMessages(state, ui);
        ui.sidebar.refresh();
        ui.input.focus();
      } else location.hash = "#/chat";
    },
    focusInput: () => ui.input.focus(),
    search: () => ui.sidebar.focusSearch(),
    stop: () => {
      if (!state.controller || ui.help.open) return false;
      state.controller.abort();
    },
    copyLastCode: () => {
      const code = [...ui.log.querySelectorAll(".message.assistant .code-block code")].at(-1);
      if (code) copyText(code.textContent, "the code");
      else toast("No code block to copy yet.");
    },
    copyLastReply: () => {
      const reply = lastReply();
      if (reply) copyText(messageMarkdown(reply), "the reply");
      else toast("No reply to copy yet.");
    },
  };
}
