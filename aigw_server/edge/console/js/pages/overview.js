// Overview: every model and backend with its state and capacity in use; start, stop, switch, sleep and wake for admins.

import { call, get, isAdmin } from "../api.js";
import { confirmAction, errorText, fill, h, notice, percent, select, table } from "../dom.js";

const REFRESH_MS = 5000;
// [level, option text, what it means (asked in the confirmation)]
const SLEEP_LEVELS = [
  ["1", "Level 1 (keep weights)", "level 1: weights kept in CPU memory"],
  ["2", "Level 2 (discard weights)", "level 2: weights discarded"],
];

const BACKEND_STATES = {
  BACKEND_STATE_IDLE: "idle",
  BACKEND_STATE_LOADING: "loading",
  BACKEND_STATE_READY: "loaded",
  BACKEND_STATE_SLEEPING: "sleeping",
  BACKEND_STATE_CRASHED: "crashed",
  BACKEND_STATE_DRAINING: "draining",
};

/** What a backend is doing, in the words operators use; an unreachable one says so whatever it last reported. */
export function backendState(backend) {
  if (backend.health === "UNREACHABLE") return "unreachable";
  return BACKEND_STATES[backend.status?.state] || "unknown";
}

/** A model's state from the backends able to hold it: loaded, loading, sleeping, stopped or unreachable. */
function modelState(model, backends) {
  const able = backends.filter((b) => (model.backends || []).includes(b.status?.backend));
  const holding = able.filter((b) => (b.status?.loaded_models || []).includes(model.model));
  if (holding.some((b) => backendState(b) === "loaded")) return "loaded";
  if (holding.some((b) => backendState(b) === "sleeping")) return "sleeping";
  if (holding.length && holding.every((b) => backendState(b) === "unreachable")) return "unreachable";
  if (able.some((b) => backendState(b) === "loading")) return "loading";
  return model.state || "stopped";
}

function meter(used, capacity) {
  const ratio = capacity > 0 ? used / capacity : 0;
  return h(
    "span",
    { class: "meter-cell" },
    h("meter", { min: 0, max: Math.max(capacity, 1), value: used, "aria-label": `${used} of ${capacity} in use` }),
    ` ${used}/${capacity} (${percent(ratio)})`,
  );
}

export async function overviewPage(main) {
  const outcome = h("div", { class: "outcome", "aria-live": "polite" });
  const content = h("div", {}, notice("info", "Loading…"));
  fill(main, h("h1", {}, "Overview"), outcome, content);
  if (!isAdmin()) {
    await plainUserView(content);
    return null;
  }
  const load = async () => {
    try {
      render(content, await get("/admin/models"), outcome, load);
    } catch (err) {
      fill(content, notice("error", errorText(err)));
    }
  };
  await load();
  const timer = setInterval(() => {
    if (!document.querySelector("dialog[open]") && !content.querySelector("[aria-busy=true]")) load();
  }, REFRESH_MS);
  return () => clearInterval(timer);
}

async function plainUserView(content) {
  try {
    const models = await get("/v1/models");
    fill(
      content,
      notice("info", "Model and backend states are shown to administrators. These are the models you can use:"),
      table(
        "Models",
        ["Model", "Owner"],
        (models.data || []).map((m) => [m.id, m.owned_by]),
      ),
    );
  } catch (err) {
    fill(content, notice("error", errorText(err)));
  }
}

function render(content, data, outcome, reload) {
  const backends = data.backends || [];
  const act = (question, label, method, path, json) => async (event) => {
    const button = event.currentTarget;
    if (!(await confirmAction(question, label))) return;
    button.setAttribute("aria-busy", "true");
    button.disabled = true;
    fill(outcome, notice("info", `${label}: working…`));
    try {
      const answer = await call(method, path, { json });
      const where = answer.backend || (answer.backends || []).join(", ");
      const elapsed = answer.elapsed_ms ?? answer.elapsedMs;
      const took = elapsed ? ` in ${Math.round(elapsed)} ms` : "";
      fill(outcome, notice("ok", `${label}: ${answer.outcome}${where ? ` (${where})` : ""}${took}`));
    } catch (err) {
      fill(outcome, notice("error", `${label} failed: ${errorText(err)}`));
    }
    await reload();
  };
  const modelRows = (data.models || []).map((m) => {
    const state = modelState(m, backends);
    const q = m.queue || {};
    const actions = h(
      "span",
      { class: "actions" },
      h(
        "button",
        {
          type: "button",
          disabled: state === "loaded",
          onclick: act(`Start ${m.model}?`, `Start ${m.model}`, "POST", `/admin/models/${encodeURIComponent(m.model)}/start`),
        },
        state === "sleeping" ? "Wake" : "Start",
      ),
      h(
        "button",
        {
          type: "button",
          class: "danger",
          disabled: state === "stopped",
          onclick: act(
            `Stop ${m.model}? Requests in flight are drained first; new ones wait in the queue.`,
            `Stop ${m.model}`,
            "POST",
            `/admin/models/${encodeURIComponent(m.model)}/stop`,
          ),
        },
        "Stop",
      ),
    );
    return [
      h("strong", {}, m.model),
      m.kind,
      h("span", { class: `badge st-${state}` }, state),
      m.enabled ? "yes" : "no",
      (m.loaded_on || []).join(", ") || "—",
      meter(q.processing || 0, q.max_concurrent || 0),
      `${q.waiting || 0} / ${q.max_waiting || 0}`,
      actions,
    ];
  });
  const backendRows = backends.map((b) => {
    const s = b.status || {};
    const others = (s.available_models || []).filter((m) => !(s.loaded_models || []).includes(m));
    const choice = select("model", others.map((m) => [m]));
    choice.setAttribute("aria-label", `Model to switch ${s.backend} to`);
    const switcher = others.length
      ? h(
          "span",
          { class: "actions" },
          choice,
          h(
            "button",
            {
              type: "button",
              onclick: (event) =>
                act(
                  `Switch ${s.backend} to ${choice.value}? It drains, unloads what it holds and loads ${choice.value}.`,
                  `Switch ${s.backend}`,
                  "POST",
                  `/admin/backends/${encodeURIComponent(s.backend)}/switch`,
                  { model: choice.value },
                )(event),
            },
            "Switch",
          ),
        )
      : "—";
    const state = backendState(b);
    const level = s.sleep_level ?? s.sleepLevel;
    return [
      h("strong", {}, s.backend || "?"),
      `${b.kind} · ${s.engine || "?"}`,
      h("span", { class: `badge st-${state}` }, state === "sleeping" && level ? `sleeping (level ${level})` : state),
      (s.loaded_models || []).join(", ") || "—",
      meter(s.in_flight || 0, s.capacity || 0),
      s.kv_cache_usage >= 0 ? percent(s.kv_cache_usage) : "—",
      String(s.restarts || 0),
      s.detail || "",
      switcher,
      sleepControls(s.backend || "", state, act),
    ];
  });
  fill(
    content,
    table("Models", ["Model", "Kind", "State", "Enabled", "Loaded on", "Running", "Waiting", "Actions"], modelRows),
    table(
      "Backends",
      ["Backend", "Kind", "State", "Holds", "In flight", "KV cache", "Restarts", "Detail", "Switch to", "Sleep and wake"],
      backendRows,
    ),
  );
}

/** Sleep (at the chosen level) and Wake for one backend; each asks for confirmation and reports through `act`. */
function sleepControls(backend, state, act) {
  const path = (what) => `/admin/backends/${encodeURIComponent(backend)}/${what}`;
  const level = select(
    "level",
    SLEEP_LEVELS.map(([value, text]) => [value, text]),
    "1",
  );
  level.setAttribute("aria-label", `Sleep level for ${backend}`);
  const asleep = state === "sleeping";
  return h(
    "span",
    { class: "actions" },
    level,
    h(
      "button",
      {
        type: "button",
        disabled: asleep || state === "unreachable",
        onclick: (event) => {
          const chosen = SLEEP_LEVELS.find(([value]) => value === level.value);
          return act(
            `Put ${backend} to sleep at ${chosen[2]}? It stops serving until woken; its requests wait in their queues.`,
            `Sleep ${backend}`,
            "POST",
            path("sleep"),
            { level: Number(level.value) },
          )(event);
        },
      },
      "Sleep",
    ),
    h(
      "button",
      {
        type: "button",
        disabled: !asleep,
        onclick: act(`Wake ${backend}? It reloads what it slept with, then serves again.`, `Wake ${backend}`, "POST", path("wake"), {}),
      },
      "Wake",
    ),
  );
}
