// Model configuration: edit a model's dynamic settings against the version read; a conflict is shown, never overwritten.

import { call, get } from "../api.js";
import { errorText, field, fill, h, notice, select, when } from "../dom.js";

const RESOLUTIONS = ["RESOLUTION_UNSPECIFIED", "RESOLUTION_TINY", "RESOLUTION_SMALL", "RESOLUTION_BASE", "RESOLUTION_LARGE", "RESOLUTION_GUNDAM"];

// [field path, label, input type, number step]
const LIMITS = [
  ["max_concurrent", "Running at once (1–1000)", "1"],
  ["max_waiting", "Waiting at most (0–100000)", "1"],
  ["timeout_seconds", "Deadline in seconds (1–86400)", "any"],
  ["max_attempts", "Attempts (1–10)", "1"],
];
const PARAMS = [
  ["max_tokens", "Default max tokens", "1"],
  ["temperature", "Default temperature (0–2)", "any"],
  ["top_p", "Default top_p (0–1]", "any"],
];

export async function configPage(main, arg) {
  const body = h("div", {}, notice("info", "Loading…"));
  fill(main, h("h1", {}, "Model configuration"), body);
  let models;
  try {
    models = (await get("/admin/models")).models || [];
  } catch (err) {
    fill(body, notice("error", errorText(err)));
    return null;
  }
  const chosen = models.find((m) => m.model === arg) || models[0];
  const picker = select("model", models.map((m) => [m.model]), chosen?.model);
  picker.addEventListener("change", () => {
    location.hash = `#/config/${encodeURIComponent(picker.value)}`;
  });
  const editor = h("div", {});
  fill(body, h("form", { class: "inline", "aria-label": "Choose a model" }, field("Model", picker)), editor);
  if (chosen) await edit(editor, chosen);
  return null;
}

async function edit(editor, model) {
  const path = `/admin/models/${encodeURIComponent(model.model)}/config`;
  let config;
  try {
    config = (await get(path)).config;
  } catch (err) {
    fill(editor, notice("error", errorText(err)));
    return;
  }
  const inputs = {};
  const number = (name, value, step) => {
    inputs[name] = h("input", { name, type: "number", step, value: value ?? "", inputmode: "decimal" });
    return inputs[name];
  };
  const enabled = h("input", { name: "enabled", type: "checkbox", checked: config.enabled });
  const resolution = select("default_resolution", RESOLUTIONS.map((r) => [r, r.replace("RESOLUTION_", "").toLowerCase()]), config.default_resolution);
  const params = config.default_params || {};
  const version = h("p", { class: "facts" });
  const message = h("div", { "aria-live": "polite" });
  const showVersion = (c) => {
    version.textContent = `Version ${c.version} · changed by ${c.updated_by || "—"} · ${when(c.updated_at) || "never changed"}`;
  };
  showVersion(config);
  const form = h(
    "form",
    { class: "card config", "aria-label": `Configuration of ${model.model}` },
    h("h2", {}, model.model),
    version,
    LIMITS.map(([name, label, step]) => field(label, number(name, config[name], step))),
    field("Accepts requests", enabled),
    model.kind === "ocr"
      ? field("Default resolution", resolution)
      : PARAMS.map(([name, label, step]) => field(label, number(`params.${name}`, params[name], step))),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Save")),
    message,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const patch = {};
    for (const [name] of LIMITS) {
      const value = inputs[name].value;
      if (value !== "" && Number(value) !== Number(config[name])) patch[name] = Number(value);
    }
    if (enabled.checked !== Boolean(config.enabled)) patch.enabled = enabled.checked;
    if (model.kind === "ocr") {
      if (resolution.value !== config.default_resolution) patch.default_resolution = resolution.value;
    } else {
      const next = { ...params };
      let changed = false;
      for (const [name] of PARAMS) {
        const value = inputs[`params.${name}`].value;
        if (value === "" ? name in next : Number(value) !== Number(params[name])) {
          changed = true;
          if (value === "") delete next[name];
          else next[name] = Number(value);
        }
      }
      if (changed) patch.default_params = next;
    }
    if (!Object.keys(patch).length) {
      fill(message, notice("info", "Nothing changed."));
      return;
    }
    try {
      const answer = await call("PUT", path, { json: { expected_version: config.version, patch } });
      config = answer.config;
      showVersion(config);
      fill(message, notice("ok", `Saved as version ${config.version}.`));
    } catch (err) {
      if (err.status === 409) {
        const reread = h("button", { type: "button" }, "Load the current configuration");
        reread.addEventListener("click", () => edit(editor, model));
        fill(
          message,
          notice(
            "error",
            `Not saved: someone changed this configuration after you opened it (you edited version ${config.version}). ` +
              "Your values are still in the form; load the current configuration, then apply your change again.",
          ),
          reread,
        );
      } else {
        fill(message, notice("error", `Not saved: ${errorText(err)}`));
      }
    }
  });
  fill(editor, form);
}
