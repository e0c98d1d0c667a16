// The page shell: hash routes to views, the API-key dialog, and the nav's current-page marker.
// Each view is `render(main, params) -> cleanup`; cleanup aborts its streams when you navigate away.

import { getApiKey, onAuthProblem, setApiKey } from "./api.js";
import { toast } from "./dom.js";
import * as chat from "./views/chat.js";
import * as jobs from "./views/jobs.js";
import * as models from "./views/models.js";
import * as reports from "./views/reports.js";

// "#/jobs/abc" -> view "jobs", params ["abc"]
const VIEWS = { chat, jobs, models, reports };
const TITLES = { chat: "Chat", jobs: "Jobs", models: "Models", reports: "Reports" };

let cleanup = null;

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const name = parts[0] in VIEWS ? parts[0] : "chat";
  const main = document.getElementById("main");
  if (cleanup) cleanup();
  main.replaceChildren();
  main.dataset.view = name;
  document.title = `${TITLES[name]} · chatforge`;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  cleanup = VIEWS[name].render(main, parts.slice(1)) || null;
}

function setUpKeyDialog() {
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  const button = document.getElementById("key-button");
  const open = () => {
    input.value = getApiKey();
    dialog.showModal();
    input.focus();
  };
  const showState = () => {
    button.textContent = getApiKey() ? "API key ✓" : "API key";
  };
  button.addEventListener("click", open);
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "save") setApiKey(input.value.trim());
    else if (dialog.returnValue === "clear") setApiKey("");
    else return;
    showState();
    route(); // reload the page's data with the new key
  });
  onAuthProblem((error) => {
    toast(error.message, "error");
    // 401: no key or a wrong one. 403 (a chat key on an admin page) is told, not asked again.
    if (error.status === 401 && !dialog.open) open();
  });
  showState();
}

setUpKeyDialog();
window.addEventListener("hashchange", route);
route();
