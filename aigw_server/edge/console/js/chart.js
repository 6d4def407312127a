// Time-series line charts drawn on a canvas, with the latest values also given as text for screen readers.

import { h } from "./dom.js";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"];

/**
 * A chart element; call `update(series, windowMs)` with series [{label, points: [[timeMs, value], …]}].
 * The x axis is the last `windowMs` up to now; the y axis starts at 0. A null value leaves a gap in the line,
 * and a lone point between gaps is drawn as a dot.
 */
export function lineChart(title, unit) {
  const canvas = h("canvas", { width: 560, height: 200, role: "img", "aria-label": title });
  const legend = h("ul", { class: "legend" });
  const figure = h("figure", { class: "chart" }, h("figcaption", {}, title), canvas, legend);
  figure.update = (series, windowMs) => {
    draw(canvas, series, windowMs, unit);
    const latest = series.map((s) => {
      const known = s.points.filter(([, v]) => v != null);
      return `${s.label}: ${known.length ? format(known[known.length - 1][1], unit) : "–"}`;
    });
    legend.replaceChildren(...latest.map((text, i) => h("li", {}, h("span", { class: `swatch c${i}` }), text)));
    canvas.setAttribute("aria-label", `${title}. Latest: ${latest.join(", ")}`);
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
  for (const s of series) for (const [, v] of s.points) if (v != null) max = Math.max(max, Number(v));
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
  ctx.textBaseline = "top";
  for (let i = 0; i <= 4; i++) {
    const t = start + (windowMs * i) / 4;
    const minutesAgo = Math.round((now - t) / 60_000);
    ctx.textAlign = i === 4 ? "right" : "center"; // the last label ends at the edge instead of being cut
    ctx.fillText(minutesAgo ? `−${minutesAgo} min` : "now", left + (plotW * i) / 4, top + plotH + 6);
  }
  series.forEach((s, index) => {
    const color = COLORS[index % COLORS.length];
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = 2;
    for (const segment of segments(s.points, start)) {
      const xy = segment.map(([t, v]) => [left + ((t - start) / windowMs) * plotW, top + plotH - (Number(v) / max) * plotH]);
      if (xy.length === 1) {
        ctx.beginPath();
        ctx.arc(xy[0][0], xy[0][1], 3, 0, 2 * Math.PI);
        ctx.fill();
        continue;
      }
      ctx.beginPath();
      xy.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.stroke();
    }
  });
}

/** The runs of consecutive known points from `start` on (a null value ends a run). */
function segments(points, start) {
  const runs = [];
  let run = [];
  for (const [t, v] of points) {
    if (t < start || v === null || v === undefined) {
      if (run.length) runs.push(run);
      run = [];
    } else {
      run.push([t, v]);
    }
  }
  if (run.length) runs.push(run);
  return runs;
}

function niceCeiling(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}
