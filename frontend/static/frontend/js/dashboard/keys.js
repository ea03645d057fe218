// API keys page: create (shown once, with a copy button) and revoke (after a confirmation).
// Both call /dashboard/api/keys with the session and CSRF token; the server checks the role.
import { api, describeError } from "../api.js";

const form = document.getElementById("create-key");
const error = document.getElementById("create-key-error");
const dialog = document.getElementById("new-key-dialog");
const value = document.getElementById("new-key-value");
const copyStatus = document.getElementById("copy-status");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const data = new FormData(form);
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const key = await api("/dashboard/api/keys", {
      method: "POST",
      json: { name: data.get("name") || "", scopes: data.getAll("scopes"), test: data.get("test") === "on" },
    });
    value.textContent = key.key;
    copyStatus.textContent = "";
    dialog.showModal();
  } catch (err) {
    error.textContent = describeError(err);
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
});

document.getElementById("copy-key").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(value.textContent);
    copyStatus.textContent = "Copied to the clipboard.";
  } catch {
    // No clipboard permission (e.g. plain http on another host): select it for Ctrl-C instead.
    const range = document.createRange();
    range.selectNodeContents(value);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    copyStatus.textContent = "Selected: press Ctrl-C (Cmd-C) to copy.";
  }
});

// Closing the dialog forgets the key (it was shown once) and shows the new row.
dialog.addEventListener("close", () => {
  value.textContent = "";
  window.location.reload();
});

const revokeDialog = document.getElementById("revoke-dialog");
const revokeError = document.getElementById("revoke-error");
let revoking = null;

document.querySelectorAll("[data-revoke]").forEach((button) => {
  button.addEventListener("click", () => {
    revoking = button;
    document.getElementById("revoke-prefix").textContent = button.dataset.prefix;
    revokeError.hidden = true;
    revokeDialog.showModal();
    document.getElementById("revoke-cancel").focus();
  });
});

document.getElementById("revoke-cancel").addEventListener("click", () => revokeDialog.close());
revokeDialog.addEventListener("close", () => { if (revoking) revoking.focus(); });

document.getElementById("revoke-confirm").addEventListener("click", async () => {
  try {
    await api(`/dashboard/api/keys/${encodeURIComponent(revoking.dataset.revoke)}/revoke`, { method: "POST" });
    window.location.reload();
  } catch (err) {
    revokeError.textContent = describeError(err);
    revokeError.hidden = false;
  }
});
