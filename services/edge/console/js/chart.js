// Time-series line charts drawn on a canvas, with the latest values also given as text for screen readers.

import { h } from "./dom.js";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"];

/**
 * A chart element; call `update(series, windowMs)` with series [{label, points: [[timeMs, value], …]}].
 * The x axis is the last `windowMs` up to now; the y axis starts at 0.
 */
export function lineChart(title, unit) {
  const canvas = h("canvas", { width: 560, height: 200, role: "img", "aria-label": title });
  const legend = h("ul", { class: "legend" });
  const figure = h("figure", { class: "chart" }, h("figcaption", {}, title), canvas, legend);
  figure.update = (series, windowMs) => {
    draw(canvas, series, windowMs, unit);
    legend.replaceChildren(
      ...series.map((s, i) => {
        const last = s.points.length ? s.points[s.points.length - 1][1] : null;
        const swatch = h("span", { class: `swatch c${i}` });
        return h("li", {}, swatch, `${s.label}: ${last === null ? "–" : format(last, unit)}`);
      }),
    );
    canvas.setAttribute("aria-label", `${title}. ${legend.textContent}`);
  };
  return figure;
}

function format(value, unit) {
  const n = Number(value);
  const text = Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 10 ? n.toFixed(1) : n.toFixed(2);
  return unit ? `${text} ${unit}` : text;
}

function draw(canvas, series, windowMs, unit) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 48;
  const right = 8;
  const top = 8;
  const bottom = 22;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const now = Date.now();
  const start = now - windowMs;
  let max = 0;
  for (const s of series) for (const [, v] of s.points) max = Math.max(max, Number(v));
  max = niceCeiling(max);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7280";
  ctx.strokeStyle = "#e5e7eb";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + plotW, y);
    ctx.stroke();
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    ctx.fillText(format((max * i) / 4, ""), left - 6, y);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (let i = 0; i <= 4; i++) {
    const t = start + (windowMs * i) / 4;
    const minutesAgo = Math.round((now - t) / 60_000);
    ctx.fillText(minutesAgo ? `−${minutesAgo} min` : "now", left + (plotW * i) / 4, top + plotH + 6);
  }
  series.forEach((s, index) => {
    ctx.strokeStyle = COLORS[index % COLORS.length];
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    for (const [t, v] of s.points) {
      if (t < start) continue;
      const x = left + ((t - start) / windowMs) * plotW;
      const y = top + plotH - (Number(v) / max) * plotH;
      if (started) ctx.lineTo(x, y);
      else ctx.moveTo(x, y);
      started = true;
    }
    ctx.stroke();
  });
}

function niceCeiling(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}
