// Moderation policy form: PATCH /v1/moderation/policy with the session (owner/admin: the server
// refuses a member, whose session lacks the `moderation` scope).
import { api, describeError } from "../api.js";

const form = document.getElementById("policy-form");
const error = document.getElementById("policy-error");
const saved = document.getElementById("policy-saved");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  saved.hidden = true;
  const data = new FormData(form);
  const body = {
    blocked_terms: String(data.get("blocked_terms") || "").split("\n").map((t) => t.trim()).filter(Boolean),
    frame_classifier: data.get("frame_classifier"),
    classifier_every_n_frames: Number(data.get("classifier_every_n_frames")),
    classifier_threshold: Number(data.get("classifier_threshold")),
    hash_max_distance: Number(data.get("hash_max_distance")),
    fail_mode: data.get("fail_mode"),
    max_violations: Number(data.get("max_violations")),
    keep_flagged_frames: data.get("keep_flagged_frames") === "on",
  };
  try {
    const policy = await api("/v1/moderation/policy", { method: "PATCH", json: body });
    document.getElementById("policy-terms").value = policy.blocked_terms.join("\n");
    saved.textContent = "Policy saved.";
    saved.hidden = false;
  } catch (err) {
    error.textContent = describeError(err);
    error.hidden = false;
  }
});
