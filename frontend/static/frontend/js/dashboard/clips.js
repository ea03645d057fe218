// Clips page: submit (a prompt, or an upload for video-to-video models), watch progress, play in
// the page, download, cancel or delete. Everything is the public REST API (/v1/clips, docs/clips.md)
// called with the dashboard session.
import { api, describeError } from "../api.js";

const form = document.getElementById("clip-form");
const modelSelect = document.getElementById("clip-model");
const uploadField = document.getElementById("clip-upload-field");
const errorBox = document.getElementById("clip-error");
const list = document.getElementById("clips-list");
const status = document.getElementById("clips-status");
const ACTIVE = new Set(["queued", "running"]);
const cards = new Map(); // clip id -> {root, clip}
let timer = null;

function syncUpload() {
  const option = modelSelect.selectedOptions[0];
  const videoToVideo = option && option.dataset.kind === "video-to-video";
  uploadField.hidden = !videoToVideo;
  document.getElementById("clip-video").required = videoToVideo;
  if (option) document.getElementById("clip-fps").value = Math.min(Number(option.dataset.fps) || 12, 24);
}
modelSelect.addEventListener("change", syncUpload);
syncUpload();

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorBox.hidden = true;
  const data = new FormData(form);
  const size = Number(data.get("size"));
  const fields = {
    model: data.get("model"), prompt: data.get("prompt") || "", width: size, height: size,
    fps: Number(data.get("fps")), duration_s: Number(data.get("duration_s")),
  };
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    let clip;
    const file = document.getElementById("clip-video").files[0];
    if (!uploadField.hidden && file) {
      const body = new FormData();
      body.append("video", file);
      body.append("request", JSON.stringify(fields));
      clip = await api("/v1/clips", { method: "POST", form: body });
    } else {
      clip = await api("/v1/clips", { method: "POST", json: fields });
    }
    status.textContent = `Clip ${clip.id.slice(0, 8)} queued.`;
    await refresh();
  } catch (err) {
    errorBox.textContent = describeError(err);
    errorBox.hidden = false;
  } finally {
    button.disabled = false;
  }
});

function text(tag, content, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.textContent = content;
  return node;
}

function badgeClass(state) {
  if (state === "succeeded") return "badge badge--ok";
  if (ACTIVE.has(state)) return "badge badge--busy";
  if (state === "cancelled") return "badge";
  return "badge badge--bad";
}

function render(clip) {
  let entry = cards.get(clip.id);
  if (!entry) {
    const root = document.createElement("article");
    root.className = "card";
    root.dataset.clip = clip.id;
    entry = { root, clip: null, rendered: "" };
    cards.set(clip.id, entry);
  }
  // Re-render only when something visible changed, so a playing <video> is never replaced.
  const key = JSON.stringify([clip.status, clip.progress.frames_done, clip.error, !!clip.video]);
  if (entry.rendered === key) return entry.root;
  entry.rendered = key;
  entry.clip = clip;
  const root = entry.root;
  const head = document.createElement("div");
  head.className = "page-head";
  const title = text("h3", `${clip.model} · ${clip.width}×${clip.height} · ${clip.frames} frames @ ${clip.fps} fps`);
  const badge = text("span", clip.status, badgeClass(clip.status));
  badge.dataset.testid = "clip-status";
  head.append(title, badge);
  const parts = [head];
  if (clip.prompt) parts.push(text("p", `“${clip.prompt}”`, "muted"));
  if (ACTIVE.has(clip.status)) {
    const label = `Progress of clip ${clip.id.slice(0, 8)}`;
    const bar = document.createElement("progress");
    bar.className = "progress";
    bar.max = clip.frames;
    bar.value = clip.progress.frames_done;
    bar.setAttribute("aria-label", label);
    parts.push(bar, text("p", `${clip.progress.frames_done} of ${clip.frames} frames`, "muted"));
  }
  if (clip.error) parts.push(text("p", `${clip.error.message} (${clip.error.code})`, "alert alert--error"));
  if (clip.video) {
    const video = document.createElement("video");
    video.className = "clip-player";
    video.controls = true;
    video.muted = true;
    video.loop = true;
    video.playsInline = true;
    video.preload = "auto";
    video.src = clip.video.url;
    video.setAttribute("aria-label", `Clip ${clip.id.slice(0, 8)}: ${clip.prompt || clip.model}`);
    parts.push(video);
  }
  const facts = [];
  if (clip.timings.run_s != null) facts.push(`rendered in ${clip.timings.run_s} s`);
  if (clip.timings.time_to_first_frame_s != null) facts.push(`first frame after ${clip.timings.time_to_first_frame_s} s`);
  facts.push(`${clip.usage.gpu_seconds} GPU-s`, `${clip.usage.cost} ${clip.usage.currency.toUpperCase()}`);
  parts.push(text("p", facts.join(" · "), "muted"));
  const actions = document.createElement("div");
  actions.className = "actions";
  if (clip.video) {
    const download = text("a", "Download MP4", "button button--small button--secondary");
    download.href = clip.video.url;
    download.setAttribute("download", `clip-${clip.id}.mp4`);
    actions.append(download);
  }
  const remove = text("button", ACTIVE.has(clip.status) ? "Cancel" : "Delete", "button button--small button--danger");
  remove.type = "button";
  remove.setAttribute("aria-label", `${remove.textContent} clip ${clip.id.slice(0, 8)}`);
  remove.addEventListener("click", async () => {
    const verb = remove.textContent.toLowerCase();
    if (verb === "delete" && !window.confirm("Delete this clip and its video?")) return;
    try {
      await api(`/v1/clips/${clip.id}`, { method: "DELETE" });
      status.textContent = `Clip ${clip.id.slice(0, 8)}: ${verb === "cancel" ? "cancelled" : "deleted"}.`;
      if (verb === "delete") {
        cards.delete(clip.id);
        root.remove();
      }
      await refresh();
    } catch (err) {
      errorBox.textContent = describeError(err);
      errorBox.hidden = false;
    }
  });
  actions.append(remove);
  parts.push(actions);
  root.replaceChildren(...parts);
  return root;
}

async function refresh() {
  clearTimeout(timer);
  try {
    const page = await api("/v1/clips?limit=20");
    const clips = page.data;
    if (clips.length === 0) {
      list.replaceChildren(text("p", "No clips yet: render one above.", "muted"));
    } else {
      const seen = new Set(clips.map((c) => c.id));
      for (const id of [...cards.keys()]) if (!seen.has(id)) { cards.get(id).root.remove(); cards.delete(id); }
      const nodes = clips.map(render);
      if (list.querySelector(":scope > p")) list.replaceChildren();
      nodes.forEach((node, i) => { if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null); });
      for (const clip of clips) {
        const before = cards.get(clip.id).announced;
        if (before && before !== clip.status) status.textContent = `Clip ${clip.id.slice(0, 8)} ${clip.status}.`;
        cards.get(clip.id).announced = clip.status;
      }
    }
    list.setAttribute("aria-busy", "false");
    if (clips.some((c) => ACTIVE.has(c.status))) timer = setTimeout(refresh, 700);
  } catch (err) {
    errorBox.textContent = `Could not load clips: ${describeError(err)}`;
    errorBox.hidden = false;
    timer = setTimeout(refresh, 5000);
  }
}

refresh();
