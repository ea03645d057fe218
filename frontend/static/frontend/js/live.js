// NextFrame live protocol v1: the browser's client, in one module (docs/protocol.md is the contract).
//
//   const client = new LiveClient();                      // same-origin /v1/live, dashboard ticket
//   client.addEventListener("frame", (e) => draw(e.detail.jpeg));
//   const ready = await client.start({ model: "stylize", width: 256, height: 256, fps: 30 });
//   client.sendFrame(seq, nowUs(), jpegBytes);             // video-to-video models
//   const seq = client.control({ params: { strength: 0.2 } });   // -> "control.applied" / "control.rejected"
//   const ended = await client.stop();                     // session.ended {reason, usage}
//
// Events (CustomEvent, payload in `detail`): "ready", "frame" ({frameIndex, inputSeq, inputCaptureTsUs,
// controlSeq, jpeg, receivedAtUs}), "metrics", "control.applied", "control.rejected", "moderation",
// "quota.warning", "error" (a LiveError; `fatal` tells whether the session goes on), "redirect",
// "ended" (session.ended), "close" ({code, reason, ended}), and "message" for every text message,
// including types this client does not know (the protocol grows additively: they are ignored here).

export const INPUT_HEADER_BYTES = 12;
export const OUTPUT_HEADER_BYTES = 20;
export const NO_INPUT = 0xffffffff;
export const MAX_INPUT_SEQ = 0xfffffffe;
export const MAX_CONTROL_SEQ = 0xffffffff;
export const CLOSE = Object.freeze({
  NORMAL: 1000, GOING_AWAY: 1001, TOO_BIG: 1009, TRY_AGAIN_LATER: 1013,
  UNAUTHENTICATED: 4401, FORBIDDEN: 4403, CONCURRENCY: 4429,
});
// What a close code means when no `error` message explained it (section 5 of the protocol).
const CLOSE_CODES = {
  1001: "going_away", 1006: "connection_failed", 1009: "message_too_big", 1013: "capacity_unavailable",
  4401: "unauthenticated", 4403: "forbidden", 4429: "concurrency_limit",
};
// `error` codes after which no session exists, although the socket stays open (section 4).
const START_REFUSALS = new Set(["unknown_model", "invalid_params", "moderation"]);
// Input frames waiting in the socket's buffer beyond this are not sent (counted by the caller):
// latest wins on the server anyway, and a backed-up socket only adds latency.
const MAX_BUFFERED_BYTES = 1 << 20;

/** Microseconds on this page's clock (for `capture_ts_us`, echoed back in output frames). */
export function nowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

/** A refusal or failure: `code` is the protocol's error code (or a close code's meaning). */
export class LiveError extends Error {
  constructor(code, message, { retryAfterS = null, closeCode = null, httpStatus = null, fatal = true } = {}) {
    super(message || code);
    this.name = "LiveError";
    this.code = code;
    this.retryAfterS = retryAfterS;
    this.closeCode = closeCode;
    this.httpStatus = httpStatus;
    this.fatal = fatal;
  }
}

/** The 12-byte input header (u32 seq, u64 capture_ts_us, big-endian) followed by the JPEG. */
export function encodeInputFrame(seq, captureTsUs, jpeg) {
  if (!Number.isInteger(seq) || seq < 0 || seq > MAX_INPUT_SEQ) throw new RangeError(`input seq ${seq} out of range`);
  const body = jpeg instanceof Uint8Array ? jpeg : new Uint8Array(jpeg);
  const out = new Uint8Array(INPUT_HEADER_BYTES + body.byteLength);
  const view = new DataView(out.buffer);
  view.setUint32(0, seq);
  view.setBigUint64(4, BigInt(Math.max(0, Math.floor(captureTsUs))));
  out.set(body, INPUT_HEADER_BYTES);
  return out.buffer;
}

/** The 20-byte output header and the JPEG after it (a view, not a copy). */
export function decodeOutputFrame(buffer) {
  if (buffer.byteLength < OUTPUT_HEADER_BYTES) {
    throw new LiveError("bad_frame", `output frame of ${buffer.byteLength} bytes is shorter than its header`);
  }
  const view = new DataView(buffer);
  return {
    frameIndex: view.getUint32(0),
    inputSeq: view.getUint32(4),
    inputCaptureTsUs: Number(view.getBigUint64(8)),
    controlSeq: view.getUint32(16),
    jpeg: new Uint8Array(buffer, OUTPUT_HEADER_BYTES),
  };
}

/** ws(s)://<this host>/v1/live */
export function defaultLiveUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/live`;
}

/** A WebSocket ticket minted with the logged-in dashboard session (POST /v1/tickets + CSRF token). */
export async function dashboardTicket() {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
  const res = await fetch("/v1/tickets", {
    method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrf, Accept: "application/json" },
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = body.error ?? {};
    throw new LiveError(err.code ?? `http_${res.status}`, err.message ?? res.statusText,
      { retryAfterS: err.retry_after_s ?? null, httpStatus: res.status });
  }
  return body.ticket;
}

function withTicket(url, ticket) {
  const u = new URL(url, location.href);
  u.searchParams.set("ticket", ticket);
  return u.toString();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class LiveClient extends EventTarget {
  /**
   * @param {object} [options]
   * @param {string} [options.url] the /v1/live endpoint (default: this host)
   * @param {() => Promise<string>} [options.getTicket] mints a fresh ticket (default: the dashboard's)
   * @param {number} [options.maxRedirects] `session.redirect`s followed for one start (default 3)
   */
  constructor({ url = defaultLiveUrl(), getTicket = dashboardTicket, maxRedirects = 3 } = {}) {
    super();
    this.url = url;
    this.getTicket = getTicket;
    this.maxRedirects = maxRedirects;
    this.ws = null;
    this.ready = null;        // the session.ready message once started
    this.ended = null;        // the session.ended message once over
    this.redirects = 0;       // redirects followed by the last start()
    this.lastControlSeq = 0;
    this._startMessage = null;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /**
   * Open a socket and start a session; resolves with `session.ready`, rejects with a LiveError
   * (`capacity_unavailable` with `retryAfterS`, `quota_exceeded`, `concurrency_limit`, `moderation`,
   * `unauthenticated` ...). A `session.redirect` is followed transparently: after `retry_after_s`
   * the same session.start is sent to the new `url` with the ticket the redirect carried.
   */
  async start({ model, width, height, fps, prompt, params } = {}) {
    if (this.ws) throw new LiveError("already_started", "this client already has a socket; make a new one");
    const message = { type: "session.start", model };
    for (const [key, value] of Object.entries({ width, height, fps, prompt, params })) {
      if (value !== undefined && value !== null && value !== "") message[key] = value;
    }
    this._startMessage = message;
    this.redirects = 0;
    let target = { url: this.url, ticket: await this.getTicket() };
    for (;;) {
      const outcome = await this._connect(target.url, target.ticket);
      if (outcome.ready) return outcome.ready;
      if (!outcome.redirect) throw outcome.error;
      if (this.redirects >= this.maxRedirects) {
        throw new LiveError("too_many_redirects", `gave up after ${this.redirects} session.redirect messages`);
      }
      this.redirects += 1;
      const { url, ticket, retry_after_s: wait } = outcome.redirect;
      this._emit("redirect", { url, retryAfterS: wait ?? 0 });
      if (wait > 0) await sleep(Math.min(wait, 60) * 1000);
      target = { url, ticket };
    }
  }

  /** One socket up to session.ready (-> {ready}), a redirect (-> {redirect}) or a refusal (-> {error}). */
  _connect(url, ticket) {
    return new Promise((resolve) => {
      const ws = new WebSocket(withTicket(url, ticket));
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      let settled = false, redirect = null, refusal = null;
      const settle = (outcome) => {
        if (!settled) { settled = true; resolve(outcome); }
      };
      ws.onopen = () => ws.send(JSON.stringify(this._startMessage));
      ws.onmessage = (event) => {
        if (typeof event.data !== "string") {
          if (this.ready) this._onFrame(event.data);
          return;
        }
        let msg;
        try { msg = JSON.parse(event.data); } catch { return; }
        if (!msg || typeof msg.type !== "string") return;
        if (this.ready) { this._onMessage(msg); return; }
        // Before session.ready: the answer to session.start.
        this._emit("message", msg);
        if (msg.type === "session.ready") {
          this.ready = msg;
          this._emit("ready", msg);
          settle({ ready: msg });
        } else if (msg.type === "session.redirect") {
          // This node cannot host the session (v1.4). Leave it (it closes with 1000 too) and, once
          // closed, reconnect to `url` with the ticket the redirect carries.
          if (typeof msg.url !== "string" || !/^wss?:\/\//.test(msg.url) || typeof msg.ticket !== "string") {
            refusal = new LiveError("bad_message", "session.redirect without a ws(s) url and a ticket");
          } else {
            redirect = msg;
          }
          ws.close(CLOSE.NORMAL);
        } else if (msg.type === "error") {
          refusal = new LiveError(msg.code, msg.message, { retryAfterS: msg.retry_after_s ?? null });
          if (START_REFUSALS.has(msg.code)) {
            // No session starts, the socket stays open: this client closes it (one start per client).
            ws.close(CLOSE.NORMAL);
            settle({ error: refusal });
          }
        }
      };
      ws.onclose = (event) => {
        this.ws = null;
        if (!settled) {
          if (redirect) {
            settle({ redirect });
          } else {
            const code = CLOSE_CODES[event.code] ?? "connection_closed";
            const error = refusal ?? new LiveError(code, event.reason || `the socket closed (${event.code}) before the session started`);
            error.closeCode = event.code;
            settle({ error });
          }
        }
        // Only a started session's socket reports "close"; before that, start() settles instead.
        if (this.ready) this._emit("close", { code: event.code, reason: event.reason, ended: this.ended });
      };
    });
  }

  _onFrame(buffer) {
    let frame;
    try { frame = decodeOutputFrame(buffer); } catch (err) { this._emit("error", err); return; }
    frame.receivedAtUs = nowUs();
    this._emit("frame", frame);
  }

  _onMessage(msg) {
    this._emit("message", msg);
    switch (msg.type) {
      case "metrics":
      case "control.applied":
      case "control.rejected":
      case "moderation":
      case "quota.warning":
        this._emit(msg.type, msg);
        break;
      case "error": {
        // Fatal ones are followed by session.ended (during a session): the client learns it there.
        const fatal = msg.code === "server_error" || msg.code === "quota_exceeded";
        this._emit("error", new LiveError(msg.code, msg.message, { retryAfterS: msg.retry_after_s ?? null, fatal }));
        break;
      }
      case "session.ended":
        this.ended = msg;
        this._emit("ended", msg);
        break;
      default:
        break; // a message type this client does not know: ignored (section 8)
    }
  }

  /**
   * Send one input frame (video-to-video models). Returns false, sending nothing, when the socket
   * is not open or is backed up: the caller counts it as dropped.
   */
  sendFrame(seq, captureTsUs, jpeg) {
    if (!this.open || !this.ready || this.ended) return false;
    if (this.ws.bufferedAmount > MAX_BUFFERED_BYTES) return false;
    this.ws.send(encodeInputFrame(seq, captureTsUs, jpeg));
    return true;
  }

  /** Send a control (a new prompt and/or params); returns its `seq` (strictly increasing). */
  control({ prompt, params } = {}) {
    if (!this.open || !this.ready) throw new LiveError("not_started", "no running session");
    if (prompt === undefined && params === undefined) throw new LiveError("bad_message", "a control needs a prompt or params");
    if (this.lastControlSeq >= MAX_CONTROL_SEQ) throw new LiveError("bad_message", "control seq exhausted");
    const seq = ++this.lastControlSeq;
    const msg = { type: "control", seq };
    if (prompt !== undefined) msg.prompt = prompt;
    if (params !== undefined) msg.params = params;
    this.ws.send(JSON.stringify(msg));
    return seq;
  }

  /**
   * End the session: resolves with `session.ended` (usage), or null when the socket closed without
   * it (the server ended the session too; usage is still recorded) or after `timeoutMs`.
   */
  stop({ timeoutMs = 5000 } = {}) {
    if (this.ended) return Promise.resolve(this.ended);
    const ws = this.ws;
    if (!ws) return Promise.resolve(null);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.removeEventListener("close", done);
        resolve(this.ended);
      };
      const timer = setTimeout(() => { ws.close(CLOSE.NORMAL); done(); }, timeoutMs);
      this.addEventListener("close", done);
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "session.stop" }));
      else if (ws.readyState === WebSocket.CONNECTING) ws.close(CLOSE.NORMAL);
    });
  }

  /** Drop the socket without a session.stop (the server ends the session and records its usage). */
  close() {
    this.ws?.close(CLOSE.NORMAL);
  }
}
