// Requests: the 15-day history with filters (everyone's for admins, one's own for a plain user), a request's detail and cancel.

import { call, get, isAdmin, query } from "../api.js";
import { confirmAction, errorText, field, fill, h, ms, notice, priorityName, select, stateBadge, table, when } from "../dom.js";

const STATES = ["", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];

const link = (id) => h("a", { href: `#/request/${encodeURIComponent(id)}` }, id);

function jobRow(job) {
  const t = job.timings || {};
  return [
    link(job.request_id),
    job.model,
    String(job.kind || "").replace("JOB_KIND_", "").toLowerCase(),
    priorityName(job.priority),
    stateBadge(job.state),
    job.client_id,
    when(t.submitted_at),
    ms(t.queued_ms),
    ms(t.service_ms),
    job.backend || "",
  ];
}

const HEADERS = ["Request", "Model", "Kind", "Priority", "State", "Client", "Submitted", "Queued", "Service", "Backend"];

export async function requestsPage(main) {
  const lookup = h("input", { name: "request_id", autocomplete: "off", required: true });
  const find = h(
    "form",
    { class: "inline", role: "search", "aria-label": "Open a request by id" },
    field("Request id", lookup),
    h("button", { type: "submit" }, "Open"),
  );
  find.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/request/${encodeURIComponent(lookup.value.trim())}`;
  });
  fill(main, h("h1", {}, "Requests"), find);
  await history(main, isAdmin());
  return null;
}

/** Models to filter by: every configured one for admins, the servable ones for a plain user. */
async function modelNames(admin) {
  try {
    if (admin) return ((await get("/admin/models")).models || []).map((m) => m.model);
    return ((await get("/v1/models")).data || []).map((m) => m.id);
  } catch {
    return []; // the filter still offers "any"
  }
}

/** The history: everyone's from /admin/requests for admins, the caller's own from /v1/requests otherwise. */
async function history(main, admin) {
  const models = await modelNames(admin);
  const model = select("model", [["", "any"], ...models.map((m) => [m])]);
  const state = select("state", STATES.map((s) => [s, s ? s.toLowerCase() : "any"]));
  const client = h("input", { name: "client_id", autocomplete: "off" });
  const since = h("input", { name: "since", type: "datetime-local" });
  const until = h("input", { name: "until", type: "datetime-local" });
  const form = h(
    "form",
    { class: "filters", "aria-label": "Filter requests" },
    field("Model", model),
    field("Status", state),
    field("Client", client),
    field("Since", since),
    field("Until", until),
    h("button", { type: "submit", class: "primary" }, "Filter"),
  );
  const results = h("div", { "aria-live": "polite" });
  const more = h("button", { type: "button", hidden: true }, "Older");
  main.append(h("h2", {}, admin ? "History (15 days)" : "Your requests (15 days)"), form, results, more);
  let next = "";
  let rows = [];
  const iso = (input) => (input.value ? new Date(input.value).toISOString() : "");
  const load = async (append) => {
    const params = {
      model: model.value,
      state: state.value,
      client_id: client.value.trim(),
      since: iso(since),
      until: iso(until),
      page_size: 50,
      page_token: append ? next : "",
    };
    try {
      const page = await get(`${admin ? "/admin/requests" : "/v1/requests"}${query(params)}`);
      rows = (append ? rows : []).concat((page.requests || []).map(jobRow));
      next = page.next_page_token || "";
      const caption = admin ? "Requests, newest first" : "Your requests, newest first";
      fill(results, table(caption, HEADERS, rows, "No request matches."));
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
}

export async function requestPage(main, id) {
  const outcome = h("div", { "aria-live": "polite" });
  const body = h("div", {}, notice("info", "Loading…"));
  fill(main, h("p", {}, h("a", { href: "#/requests" }, "← Requests")), h("h1", {}, "Request ", h("code", {}, id)), outcome, body);
  document.title = `Request ${id} · aigw console`;
  let payload = null; // the body is read once: it does not change, and an OCR document can be large
  const load = async () => {
    try {
      const job = (await get(`/v1/requests/${encodeURIComponent(id)}${query({ include_payload: !payload })}`)).request;
      payload = payload || { chat: job.chat, ocr: job.ocr };
      renderJob(body, { ...job, chat: payload.chat }, outcome, load);
      if (isAdmin()) await crashesOf(body, id);
      return job;
    } catch (err) {
      fill(body, notice("error", errorText(err)));
      return null;
    }
  };
  const job = await load();
  if (!job || !["QUEUED", "RUNNING"].includes(job.state)) return null;
  const timer = setInterval(async () => {
    const now = await load();
    if (!now || !["QUEUED", "RUNNING"].includes(now.state)) clearInterval(timer);
  }, 2000);
  return () => clearInterval(timer);
}

function renderJob(body, job, outcome, reload) {
  const t = job.timings || {};
  const facts = [
    ["State", stateBadge(job.state)],
    ["Model", job.model],
    ["Kind", String(job.kind || "").replace("JOB_KIND_", "").toLowerCase()],
    ["Priority", priorityName(job.priority)],
    ["Client", job.client_id],
    ["Submitted by", job.subject],
    ["Backend", job.backend || "—"],
    ["Attempt", `${job.attempt || 0} of ${job.max_attempts || 0}`],
    ["Position in queue", job.position ? String(job.position) : "—"],
    ["Progress", String(job.progress || 0)],
    ["Submitted", when(t.submitted_at)],
    ["Started", when(t.started_at) || "—"],
    ["Finished", when(t.finished_at) || "—"],
    ["Deadline", when(t.deadline)],
    ["Queued for", ms(t.queued_ms)],
    ["Service time", ms(t.service_ms)],
  ];
  const cancellable = ["QUEUED", "RUNNING"].includes(job.state);
  const cancel = h("button", { type: "button", class: "danger", disabled: !cancellable || job.cancel_requested }, "Cancel request");
  cancel.addEventListener("click", async () => {
    if (!(await confirmAction(`Cancel request ${job.request_id}?`, "Cancel request"))) return;
    try {
      const answer = await call("DELETE", `/v1/requests/${encodeURIComponent(job.request_id)}`);
      fill(outcome, notice("ok", `Cancellation requested; the request is ${String(answer.request?.state || "").toLowerCase()}.`));
    } catch (err) {
      fill(outcome, notice("error", `Cancel failed: ${errorText(err)}`));
    }
    await reload();
  });
  const errors = (job.attempt_errors || []).map((e) => [String(e.attempt), e.code, e.message, e.backend || "", when(e.at)]);
  fill(
    body,
    h("dl", { class: "facts-grid" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    cancellable ? cancel : null,
    job.error?.code ? h("div", { class: "card" }, h("h2", {}, "Error"), h("p", {}, `${job.error.code}: ${job.error.message}`)) : null,
    table("Failed attempts", ["Attempt", "Code", "Message", "Backend", "When"], errors, "No failed attempts."),
    conversation(job),
    answer(job),
  );
}

function conversation(job) {
  const messages = job.chat?.messages || [];
  if (!messages.length) return null;
  return h(
    "section",
    { class: "card", "aria-label": "Prompt" },
    h("h2", {}, "Prompt"),
    messages.map((m) => h("div", { class: `message ${m.role}` }, h("span", { class: "role" }, m.role), h("pre", {}, m.content))),
  );
}

function answer(job) {
  if (job.chat_result) {
    const u = job.chat_result.usage || {};
    return h(
      "section",
      { class: "card", "aria-label": "Answer" },
      h("h2", {}, "Answer"),
      h("pre", { class: "answer" }, job.chat_result.message?.content || ""),
      h("p", { class: "facts" }, `finish: ${job.chat_result.finish_reason} · tokens: ${u.prompt_tokens} in, ${u.completion_tokens} out`),
    );
  }
  if (job.ocr_result) {
    return h(
      "section",
      { class: "card", "aria-label": "Recognised text" },
      h("h2", {}, "Recognised text"),
      (job.ocr_result.pages || []).map((p) => h("div", {}, h("h3", {}, `Page ${p.page} · ${p.language || "?"} · confidence ${Math.round(p.confidence || 0)}`), h("pre", { class: "answer" }, p.text))),
    );
  }
  return null;
}

async function crashesOf(body, id) {
  try {
    const events = (await get(`/admin/crashes${query({ request_id: id })}`)).events || [];
    body.append(
      table(
        "Crash log entries for this request",
        ["When", "Kind", "Service", "Backend", "What happened"],
        events.map((e) => [when(e.at), String(e.kind).replace("CRASH_KIND_", "").toLowerCase(), e.service, e.backend || "", e.message]),
        "None.",
      ),
    );
  } catch {
    // the detail above is complete without it
  }
}
