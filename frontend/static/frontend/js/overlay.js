// The playground's live overlay: numbers from the server's `metrics` messages and from the frames
// themselves, and a small rolling latency chart drawn on a <canvas> (no chart library).

/** A rolling line chart of the last `capacity` values (ms), redrawn at most once per animation frame. */
export class LatencyChart {
  constructor(canvas, { capacity = 150 } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.capacity = capacity;
    this.values = [];
    this.pending = false;
  }

  push(ms) {
    if (!Number.isFinite(ms)) return;
    this.values.push(ms);
    if (this.values.length > this.capacity) this.values.shift();
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.draw(); });
    }
  }

  clear() {
    this.values = [];
    this.draw();
  }

  draw() {
    const { ctx, canvas } = this;
    const w = canvas.width, h = canvas.height;
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#f6f7f9";
    ctx.fillRect(0, 0, w, h);
    if (this.values.length < 2) return;
    const top = Math.max(10, ...this.values) * 1.15;
    // Grid lines at round values, labelled.
    const step = niceStep(top / 3);
    ctx.strokeStyle = "#d5d9e0";
    ctx.fillStyle = "#4a5260";
    ctx.font = "10px system-ui, sans-serif";
    ctx.lineWidth = 1;
    for (let v = step; v < top; v += step) {
      const y = h - (v / top) * h;
      ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
      ctx.fillText(`${v} ms`, 2, y - 2);
    }
    ctx.strokeStyle = "#1f5fbf";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    this.values.forEach((v, i) => {
      const x = (i / (this.capacity - 1)) * w;
      const y = h - (v / top) * h;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (raw <= m * power) return m * power;
  return 10 * power;
}

/** "12.3 ms", or an en dash when the number is not measured yet (null in the protocol). */
export function fmt(value, unit = "", digits = 1) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return "–";
  return `${Number(value).toFixed(digits)}${unit ? ` ${unit}` : ""}`;
}

/** Cost of `gpuSeconds` at a decimal-string price, as a string with 6 decimals (display only). */
export function costOf(gpuSeconds, pricePerGpuSecond) {
  const price = Number(pricePerGpuSecond);
  if (!Number.isFinite(gpuSeconds) || !Number.isFinite(price)) return "–";
  return (gpuSeconds * price).toFixed(6);
}
