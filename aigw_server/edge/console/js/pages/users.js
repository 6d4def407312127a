// Users and API keys for admins: create, disable, delete users; create (secret shown once) and revoke keys.

import { call, get, session } from "../api.js";
import { confirmAction, errorText, field, fill, h, notice, select, table, when } from "../dom.js";

export async function usersPage(main) {
  const outcome = h("div", { "aria-live": "polite" });
  const users = h("div", {});
  const keys = h("div", {});
  fill(main, h("h1", {}, "Users & API keys"), outcome, h("h2", {}, "Users"), users, h("h2", {}, "API keys"), keys);
  const say = (kind, text) => fill(outcome, notice(kind, text));
  const reload = async () => {
    await Promise.all([renderUsers(users, say, reload), renderKeys(keys, say, reload)]);
  };
  await reload();
  return null;
}

async function renderUsers(box, say, reload) {
  let list;
  try {
    list = (await get("/admin/users")).users || [];
  } catch (err) {
    fill(box, notice("error", errorText(err)));
    return;
  }
  const me = session().username;
  const rows = list.map((u) => {
    const self = u.username === me;
    const toggle = h("button", { type: "button", disabled: self }, u.disabled ? "Enable" : "Disable");
    toggle.addEventListener("click", async () => {
      const verb = u.disabled ? "Enable" : "Disable";
      if (!(await confirmAction(`${verb} user ${u.username}?`, verb))) return;
      try {
        await call("PATCH", `/admin/users/${encodeURIComponent(u.username)}`, { json: { disabled: !u.disabled } });
        say("ok", `User ${u.username} ${u.disabled ? "enabled" : "disabled"}.`);
      } catch (err) {
        say("error", errorText(err));
      }
      await reload();
    });
    const remove = h("button", { type: "button", class: "danger", disabled: self }, "Delete");
    remove.addEventListener("click", async () => {
      if (!(await confirmAction(`Delete user ${u.username}? Their tokens and keys stop working.`, "Delete"))) return;
      try {
        await call("DELETE", `/admin/users/${encodeURIComponent(u.username)}`);
        say("ok", `User ${u.username} deleted.`);
      } catch (err) {
        say("error", errorText(err));
      }
      await reload();
    });
    return [
      u.username,
      u.role,
      u.disabled ? "disabled" : "active",
      (u.allowed_client_ids || []).join(", ") || "—",
      when(u.created_at),
      h("span", { class: "actions" }, toggle, remove),
    ];
  });
  const username = h("input", { name: "new_username", autocomplete: "off", required: true, minlength: 3, maxlength: 64 });
  const password = h("input", { name: "new_password", type: "password", autocomplete: "new-password", required: true, minlength: 12 });
  const role = select("new_role", [["user"], ["admin"]], "user");
  const clients = h("input", { name: "new_clients", autocomplete: "off" });
  const form = h(
    "form",
    { class: "card inline", "aria-label": "Create a user" },
    field("New user name", username),
    field("Password (12+ characters)", password),
    field("Role", role),
    field("Allowed client ids", clients, "comma-separated, optional"),
    h("button", { type: "submit", class: "primary" }, "Create user"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const allowed = clients.value.split(",").map((c) => c.trim()).filter(Boolean);
    try {
      const answer = await call("POST", "/admin/users", {
        json: { username: username.value.trim(), password: password.value, role: role.value, allowed_client_ids: allowed },
      });
      say("ok", `User ${answer.user.username} created.`);
      await reload();
    } catch (err) {
      say("error", `User not created: ${errorText(err)}`);
    }
  });
  fill(box, table("Users", ["User", "Role", "Status", "Allowed clients", "Created", "Actions"], rows), form);
}

async function renderKeys(box, say, reload) {
  let list;
  try {
    list = (await get("/admin/api-keys")).keys || [];
  } catch (err) {
    fill(box, notice("error", errorText(err)));
    return;
  }
  const rows = list.map((k) => {
    const revoke = h("button", { type: "button", class: "danger", disabled: Boolean(k.revoked_at) }, "Revoke");
    revoke.addEventListener("click", async () => {
      if (!(await confirmAction(`Revoke API key ${k.key_id} (${k.name || "unnamed"})? It stops working at once.`, "Revoke"))) return;
      try {
        await call("DELETE", `/admin/api-keys/${encodeURIComponent(k.key_id)}`);
        say("ok", `API key ${k.key_id} revoked.`);
      } catch (err) {
        say("error", errorText(err));
      }
      await reload();
    });
    return [
      h("code", {}, k.key_id),
      k.name || "—",
      k.subject,
      k.role,
      when(k.created_at),
      when(k.last_used_at) || "never",
      k.revoked_at ? `revoked ${when(k.revoked_at)}` : "active",
      revoke,
    ];
  });
  const name = h("input", { name: "key_name", autocomplete: "off", required: true });
  const subject = h("input", { name: "key_subject", autocomplete: "off", placeholder: session().username });
  const role = select("key_role", [["user"], ["admin"]], "user");
  const secret = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "card inline", "aria-label": "Create an API key" },
    field("Key description", name),
    field("Acts as user", subject, "empty: yourself"),
    field("Key role", role),
    h("button", { type: "submit", class: "primary" }, "Create API key"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const answer = await call("POST", "/admin/api-keys", {
        json: { name: name.value.trim(), subject: subject.value.trim(), role: role.value },
      });
      await reload();
      showSecretOnce(box, answer);
    } catch (err) {
      say("error", `Key not created: ${errorText(err)}`);
    }
  });
  fill(box, table("API keys", ["Key id", "Description", "Acts as", "Role", "Created", "Last used", "Status", ""], rows), form, secret);
}

function showSecretOnce(box, answer) {
  const value = h("input", { readonly: true, value: answer.api_key, class: "secret", "aria-label": "New API key" });
  const copy = h("button", { type: "button" }, "Copy");
  copy.addEventListener("click", async () => {
    value.select();
    try {
      await navigator.clipboard.writeText(answer.api_key);
      copy.textContent = "Copied";
    } catch {
      copy.textContent = "Selected: press Ctrl+C";
    }
  });
  const panel = h(
    "section",
    { class: "card once", role: "status", "aria-label": "New API key" },
    h("h3", {}, `New key ${answer.key.key_id} for ${answer.key.subject}`),
    h("p", {}, "Copy it now: this is the only time the key is shown. Only its hash is stored."),
    h("div", { class: "inline" }, value, copy),
  );
  box.prepend(panel);
  value.focus();
  value.select();
}
