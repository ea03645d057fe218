// Members page (owner/admin): invite (creates the user, shows a one-time sign-in link), change a
// role, send a new link, remove. /dashboard/api/members with the session; the server checks roles.
import { api, describeError } from "../api.js";

const inviteForm = document.getElementById("invite-form");
const inviteError = document.getElementById("invite-error");
const pageError = document.getElementById("members-error");
const dialog = document.getElementById("link-dialog");

function showLink(email, url) {
  document.getElementById("link-email").textContent = email;
  document.getElementById("link-value").textContent = url;
  document.getElementById("link-copy-status").textContent = "";
  dialog.showModal();
}

function fail(box, err) {
  box.textContent = describeError(err);
  box.hidden = false;
}

let reloadOnClose = false;
dialog.addEventListener("close", () => {
  document.getElementById("link-value").textContent = "";
  if (reloadOnClose) window.location.reload();
});

document.getElementById("copy-link").addEventListener("click", async () => {
  const status = document.getElementById("link-copy-status");
  try {
    await navigator.clipboard.writeText(document.getElementById("link-value").textContent);
    status.textContent = "Copied to the clipboard.";
  } catch {
    status.textContent = "Select the link and press Ctrl-C (Cmd-C) to copy.";
  }
});

inviteForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  inviteError.hidden = true;
  const data = new FormData(inviteForm);
  try {
    const result = await api("/dashboard/api/members", { method: "POST", json: { email: data.get("email"), role: data.get("role") } });
    if (result.signin_url) {
      reloadOnClose = true;
      showLink(result.email, result.signin_url);
    } else {
      // An existing account: added, and it signs in as it always did (no link is made for it).
      const done = document.getElementById("invite-done");
      done.textContent = `${result.email} already has an account: added as ${result.role}. ` +
        "They will find this organisation in their organisation switcher.";
      done.hidden = false;
      setTimeout(() => window.location.reload(), 2500);
    }
  } catch (err) {
    fail(inviteError, err);
  }
});

document.querySelectorAll("[data-role-for]").forEach((select) => {
  let previous = select.value;
  select.addEventListener("change", async () => {
    pageError.hidden = true;
    try {
      await api(`/dashboard/api/members/${select.dataset.roleFor}`, { method: "PATCH", json: { role: select.value } });
      previous = select.value;
    } catch (err) {
      select.value = previous;
      fail(pageError, err);
    }
  });
});

document.querySelectorAll("[data-link-for]").forEach((button) => {
  button.addEventListener("click", async () => {
    pageError.hidden = true;
    try {
      const result = await api(`/dashboard/api/members/${button.dataset.linkFor}/link`, { method: "POST" });
      reloadOnClose = false;
      showLink(button.dataset.email, result.signin_url);
    } catch (err) {
      fail(pageError, err);
    }
  });
});

document.querySelectorAll("[data-remove]").forEach((button) => {
  button.addEventListener("click", async () => {
    if (!window.confirm(`Remove ${button.dataset.email} from this organisation?`)) return;
    pageError.hidden = true;
    try {
      await api(`/dashboard/api/members/${button.dataset.remove}`, { method: "DELETE" });
      window.location.reload();
    } catch (err) {
      fail(pageError, err);
    }
  });
});
