// The playground page: pick a model, feed it (webcam, test pattern, video file) or prompt it, steer it
// with the controls its params schema describes, and watch its numbers. The protocol is live.js's.

import { LiveClient, LiveError, NO_INPUT } from "./live.js";
import { FrameSender, PatternSource, VideoSource } from "./sources.js";
import { LatencyChart, costOf, fmt } from "./overlay.js";

const $ = (id) => document.getElementById(id);

const output = $("output");
const outputCtx = output.getContext("2d");
const chart = new LatencyChart($("latency-chart"));

const state = {
  models: [],
  model: null,
  client: null,
  ready: null,
  source: null,
  sender: null,
  frames: 0,
  lastFrameIndex: -1,
  controls: new Map(),    // seq -> {sentAtUs, lastFrameAtSend, item}
  lastMetrics: null,
  retryTimer: null,
};

// --- words for every refusal and every end ---------------------------------------------------------

function refusal(err) {
  const wait = Number.isFinite(err.retryAfterS) ? Math.max(1, Math.ceil(err.retryAfterS)) : null;
  const msg = err.message ? ` (${err.message})` : "";
  switch (err.code) {
    case "capacity_unavailable":
      return { text: "No capacity for this session right now: every device that can run it is busy. " +
        `Try again ${wait ? `in ${wait} s` : "in a moment"}, or ask for a smaller size or a lower fps.`, retry: wait ?? 0 };
    case "quota_exceeded":
      return { text: "Your organisation has used up its monthly quota, so no session can start. " +
        "See Billing on the dashboard, or wait for the next period." };
    case "concurrency_limit":
      return { text: "Your organisation already runs as many live sessions as it may at once. " +
        "Stop one (perhaps in another tab), then try again.", retry: 0 };
    case "moderation":
      return { text: `Moderation refused the prompt${msg}. Change the prompt and start again.` };
    case "revoked":
      return { text: "Access was revoked: the key or sign-in this session ran under is no longer valid. Reload the page." };
    case "unauthenticated":
      return { text: "The server did not accept this page's sign-in (the ticket expired or access was revoked). " +
        "Reload the page and sign in again." };
    case "forbidden":
      return { text: `This organisation may not open live sessions${msg}.` };
    case "account_suspended":
      return { text: "Your organisation's account is suspended because an invoice is unpaid. Billing on the dashboard says why." };
    case "rate_limited":
      return { text: `Too many requests; try again ${wait ? `in ${wait} s` : "shortly"}.`, retry: wait ?? 1 };
    case "invalid_params":
      return { text: `The model refused these settings${msg}.` };
    case "unknown_model":
      return { text: `This model is not installed on the server${msg}.` };
    case "going_away":
      return { text: "The server is restarting. Start again in a moment.", retry: 1 };
    case "connection_failed":
      return { text: "Could not connect to the live server: it refused the connection (for instance a page from " +
        "a site it does not trust, or an expired sign-in) or cannot be reached. Reload the page and try again.", retry: 1 };
    case "too_many_redirects":
      return { text: "The servers kept sending the session elsewhere. Try again in a moment.", retry: 1 };
    default:
      return { text: `The session could not start: ${err.message || err.code} [${err.code}].` };
  }
}

const END_REASONS = {
  client: "You stopped the session.",
  quota: "The session ended: your organisation's monthly quota is used up.",
  moderation: "The session ended: moderation found repeated violations.",
  revoked: "The session ended: access was revoked (the key or sign-in it ran under).",
  idle: "The session ended: no input frames arrived for too long.",
  max_duration: "The session ended: it reached the longest duration allowed.",
  server_error: "The session ended: the server failed (the model failed a step).",
  shutdown: "The session ended: the server is restarting. Start again in a moment.",
  slow_reader: "The session ended: this page did not read its frames fast enough.",
};

function setStatus(text) {
  $("status").textContent = text;
}

function showRefusal({ text, retry }) {
  const box = $("refusal");
  $("refusal-text").textContent = text;
  box.hidden = false;
  const button = $("retry");
  clearInterval(state.retryTimer);
  if (retry === undefined) {
    button.hidden = true;
    box.focus();
    return;
  }
  button.hidden = false;
  let left = Math.ceil(retry);
  const label = () => { button.textContent = left > 0 ? `Retry (suggested in ${left} s)` : "Retry now"; };
  label();
  state.retryTimer = setInterval(() => { left -= 1; label(); if (left <= 0) clearInterval(state.retryTimer); }, 1000);
  button.focus();
}

function hideRefusal() {
  clearInterval(state.retryTimer);
  $("refusal").hidden = true;
  $("retry").hidden = true;
}

// --- models and their controls ---------------------------------------------------------------------

async function loadModels() {
  const res = await fetch("/v1/models", { credentials: "same-origin", headers: { Accept: "application/json" } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    setStatus(`The models could not be listed: ${body.error?.message ?? res.statusText}`);
    return;
  }
  state.models = body.data;
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => new Option(`${m.id} (${m.tier})`, m.id)));
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted && state.models.some((m) => m.id === wanted)) select.value = wanted;
  selectModel(select.value);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function modelCard(m) {
  const ev = m.evidence;
  const tier = el("span", { class: `pg-tier pg-tier-${m.tier}` }, m.tier);
  const source = m.tier_source === "measured"
    ? (ev?.stale ? "measured, stale" : "measured on this deployment")
    : "declared: not measured on this deployment yet";
  const rows = [];
  const row = (k, v) => rows.push(el("dt", {}, k), el("dd", {}, v));
  if (ev) {
    row("Time to first frame", fmt(ev.ttff_ms, "ms"));
    row("Sustained FPS", fmt(ev.fps_sustained, "", 1));
    row("Control lag", ev.control_lag_frames === null || ev.control_lag_frames === undefined
      ? "–" : `${ev.control_lag_frames} frame(s)${ev.control_lag_ms != null ? `, ${fmt(ev.control_lag_ms, "ms")}` : ""}`);
    row("Measured", ev.measured_at ? new Date(ev.measured_at).toLocaleString() : "–");
  } else {
    row("Evidence", "none yet: run `nextframe audit` (or POST /v1/models/{id}/audit) to measure it");
  }
  row("Price", `${m.price_per_gpu_second} USD per GPU-second`);
  const share = m.cost_at_default?.compute_share;
  if (Number.isFinite(share)) {
    row("At default size", `${m.default_width}×${m.default_height} @ ${m.default_fps} fps ≈ ${(share * 60 * Number(m.price_per_gpu_second)).toFixed(4)} USD per minute`);
  }
  return [el("p", {}, tier, ` ${source}${m.tier_disagreement ? ` (declared ${m.declared_tier})` : ""}`),
    el("p", { class: "pg-note" }, m.description), el("dl", { class: "pg-dl" }, ...rows)];
}

function selectModel(id) {
  const m = state.models.find((x) => x.id === id) ?? null;
  state.model = m;
  $("model-card").replaceChildren(...(m ? modelCard(m) : []));
  if (!m) return;
  const v2v = m.kind === "video-to-video";
  $("input-note").hidden = v2v;
  document.querySelector(".pg-input-preview").hidden = !v2v;
  for (const label of $("input-fieldset").querySelectorAll("label")) label.hidden = !v2v;
  for (const input of $("input-fieldset").querySelectorAll("input")) input.disabled = !v2v;
  const limits = m.limits ?? {};
  setNumber("width", m.default_width, limits.min_width, m.max_width);
  setNumber("height", m.default_height, limits.min_height, m.max_height);
  setNumber("fps", m.default_fps, 1, m.max_fps);
  buildParams(m);
}

function setNumber(id, value, min, max) {
  const input = $(id);
  input.value = value;
  if (min !== undefined) input.min = min;
  if (max !== undefined) input.max = max;
}

function paramValue(p, input) {
  if (p.type === "bool") return input.checked;
  if (p.type === "int") return Math.round(Number(input.value));
  if (p.type === "float") return Number(input.value);
  return input.value;
}

function buildParams(m) {
  const box = $("params");
  const legend = el("legend", {}, "Controls");
  if (!m.params.length) {
    box.replaceChildren(legend, el("p", { class: "pg-note" }, "This model has no controls besides the prompt."));
    return;
  }
  const rows = m.params.map((p) => {
    const id = `param-${p.name}`;
    const help = el("small", { id: `${id}-help` }, p.description ?? "");
    let input, shown = null;
    if (p.type === "bool") {
      input = el("input", { type: "checkbox", id, name: p.name, "aria-describedby": help.id });
      input.checked = Boolean(p.default);
      return el("div", { class: "pg-param pg-toggle" }, el("label", { for: id }, input, ` ${p.name}`), help);
    }
    if (p.type === "enum") {
      input = el("select", { id, name: p.name, "aria-describedby": help.id },
        ...p.choices.map((c) => new Option(c, c, c === p.default, c === p.default)));
    } else if ((p.type === "float" || p.type === "int") && p.min !== undefined && p.max !== undefined
               && (p.type === "float" || p.max - p.min <= 1000)) {
      const step = p.type === "int" ? 1 : niceFloatStep(p.max - p.min);
      input = el("input", { type: "range", id, name: p.name, min: p.min, max: p.max, step, "aria-describedby": help.id });
      input.value = p.default;
      shown = el("output", { for: id, id: `${id}-value` }, String(p.default));
      input.addEventListener("input", () => { shown.textContent = input.value; });
    } else {
      input = el("input", { type: "number", id, name: p.name, min: p.min, max: p.max, step: p.type === "int" ? 1 : "any",
        "aria-describedby": help.id });
      input.value = p.default;
    }
    const label = el("label", { for: id }, p.name, ...(shown ? [" ", shown] : []));
    return el("div", { class: "pg-param" }, label, input, help);
  });
  box.replaceChildren(legend, ...rows);
  for (const p of m.params) {
    const input = $(`param-${p.name}`);
    input.dataset.default = JSON.stringify(p.default);
    input.addEventListener("change", () => {
      if (state.ready && state.client?.open) sendControl({ params: { [p.name]: paramValue(p, input) } }, `${p.name} = ${paramValue(p, input)}`);
    });
  }
}

function niceFloatStep(range) {
  const raw = range / 100;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((k) => k * power).find((s) => s >= raw);
}

/** Params whose inputs differ from the schema's defaults (sent with session.start). */
function changedParams() {
  const params = {};
  for (const p of state.model?.params ?? []) {
    const value = paramValue(p, $(`param-${p.name}`));
    if (JSON.stringify(value) !== $(`param-${p.name}`).dataset.default) params[p.name] = value;
  }
  return Object.keys(params).length ? params : undefined;
}

// --- controls --------------------------------------------------------------------------------------

function sendControl(body, what) {
  let seq;
  try {
    seq = state.client.control(body);
  } catch (err) {
    setStatus(`The control was not sent: ${err.message}`);
    return;
  }
  const item = el("li", { "data-seq": seq, "data-state": "sent" }, `#${seq} ${what}: sent`);
  $("controls-log").prepend(item);
  state.controls.set(seq, { sentAtUs: performance.timeOrigin * 1000 + performance.now() * 1000,
    lastFrameAtSend: state.lastFrameIndex, item, what });
}

function onApplied({ detail }) {
  const c = state.controls.get(detail.seq);
  if (!c) return;
  c.item.dataset.state = "applied";
  c.item.dataset.frame = detail.frame;
  c.appliedFrame = detail.frame;
  c.item.textContent = `#${detail.seq} ${c.what}: applied at frame ${detail.frame}`;
}

function onRejected({ detail }) {
  const c = state.controls.get(detail.seq);
  if (!c) return;
  c.rejected = true;
  c.item.dataset.state = "rejected";
  c.item.dataset.code = detail.code;
  const why = detail.code === "moderation" ? "refused by moderation" : "invalid";
  c.item.textContent = `#${detail.seq} ${c.what}: rejected, ${why}: ${detail.message}. The previous setting keeps playing.`;
}

// --- frames and metrics ----------------------------------------------------------------------------

let drawing = false;
let nextFrame = null;

function onFrame({ detail: frame }) {
  state.frames += 1;
  state.lastFrameIndex = frame.frameIndex;
  $("m-frames").textContent = String(state.frames);
  if (frame.inputSeq !== NO_INPUT && frame.inputCaptureTsUs > 0) {
    chart.push((frame.receivedAtUs - frame.inputCaptureTsUs) / 1000);
  }
  for (const [seq, c] of state.controls) {
    if (!c.lagMeasured && !c.rejected && frame.controlSeq >= seq) {
      // Control lag: frames that arrived after the control was sent and did not show it yet.
      const lagFrames = Math.max(0, frame.frameIndex - c.lastFrameAtSend - 1);
      const lagMs = (frame.receivedAtUs - c.sentAtUs) / 1000;
      $("m-lag").textContent = `${lagFrames} frame(s), ${fmt(lagMs, "ms", 0)}`;
      c.item.dataset.lagFrames = lagFrames;
      c.lagMeasured = true;
    }
  }
  nextFrame = frame;
  if (!drawing) drawFrames();
}

async function drawFrames() {
  drawing = true;
  // Latest wins: frames that arrive while one decodes replace each other; only the newest is drawn.
  while (nextFrame) {
    const frame = nextFrame;
    nextFrame = null;
    try {
      const bitmap = await createImageBitmap(new Blob([frame.jpeg], { type: "image/jpeg" }));
      outputCtx.drawImage(bitmap, 0, 0, output.width, output.height);
      bitmap.close();
      output.dataset.frame = frame.frameIndex;
      output.dataset.controlSeq = frame.controlSeq;
      $("badge").textContent = `frame ${frame.frameIndex}`;
    } catch {
      // An image the browser cannot decode: skip it, the next frame comes in 1/fps.
    }
  }
  drawing = false;
}

function onMetrics({ detail: m }) {
  state.lastMetrics = m;
  $("m-ttff").textContent = fmt(m.ttff_ms, "ms");
  $("m-fps").textContent = fmt(m.fps, "", 1);
  $("m-p50").textContent = fmt(m.latency_ms?.p50, "ms");
  $("m-p95").textContent = fmt(m.latency_ms?.p95, "ms");
  $("m-p99").textContent = fmt(m.latency_ms?.p99, "ms");
  $("m-jitter").textContent = fmt(m.jitter_ms, "ms");
  const skipped = state.sender?.skipped ?? 0;
  const dropped = (m.dropped_inputs ?? 0) + (m.dropped_outputs ?? 0) + skipped;
  $("m-dropped").textContent = `${dropped} (server: ${m.dropped_inputs ?? 0} in, ${m.dropped_outputs ?? 0} out; page: ${skipped})`;
  $("m-misses").textContent = String(m.deadline_misses ?? 0);
  $("m-gpu").textContent = fmt(m.gpu_seconds, "", 3);
  $("m-cost").textContent = `${costOf(m.gpu_seconds, state.ready?.price_per_gpu_second)} USD (running)`;
  $("metrics").dataset.updates = String(Number($("metrics").dataset.updates ?? 0) + 1);
  if (state.model?.kind !== "video-to-video") chart.push(m.latency_ms?.p50);
}

function onModeration({ detail: m }) {
  const where = m.source === "input" ? `input frame ${m.frame}` : `frame ${m.frame}`;
  const item = el("li", { "data-state": "moderation" },
    `Moderation: ${where} ${m.action === "ended" ? "ended the session" : "was replaced"} (${m.category}).`);
  $("controls-log").prepend(item);
}

function onQuota({ detail: q }) {
  const box = $("quota");
  const limit = q.limit_gpu_seconds === null ? "its spend limit" : `${q.limit_gpu_seconds} GPU-seconds`;
  box.textContent = `Quota warning: your organisation has used ${q.percent}% of its monthly limit ` +
    `(${q.used_gpu_seconds} GPU-seconds of ${limit}). At 100% sessions end.`;
  box.hidden = false;
}

function onError({ detail: err }) {
  if (err.code === "rate_limited") setStatus("The server is rate-limiting this page's messages; slow down.");
  else if (err.fatal) setStatus(`The server reported: ${err.message} [${err.code}]`);
}

// --- starting and stopping -------------------------------------------------------------------------

async function openSource(model, width, height) {
  if (model.kind !== "video-to-video") return null;
  const kind = document.querySelector('input[name="source"]:checked').value;
  if (kind === "pattern") return new PatternSource();
  const source = new VideoSource($("input-video"));
  try {
    if (kind === "webcam") {
      await source.openWebcam(width, height);
    } else {
      const file = $("file-input").files[0];
      if (!file) throw new Error("choose a video file first");
      await source.openFile(file);
    }
  } catch (err) {
    source.close();
    throw err;
  }
  return source;
}

function setRunning(running) {
  $("start").disabled = running;
  $("stop").disabled = !running;
  $("send-prompt").disabled = !running;
  $("model").disabled = running;
  for (const id of ["width", "height", "fps"]) $(id).disabled = running;
}

async function startSession(event) {
  event?.preventDefault();
  const model = state.model;
  if (!model || state.client) return;
  hideRefusal();
  $("record").hidden = true;
  $("quota").hidden = true;
  const width = Number($("width").value), height = Number($("height").value), fps = Number($("fps").value);
  setRunning(true);
  setStatus(`Opening the input for ${model.id}…`);
  let source;
  try {
    source = await openSource(model, width, height);
  } catch (err) {
    setRunning(false);
    setStatus("The session did not start.");
    showRefusal({ text: `The input could not be opened: ${err.message}. Pick another input (the test pattern always works).` });
    return;
  }
  const client = new LiveClient();
  state.client = client;
  Object.assign(state, { frames: 0, lastFrameIndex: -1, ready: null, source, lastMetrics: null });
  state.controls.clear();
  chart.clear();
  $("controls-log").replaceChildren();
  client.addEventListener("frame", onFrame);
  client.addEventListener("metrics", onMetrics);
  client.addEventListener("control.applied", onApplied);
  client.addEventListener("control.rejected", onRejected);
  client.addEventListener("moderation", onModeration);
  client.addEventListener("quota.warning", onQuota);
  client.addEventListener("error", onError);
  client.addEventListener("redirect", ({ detail }) => setStatus(`Moved to another server (${new URL(detail.url).host})…`));
  setStatus(`Connecting to ${model.id}…`);
  const prompt = $("prompt").value.trim();
  let ready;
  try {
    ready = await client.start({ model: model.id, width, height, fps, prompt: prompt || undefined, params: changedParams() });
  } catch (err) {
    source?.close();
    state.client = null;
    state.source = null;
    setRunning(false);
    setStatus("The session did not start.");
    showRefusal(err instanceof LiveError ? refusal(err) : { text: `The session could not start: ${err.message}` });
    return;
  }
  client.addEventListener("close", onClosed);
  state.ready = ready;
  output.width = ready.width;
  output.height = ready.height;
  output.setAttribute("aria-label", `Generated video from ${ready.model}, ${ready.width}×${ready.height}`);
  $("m-tier").textContent = ready.tier;
  $("chart-caption").textContent = model.kind === "video-to-video"
    ? "End-to-end latency per frame (ms, this page's clock)" : "Server latency p50 per second (ms)";
  setStatus(`Running ${ready.model} (${ready.tier}) at ${ready.width}×${ready.height}, ${ready.fps} fps, on ` +
    `${ready.reservation?.device ?? "a device"} (share ${Number(ready.reservation?.share ?? 0).toFixed(2)}), ` +
    `${ready.price_per_gpu_second} ${ready.currency.toUpperCase()} per GPU-second.`);
  if (source) {
    state.sender = new FrameSender(client, source, { width: ready.width, height: ready.height, fps: ready.fps, preview: $("input-preview") });
  }
}

function onClosed({ detail }) {
  const ended = detail.ended;
  state.sender?.stop();
  state.source?.close();
  const ready = state.ready;
  Object.assign(state, { client: null, sender: null, source: null, ready: null });
  setRunning(false);
  if (ended) {
    const words = END_REASONS[ended.reason] ?? `The session ended (${ended.reason}).`;
    setStatus(words);
    if (ended.reason === "revoked") showRefusal(refusal(new LiveError("revoked")));
    else if (ended.reason !== "client" && ended.reason !== "idle") showRefusal({ text: words });
  } else {
    setStatus(`The connection closed without the session's end (code ${detail.code}); the server ended it and recorded its usage.`);
  }
  if (ended?.usage) $("m-cost").textContent = `${ended.usage.cost} ${ended.usage.currency.toUpperCase()}`;
  if (ready) showRecord(ready.session_id, ended);
}

async function showRecord(sessionId, ended) {
  const link = $("record-link");
  link.href = `/v1/sessions/${encodeURIComponent(sessionId)}`;
  link.textContent = `Session ${sessionId} (JSON record)`;
  const summary = $("record-summary");
  const rows = [];
  const row = (k, v) => rows.push(el("dt", {}, k), el("dd", {}, String(v)));
  if (ended?.usage) {
    row("Ended", ended.reason);
    row("Frames", ended.usage.frames);
    row("GPU-seconds", ended.usage.gpu_seconds_decimal ?? ended.usage.gpu_seconds);
    row("Cost", `${ended.usage.cost} ${ended.usage.currency.toUpperCase()}`);
  }
  summary.replaceChildren(...rows);
  $("record").hidden = false;
}

async function stopSession() {
  if (!state.client) return;
  $("stop").disabled = true;
  setStatus("Stopping…");
  state.sender?.stop();
  await state.client.stop();
}

// --- wiring ----------------------------------------------------------------------------------------

$("setup").addEventListener("submit", startSession);
$("stop").addEventListener("click", stopSession);
$("retry").addEventListener("click", () => startSession());
$("model").addEventListener("change", (e) => selectModel(e.target.value));
$("prompt-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (prompt && state.ready) sendControl({ prompt }, `prompt “${prompt}”`);
});
$("prompt").addEventListener("keydown", (event) => {
  // Enter sends the prompt while a session runs; Shift+Enter is a new line.
  if (event.key === "Enter" && !event.shiftKey && state.ready) {
    event.preventDefault();
    $("prompt-form").requestSubmit();
  }
});
window.addEventListener("pagehide", () => state.client?.close());

loadModels();
