// Playground: a streamed chat with a priority choice, and OCR of an uploaded page with its text beside the preview.

import { call, events, get, query } from "../api.js";
import { errorText, field, fill, h, ms, notice, select } from "../dom.js";

const PRIORITIES = [["high"], ["normal"], ["low"]];
const RESOLUTIONS = [["tiny"], ["small"], ["base"], ["large"], ["gundam"]];
const LANGUAGES = [
  ["eng", "English"],
  ["deu", "German"],
  ["fra", "French"],
  ["rus", "Russian"],
  ["ell", "Greek"],
];

export async function playgroundPage(main) {
  let models = [];
  const problem = h("div", {});
  try {
    models = ((await get("/v1/models")).data || []).map((m) => m.id);
  } catch (err) {
    fill(problem, notice("error", errorText(err)));
  }
  const chat = chatPanel(models);
  fill(main, h("h1", {}, "Playground"), problem, h("div", { class: "playground" }, chat.element, ocrPanel(models)));
  return chat.stop;
}

const requestLink = (id) => h("a", { href: `#/request/${encodeURIComponent(id)}` }, id);

function chatPanel(models) {
  const model = select("chat_model", models.map((m) => [m]), models.find((m) => !/ocr|tesseract/i.test(m)));
  const priority = select("priority", PRIORITIES, "normal");
  const maxTokens = h("input", { name: "max_tokens", type: "number", min: 1, step: 1, value: 64 });
  const prompt = h("textarea", { name: "prompt", rows: 3, required: true });
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const stop = h("button", { type: "button", disabled: true }, "Stop");
  const transcript = h("div", { class: "transcript", "aria-live": "polite", "aria-label": "Conversation" });
  const status = h("p", { class: "facts", "aria-live": "polite" });
  const clearButton = h("button", { type: "button" }, "New conversation");
  const history = [];
  let controller = null;
  clearButton.addEventListener("click", () => {
    history.length = 0;
    fill(transcript);
    fill(status);
  });
  stop.addEventListener("click", () => controller?.abort());
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "chat-title" },
    h("h2", { id: "chat-title" }, "Chat"),
    h("div", { class: "inline" }, field("Model", model), field("Priority", priority), field("Max tokens", maxTokens)),
    transcript,
    field("Message", prompt),
    h("div", { class: "actions" }, send, stop, clearButton),
    status,
  );
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = prompt.value;
    if (!text.trim()) return;
    history.push({ role: "user", content: text });
    transcript.append(bubble("user", text));
    const out = h("pre", {});
    transcript.append(h("div", { class: "message assistant" }, h("span", { class: "role" }, "assistant"), out));
    prompt.value = "";
    send.disabled = true;
    stop.disabled = false;
    controller = new AbortController();
    let id = "";
    let answer = "";
    fill(status, "Sending…");
    try {
      const res = await call("POST", "/api/chat/stream", {
        json: { model: model.value, messages: history, max_tokens: Number(maxTokens.value) || undefined, priority: priority.value },
        stream: true,
        signal: controller.signal,
      });
      for await (const { event: kind, data } of events(res)) {
        if (kind === "error") throw new Error(data.message || "the stream failed");
        if (data.request_id && data.request_id !== id) {
          id = data.request_id;
        }
        if (data.delta) {
          answer += data.delta;
          out.textContent = answer;
        }
        const where = data.status === "QUEUED" && data.position ? `queued, position ${data.position}` : String(data.status || "").toLowerCase();
        fill(status, "Request ", requestLink(id), ` · ${where}`, data.finish_reason ? ` · finished: ${data.finish_reason}` : "", data.usage ? ` · ${data.usage.completion_tokens} tokens` : "");
      }
      history.push({ role: "assistant", content: answer });
    } catch (err) {
      history.pop();
      const why = err.name === "AbortError" ? "Stopped; the request is cancelled." : errorText(err);
      fill(status, id ? ["Request ", requestLink(id), " · "] : "", notice(err.name === "AbortError" ? "info" : "error", why));
    } finally {
      send.disabled = false;
      stop.disabled = true;
      controller = null;
    }
  });
  return { element: form, stop: () => controller?.abort() };
}

function bubble(role, text) {
  return h("div", { class: `message ${role}` }, h("span", { class: "role" }, role), h("pre", {}, text));
}

function ocrPanel(models) {
  const file = h("input", { name: "document", type: "file", accept: "image/*,application/pdf", required: true });
  const model = select("ocr_model", [["", "default"], ...models.map((m) => [m])], "");
  const mode = select("resolution", RESOLUTIONS, "base");
  const languages = h(
    "fieldset",
    { class: "languages" },
    h("legend", {}, "Languages (none: detect)"),
    LANGUAGES.map(([code, name]) => h("label", {}, h("input", { type: "checkbox", name: "languages", value: code }), ` ${name}`)),
  );
  const priority = select("ocr_priority", PRIORITIES, "normal");
  const run = h("button", { type: "submit", class: "primary" }, "Recognise");
  const preview = h("div", { class: "preview", "aria-label": "Page preview" });
  const text = h("div", { class: "ocr-text", "aria-live": "polite", "aria-label": "Recognised text" });
  const status = h("p", { class: "facts", "aria-live": "polite" });
  let url = null;
  file.addEventListener("change", () => {
    if (url) URL.revokeObjectURL(url);
    url = null;
    const chosen = file.files[0];
    if (!chosen) return fill(preview);
    if (chosen.type.startsWith("image/")) {
      url = URL.createObjectURL(chosen);
      return fill(preview, h("img", { src: url, alt: `Preview of ${chosen.name}` }));
    }
    return fill(preview, h("p", { class: "hint" }, `${chosen.name} (${Math.round(chosen.size / 1024)} KiB): no preview for this kind of file.`));
  });
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "ocr-title" },
    h("h2", { id: "ocr-title" }, "OCR"),
    h("div", { class: "inline" }, field("Document", file), field("Model", model), field("Mode", mode), field("Priority", priority)),
    languages,
    h("div", { class: "actions" }, run),
    status,
    h("div", { class: "side-by-side" }, preview, text),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) return;
    const langs = [...languages.querySelectorAll("input:checked")].map((box) => box.value);
    run.disabled = true;
    fill(status, "Recognising…");
    fill(text);
    try {
      const answer = await call("POST", `/api/ocr${query({ model: model.value, resolution: mode.value, languages: langs, priority: priority.value })}`, {
        body: chosen,
        headers: { "content-type": chosen.type || "application/octet-stream" },
      });
      const pages = answer.result?.pages || [];
      fill(
        text,
        pages.length
          ? pages.map((p) =>
              h("section", {}, h("h3", {}, `Page ${p.page} · ${p.language || "?"} · ${p.source}`), h("pre", {}, p.text)),
            )
          : h("pre", {}, answer.text),
      );
      fill(status, "Request ", requestLink(answer.request_id), ` · ${pages.length} page(s) · ${ms(answer.timings?.service_ms)}`);
    } catch (err) {
      fill(status, notice("error", errorText(err)));
    } finally {
      run.disabled = false;
    }
  });
  return form;
}
