// Input sources for video-to-video sessions: the webcam, a built-in test pattern, a local video file.
// Each draws its current picture into a canvas at the session's size; FrameSender turns that into
// JPEG input frames at the session's fps (docs/playground.md).

import { nowUs } from "./live.js";

/** The webcam (getUserMedia) or a local video file, played (muted, looped) in a <video>. */
export class VideoSource {
  constructor(video) {
    this.video = video;
    this.stream = null;
    this.objectUrl = null;
  }

  async openWebcam(width, height) {
    this.stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: width }, height: { ideal: height } }, audio: false,
    });
    this.video.srcObject = this.stream;
    await this.video.play();
  }

  async openFile(file) {
    this.objectUrl = URL.createObjectURL(file);
    this.video.src = this.objectUrl;
    this.video.loop = true;
    await this.video.play();
  }

  draw(ctx, width, height) {
    if (this.video.readyState < 2) return false;
    // Cover the session size, cropping the longer side (no distortion).
    const vw = this.video.videoWidth, vh = this.video.videoHeight;
    const scale = Math.max(width / vw, height / vh);
    const sw = width / scale, sh = height / scale;
    ctx.drawImage(this.video, (vw - sw) / 2, (vh - sh) / 2, sw, sh, 0, 0, width, height);
    return true;
  }

  close() {
    this.stream?.getTracks().forEach((track) => track.stop());
    this.video.pause();
    this.video.srcObject = null;
    this.video.removeAttribute("src");
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.stream = this.objectUrl = null;
  }
}

/** A moving test pattern: colour bars, a sweeping bar and a clock, so every frame differs. */
export class PatternSource {
  constructor() {
    this.started = performance.now();
  }

  async open() {}

  draw(ctx, width, height) {
    const t = (performance.now() - this.started) / 1000;
    const bars = ["#c0c0c0", "#c0c000", "#00c0c0", "#00c000", "#c000c0", "#c00000", "#0000c0"];
    const bw = width / bars.length;
    bars.forEach((colour, i) => { ctx.fillStyle = colour; ctx.fillRect(i * bw, 0, bw + 1, height); });
    ctx.fillStyle = "#111";
    ctx.fillRect(((t * 0.25) % 1) * width - width * 0.05, 0, width * 0.1, height);
    ctx.beginPath();
    ctx.arc(width / 2, height / 2, Math.min(width, height) * 0.3, -Math.PI / 2, -Math.PI / 2 + (t % 1) * 2 * Math.PI);
    ctx.lineTo(width / 2, height / 2);
    ctx.fillStyle = "#fff";
    ctx.fill();
    ctx.fillStyle = "#000";
    ctx.font = `${Math.max(10, Math.round(height / 10))}px monospace`;
    ctx.fillText(t.toFixed(1), 8, height - 8);
    return true;
  }

  close() {}
}

/**
 * Sends the source's picture as JPEG input frames at `fps`. A tick whose previous frame is still
 * being encoded, or whose send the client refuses (socket backed up), is skipped and counted in
 * `skipped`: the server keeps only the latest input anyway.
 */
export class FrameSender {
  constructor(client, source, { width, height, fps, quality = 0.8, preview = null }) {
    this.client = client;
    this.source = source;
    this.width = width;
    this.height = height;
    this.quality = quality;
    this.canvas = document.createElement("canvas");
    this.canvas.width = width;
    this.canvas.height = height;
    this.ctx = this.canvas.getContext("2d");
    this.preview = preview;
    this.seq = 0;
    this.sent = 0;
    this.skipped = 0;
    this.busy = false;
    this.timer = setInterval(() => this.tick(), 1000 / fps);
  }

  tick() {
    if (this.busy) { this.skipped += 1; return; }
    if (!this.source.draw(this.ctx, this.width, this.height)) return;
    const captured = nowUs();
    if (this.preview) this.preview.getContext("2d").drawImage(this.canvas, 0, 0, this.preview.width, this.preview.height);
    this.busy = true;
    this.canvas.toBlob(async (blob) => {
      try {
        if (!blob || this.timer === null) return;
        const bytes = new Uint8Array(await blob.arrayBuffer());
        if (this.client.sendFrame(this.seq, captured, bytes)) {
          this.seq += 1;
          this.sent += 1;
        } else {
          this.skipped += 1;
        }
      } finally {
        this.busy = false;
      }
    }, "image/jpeg", this.quality);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }
}
