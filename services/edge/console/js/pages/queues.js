// Queues, live: per model running and waiting by priority, utilisation, throughput and latency percentiles, charted.

import { get, query } from "../api.js";
import { errorText, fill, h, ms, notice, percent, priorityName, table } from "../dom.js";
import { lineChart } from "../chart.js";

const POLL_MS = 2000;
const WINDOW_MS = 60 * 60 * 1000;
const MIN_WINDOW_MS = 5 * 60 * 1000;
const PRIORITIES = ["high", "normal", "low"];

// Samples survive page changes while the console stays open (they are what the charts draw).
const samples = new Map(); // model -> [{t, processing, waiting, utilization, finished, wait: {…}, service: {…}}]

function remember(model, sample) {
  const list = samples.get(model) || [];
  list.push(sample);
  while (list.length && list[0].t < sample.t - WINDOW_MS) list.shift();
  samples.set(model, list);
  return list;
}

/** Requests finished per minute between consecutive samples (counters only grow; a reset counts as 0). */
function throughput(list) {
  const points = [];
  for (let i = 1; i < list.length; i++) {
    const minutes = (list[i].t - list[i - 1].t) / 60_000;
    const done = list[i].finished - list[i - 1].finished;
    if (minutes > 0) points.push([list[i].t, Math.max(done, 0) / minutes]);
  }
  return points;
}

async function byPriority(model, state, count) {
  const tally = { high: 0, normal: 0, low: 0 };
  if (!count) return tally;
  const page = await get(`/admin/requests${query({ model, state, page_size: 500 })}`);
  for (const job of page.requests || []) tally[priorityName(job.priority)] += 1;
  return tally;
}

function modelPanel(model) {
  const charts = {
    depth: lineChart(`${model}: running and waiting`, ""),
    utilization: lineChart(`${model}: utilisation`, "%"),
    throughput: lineChart(`${model}: throughput`, "req/min"),
    latency: lineChart(`${model}: service time percentiles`, "ms"),
    wait: lineChart(`${model}: queue wait percentiles`, "ms"),
  };
  const summary = h("div", { class: "summary" });
  const section = h(
    "section",
    { class: "card queue", "aria-labelledby": `q-${model}` },
    h("h2", { id: `q-${model}` }, model),
    summary,
    h("div", { class: "charts" }, Object.values(charts)),
  );
  section.update = (list, running, waiting) => {
    const last = list[list.length - 1];
    fill(
      summary,
      table(
        `${model} now`,
        ["", ...PRIORITIES, "total", "limit"],
        [
          ["Running", ...PRIORITIES.map((p) => String(running[p])), String(last.processing), String(last.maxConcurrent)],
          ["Waiting", ...PRIORITIES.map((p) => String(waiting[p])), String(last.waiting), String(last.maxWaiting)],
        ],
      ),
      h(
        "p",
        { class: "facts" },
        `Utilisation ${percent(last.utilization)} · finished ${last.finished} ` +
          `(failed ${last.failed}, cancelled ${last.cancelled}) · service p50 ${ms(last.service.p50)}, ` +
          `p90 ${ms(last.service.p90)}, p99 ${ms(last.service.p99)} · wait p50 ${ms(last.wait.p50)}, p99 ${ms(last.wait.p99)}`,
      ),
    );
    // The x axis spans what has been sampled: at least 5 minutes, at most the hour kept.
    const span = Math.min(WINDOW_MS, Math.max(MIN_WINDOW_MS, Date.now() - list[0].t));
    const series = (key, pick) => ({ label: key, points: list.map((s) => [s.t, pick(s)]) });
    charts.depth.update([series("running", (s) => s.processing), series("waiting", (s) => s.waiting)], span);
    charts.utilization.update([series("utilisation", (s) => s.utilization * 100)], span);
    charts.throughput.update([{ label: "finished", points: throughput(list) }], span);
    charts.latency.update(
      ["p50", "p90", "p99"].map((p) => series(p, (s) => s.service[p])),
      span,
    );
    charts.wait.update(
      ["p50", "p90", "p99"].map((p) => series(p, (s) => s.wait[p])),
      span,
    );
  };
  return section;
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
      `Updated every ${POLL_MS / 1000} s. The charts show what this page has sampled (up to the last hour, kept while the console stays open); percentiles are the queue's own over its recent jobs.`,
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
      const t = Date.now();
      for (const m of data.models || []) {
        const q = m.queue || {};
        const list = remember(m.model, {
          t,
          processing: q.processing || 0,
          waiting: q.waiting || 0,
          utilization: q.utilization || 0,
          finished: (q.total_processed || 0) + (q.total_failed || 0) + (q.total_cancelled || 0),
          failed: q.total_failed || 0,
          cancelled: q.total_cancelled || 0,
          maxConcurrent: q.max_concurrent || 0,
          maxWaiting: q.max_waiting || 0,
          service: q.service_ms || {},
          wait: q.queue_wait_ms || {},
        });
        const [running, waiting] = await Promise.all([
          byPriority(m.model, "RUNNING", q.processing),
          byPriority(m.model, "QUEUED", q.waiting),
        ]);
        if (stopped) return;
        let panel = shown.get(m.model);
        if (!panel) {
          panel = modelPanel(m.model);
          shown.set(m.model, panel);
          panels.append(panel);
        }
        panel.update(list, running, waiting);
      }
      fill(status);
      updated.textContent = `Last update ${new Date(t).toLocaleTimeString()}`;
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
