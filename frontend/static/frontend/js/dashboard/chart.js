// A small bar chart drawn as SVG (no chart library): barChart(svg, [{label, value, title}], opts).
const NS = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

export function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

export function barChart(svg, bars, { unit = "", description = "" } = {}) {
  // Drawn at the size it is shown (text stays legible in a narrow window), at least 320 wide.
  const width = Math.max(320, Math.round(svg.getBoundingClientRect().width) || 720);
  const height = 220;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const pad = { left: 52, right: 8, top: 10, bottom: 34 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  svg.replaceChildren(el("desc", { id: svg.getAttribute("aria-labelledby") || "" }, description));
  const top = niceMax(Math.max(0, ...bars.map((b) => b.value)));
  for (let i = 0; i <= 4; i += 1) {
    const y = pad.top + plotH - (plotH * i) / 4;
    svg.append(el("line", { class: "axis", x1: pad.left, x2: width - pad.right, y1: y, y2: y, "stroke-opacity": i ? 0.25 : 1 }));
    svg.append(el("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end" }, `${+(top * i / 4).toPrecision(3)}${unit}`));
  }
  const slot = plotW / Math.max(1, bars.length);
  const labelEvery = Math.ceil(bars.length / Math.max(2, Math.floor(plotW / 60)));
  bars.forEach((bar, i) => {
    const h = (plotH * bar.value) / top;
    const x = pad.left + i * slot + slot * 0.15;
    const rect = el("rect", { class: "bar", x, y: pad.top + plotH - h, width: Math.max(1, slot * 0.7), height: Math.max(h, bar.value > 0 ? 1 : 0) });
    rect.append(el("title", {}, bar.title || `${bar.label}: ${bar.value}${unit}`));
    svg.append(rect);
    if (i % labelEvery === 0) {
      svg.append(el("text", { x: x + slot * 0.35, y: height - pad.bottom + 16, "text-anchor": "middle" }, bar.label));
    }
  });
}
