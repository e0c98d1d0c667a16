// The colour theme: "system" (follow prefers-color-scheme), "light" or "dark", chosen in the top bar
// and kept in this browser. A classic script, not a module, loaded from <head> before the body is
// parsed: module scripts run after parsing, which would paint one frame in the wrong theme (a white
// flash for a dark-theme user). It sets <html data-theme="light|dark">; css/theme.css does the rest.

(() => {
  const STORAGE = "chatforge.theme";
  const CHOICES = ["system", "light", "dark"];
  const systemDark = window.matchMedia("(prefers-color-scheme: dark)");

  function stored() {
    try {
      const value = localStorage.getItem(STORAGE);
      return CHOICES.includes(value) ? value : "system";
    } catch {
      return "system"; // storage blocked (some privacy modes): follow the system
    }
  }

  let chosen = stored();

  function apply() {
    const theme = chosen === "system" ? (systemDark.matches ? "dark" : "light") : chosen;
    document.documentElement.dataset.theme = theme;
    const select = document.getElementById("theme-select");
    if (select) select.value = chosen;
  }

  apply();
  systemDark.addEventListener("change", apply); // "system" follows the OS while the page is open
  window.addEventListener("storage", (event) => {
    if (event.key !== STORAGE) return; // another tab chose a theme: follow it
    chosen = stored();
    apply();
  });

  // The picker is in index.html's top bar, parsed after this script ran.
  document.addEventListener("DOMContentLoaded", () => {
    const select = document.getElementById("theme-select");
    select.addEventListener("change", () => {
      chosen = CHOICES.includes(select.value) ? select.value : "system";
      try {
        localStorage.setItem(STORAGE, chosen);
      } catch {
        // Not remembered, but still applied to this page.
      }
      apply();
    });
    apply();
  });
})();
