// Usage page: GPU-seconds per day (SVG chart + table) and per model, from GET /v1/usage.
import { api, describeError } from "../api.js";
import { barChart } from "./chart.js";

const DAYS = 30;

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

function cells(row, values) {
  row.replaceChildren(...values.map((value, i) => {
    const cell = document.createElement("td");
    if (i > 0) cell.className = "num";
    cell.textContent = value;
    return cell;
  }));
  return row;
}

async function load() {
  const today = new Date();
  const start = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - (DAYS - 1)));
  const [daily, models] = await Promise.all([
    api(`/v1/usage?group_by=day&start=${isoDay(start)}`),
    api("/v1/usage?group_by=model"),
  ]);
  const byDay = new Map(daily.data.map((row) => [row.day, row]));
  const bars = [];
  for (let i = 0; i < DAYS; i += 1) {
    const day = isoDay(new Date(start.getTime() + i * 86400000));
    const row = byDay.get(day);
    const value = row ? Number(row.gpu_seconds) : 0;
    bars.push({ label: day.slice(5), value, title: `${day}: ${value} GPU-s, ${row ? row.cost : "0"} ${daily.currency}` });
  }
  const draw = () => barChart(document.getElementById("usage-chart"), bars, {
    unit: "s",
    description: `GPU-seconds per day over the last ${DAYS} days; ${daily.gpu_seconds} in total.`,
  });
  draw();
  let pending = null;
  window.addEventListener("resize", () => { clearTimeout(pending); pending = setTimeout(draw, 150); });
  document.getElementById("usage-total").textContent =
    `${daily.gpu_seconds} GPU-seconds, ${daily.cost} ${daily.currency.toUpperCase()} over the last ${DAYS} days.`;
  const dayBody = document.querySelector("#usage-days tbody");
  dayBody.replaceChildren(...daily.data.map((row) =>
    cells(document.createElement("tr"), [row.day, row.gpu_seconds, row.cost, row.segments])));
  const modelBody = document.querySelector("#usage-models tbody");
  if (models.data.length === 0) {
    modelBody.replaceChildren(cells(document.createElement("tr"), ["No usage this month yet.", "", "", ""]));
  } else {
    modelBody.replaceChildren(...models.data.map((row) =>
      cells(document.createElement("tr"), [row.model, row.gpu_seconds, row.cost, row.segments])));
  }
}

load().catch((err) => {
  const box = document.getElementById("usage-error");
  box.textContent = `Could not load usage: ${describeError(err)}`;
  box.hidden = false;
});
