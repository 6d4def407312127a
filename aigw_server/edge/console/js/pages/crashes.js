// Crashes (the crash log with filters) and auto-switch (plan, demand and recorded decisions with their reasons).

import { call, get, query } from "../api.js";
import { confirmAction, errorText, field, fill, h, notice, select, table, when } from "../dom.js";

const KINDS = ["", "LEASE_LOST", "BACKEND_CRASH", "ENGINE_RESTART", "RETRY", "RECOVERY", "DEADLINE", "PROCESS_RESTART"];
const SERVICES = ["", "router", "queue", "textgen", "ocr", "admin"];

const kindName = (kind) => String(kind || "").replace("CRASH_KIND_", "").toLowerCase().replace(/_/g, " ");

export async function crashesPage(main) {
  const service = select("service", SERVICES.map((s) => [s, s || "any"]));
  const model = h("input", { name: "model", autocomplete: "off" });
  const kind = select("kind", KINDS.map((k) => [k ? `CRASH_KIND_${k}` : "", k ? kindName(k) : "any"]));
  const form = h(
    "form",
    { class: "filters", "aria-label": "Filter crashes" },
    field("Service", service),
    field("Model", model),
    field("Kind", kind),
    h("button", { type: "submit", class: "primary" }, "Filter"),
  );
  const results = h("div", { "aria-live": "polite" });
  const more = h("button", { type: "button", hidden: true }, "Older");
  fill(main, h("h1", {}, "Crashes"), form, results, more);
  let next = "";
  let rows = [];
  const load = async (append) => {
    try {
      const page = await get(
        `/admin/crashes${query({ service: service.value, model: model.value.trim(), kind: kind.value, page_token: append ? next : "" })}`,
      );
      rows = (append ? rows : []).concat((page.events || []).map(crashRow));
      next = page.next_page_token || "";
      fill(results, table("Crash log, newest first", ["When", "Kind", "Service", "Model", "Backend", "Request", "What happened", "Context"], rows, "No abnormal events recorded."));
      more.hidden = !next;
    } catch (err) {
      fill(results, notice("error", errorText(err)));
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load(false);
  });
  more.addEventListener("click", () => load(true));
  await load(false);
  return null;
}

function crashRow(e) {
  const details = Object.entries(e.details || {}).map(([k, v]) => `${k}=${v}`);
  const context = h(
    "div",
    {},
    details.length ? h("span", {}, details.join(" · ")) : null,
    (e.log_tail || []).length ? h("details", {}, h("summary", {}, "Last output"), h("pre", {}, e.log_tail.join("\n"))) : null,
  );
  return [
    when(e.at),
    kindName(e.kind),
    e.service,
    e.model || "",
    e.backend || "",
    e.request_id ? h("a", { href: `#/request/${encodeURIComponent(e.request_id)}` }, e.request_id) : "",
    e.message,
    context,
  ];
}

export async function autoswitchPage(main) {
  const outcome = h("div", { "aria-live": "polite" });
  const body = h("div", {}, notice("info", "Loading…"));
  fill(main, h("h1", {}, "Auto-switch"), outcome, body);
  const load = async () => {
    try {
      render(body, await get("/admin/autoswitch"), outcome, load);
    } catch (err) {
      fill(body, notice("error", errorText(err)));
    }
  };
  await load();
  return null;
}

function render(body, data, outcome, reload) {
  const toggle = h("button", { type: "button" }, data.enabled ? "Turn auto-switching off" : "Turn auto-switching on");
  toggle.addEventListener("click", async () => {
    const want = !data.enabled;
    if (!(await confirmAction(`Turn auto-switching ${want ? "on" : "off"}?`, want ? "Turn on" : "Turn off"))) return;
    try {
      const answer = await call("PUT", "/admin/autoswitch", { json: { enabled: want } });
      fill(outcome, notice("ok", `Auto-switching is ${answer.enabled ? "on" : "off"}.`));
    } catch (err) {
      fill(outcome, notice("error", errorText(err)));
    }
    await reload();
  });
  const scores = (map) =>
    Object.entries(map || {})
      .map(([m, s]) => `${m}: ${Number(s).toFixed(2)}`)
      .join(", ");
  fill(
    body,
    h(
      "p",
      { class: "facts" },
      `Auto-switching is ${data.enabled ? "on" : "off"} · usage window ${data.window_days} days · cooldown ${data.cooldown_seconds} s · ` +
        `every ${data.interval_seconds} s · margin ×${data.demand_margin} · evaluated ${when(data.evaluated_at) || "never"}`,
    ),
    toggle,
    table(
      "Plan by backend",
      ["Backend", "Holds", "Should hold", "Action", "Why"],
      (data.plan || []).map((p) => [p.backend, p.current_model || "—", p.target_model || "—", p.action, p.reason]),
      "No switchable backend.",
    ),
    table(
      "Demand by model",
      ["Model", "Expected next hour", "Queued now", "Score"],
      (data.demand || []).map((d) => [d.model, Number(d.expected || 0).toFixed(1), String(d.queued || 0), Number(d.score || 0).toFixed(2)]),
    ),
    table(
      "Decisions, newest first",
      ["When", "Backend", "From", "To", "Action", "Reason", "Scores"],
      (data.decisions || []).map((d) => [when(d.at), d.backend, d.from_model || "—", d.to_model || "—", d.action, d.reason, scores(d.scores)]),
      "No decisions recorded.",
    ),
  );
}
