// Queues: per model the last hour from the queue's own per-minute series (throughput, latency percentiles,
// peak depth), and running and waiting by priority now; both refresh by themselves.

import { get, query } from "../api.js";
import { errorText, fill, h, ms, notice, percent, priorityName, table } from "../dom.js";
import { lineChart } from "../chart.js";

const POLL_MS = 5000;
const WINDOW_MS = 60 * 60 * 1000;
const PRIORITIES = ["high", "normal", "low"];
const PERCENTILES = ["p50", "p95", "p99"];

async function byPriority(model, state, count) {
  const tally = { high: 0, normal: 0, low: 0 };
  if (!count) return tally;
  const page = await get(`/admin/requests${query({ model, state, page_size: 500 })}`);
  for (const job of page.requests || []) tally[priorityName(job.priority)] += 1;
  return tally;
}

/** The queue's minutes as chart points: each at the end of the part of its minute that has passed. */
function minutes(series) {
  return (series.minutes || []).map((m) => {
    const start = Date.parse(m.start);
    const seconds = m.seconds ?? 60;
    return {
      t: start + seconds * 1000,
      finished: (m.succeeded || 0) + (m.failed || 0) + (m.cancelled || 0),
      succeeded: m.succeeded || 0,
      failed: m.failed || 0,
      cancelled: m.cancelled || 0,
      total: m.total_ms || {},
      wait: m.queue_wait_ms || {},
      running: m.peak_running || 0,
      waiting: m.peak_waiting || 0,
    };
  });
}

/** A minute's latency percentile, or null (a gap in the line) for a minute in which nothing finished. */
function latency(hist, p) {
  return hist.count ? hist[p] || 0 : null;
}

function modelPanel(model) {
  const charts = {
    throughput: lineChart(`${model}: throughput, requests finished per minute (this minute so far)`, "/min"),
    latency: lineChart(`${model}: total time percentiles (submission to end)`, "ms"),
    wait: lineChart(`${model}: queue wait percentiles`, "ms"),
    depth: lineChart(`${model}: peak running and waiting per minute`, ""),
    utilization: lineChart(`${model}: peak utilisation per minute`, "%"),
  };
  const summary = h("div", { class: "summary" });
  const hour = h("p", { class: "facts" });
  const section = h(
    "section",
    { class: "card queue", "aria-labelledby": `q-${model}` },
    h("h2", { id: `q-${model}` }, model),
    summary,
    hour,
    h("div", { class: "charts" }, Object.values(charts)),
  );
  section.update = (q, series, running, waiting) => {
    const limit = q.max_concurrent || 0;
    fill(
      summary,
      table(
        `${model} now`,
        ["", ...PRIORITIES, "total", "limit"],
        [
          ["Running", ...PRIORITIES.map((p) => String(running[p])), String(q.processing || 0), String(limit)],
          ["Waiting", ...PRIORITIES.map((p) => String(waiting[p])), String(q.waiting || 0), String(q.max_waiting || 0)],
        ],
      ),
    );
    const list = minutes(series);
    const sum = (key) => list.reduce((n, m) => n + m[key], 0);
    const latest = [...list].reverse().find((m) => m.total.count);
    hour.textContent =
      `Utilisation now ${percent(q.utilization || 0)} · last hour: ${sum("finished")} finished ` +
      `(${sum("succeeded")} succeeded, ${sum("failed")} failed, ${sum("cancelled")} cancelled)` +
      (latest ? ` · latest minute with requests: total p50 ${ms(latest.total.p50)}, p99 ${ms(latest.total.p99)}` : "");
    const line = (label, pick) => ({ label, points: list.map((m) => [m.t, pick(m)]) });
    // Counts per minute: the current minute shows what finished in it so far (a rate extrapolated
    // from its first seconds would jump about).
    charts.throughput.update([line("finished", (m) => m.finished), line("failed", (m) => m.failed)], WINDOW_MS);
    charts.latency.update(
      PERCENTILES.map((p) => line(p, (m) => latency(m.total, p))),
      WINDOW_MS,
    );
    charts.wait.update(
      PERCENTILES.map((p) => line(p, (m) => latency(m.wait, p))),
      WINDOW_MS,
    );
    charts.depth.update([line("running", (m) => m.running), line("waiting", (m) => m.waiting)], WINDOW_MS);
    charts.utilization.update([line("utilisation", (m) => (limit ? (m.running / limit) * 100 : 0))], WINDOW_MS);
  };
  return section;
}

async function modelView(m) {
  const q = m.queue || {};
  const path = `/admin/queue/${encodeURIComponent(m.model)}/series`;
  const [series, running, waiting] = await Promise.all([
    get(path),
    byPriority(m.model, "RUNNING", q.processing),
    byPriority(m.model, "QUEUED", q.waiting),
  ]);
  return { model: m.model, q, series, running, waiting };
}

export async function queuesPage(main) {
  const status = h("div", { "aria-live": "polite" });
  const panels = h("div", { class: "queues" });
  const updated = h("p", { class: "facts" });
  fill(
    main,
    h("h1", {}, "Queues"),
    h(
      "p",
      { class: "hint" },
      `The last hour as the queue counted it, minute by minute (it keeps the hour across restarts); ` +
        `updated every ${POLL_MS / 1000} s. Percentiles are read from per-minute histograms (at most 19 % high).`,
    ),
    updated,
    status,
    panels,
  );
  const shown = new Map();
  let stopped = false;
  const poll = async () => {
    try {
      const data = await get("/admin/models");
      const views = await Promise.all((data.models || []).map(modelView));
      if (stopped) return;
      for (const v of views) {
        let panel = shown.get(v.model);
        if (!panel) {
          panel = modelPanel(v.model);
          shown.set(v.model, panel);
          panels.append(panel);
        }
        panel.update(v.q, v.series, v.running, v.waiting);
      }
      fill(status);
      updated.textContent = `Last update ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      fill(status, notice("error", errorText(err)));
    }
  };
  await poll();
  const timer = setInterval(poll, POLL_MS);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
