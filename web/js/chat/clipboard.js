// Copying to the clipboard, with a toast either way (the page is a secure context on loopback or
// HTTPS, where navigator.clipboard exists; elsewhere the toast says why it failed).

import { toast } from "../dom.js";

export async function copyText(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    toast(`Copied ${what}.`);
  } catch (error) {
    toast(`Could not copy ${what}: ${error.message}`, "error");
  }
}
