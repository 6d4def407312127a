// The console's shell: sign-in, navigation by role, and one page at a time in <main> (routes are #/page/arg).

import { isAdmin, session, signIn, signOut } from "./api.js";
import { errorText, field, fill, h, notice } from "./dom.js";
import { autoswitchPage, crashesPage } from "./pages/crashes.js";
import { configPage } from "./pages/config.js";
import { overviewPage } from "./pages/overview.js";
import { playgroundPage } from "./pages/playground.js";
import { queuesPage } from "./pages/queues.js";
import { requestPage, requestsPage } from "./pages/requests.js";
import { usersPage } from "./pages/users.js";

// [route, label, page, admins only]
const PAGES = [
  ["overview", "Overview", overviewPage, false],
  ["queues", "Queues", queuesPage, true],
  ["requests", "Requests", requestsPage, false],
  ["crashes", "Crashes", crashesPage, true],
  ["autoswitch", "Auto-switch", autoswitchPage, true],
  ["config", "Configuration", configPage, true],
  ["users", "Users & keys", usersPage, true],
  ["playground", "Playground", playgroundPage, false],
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let leave = null;

function allowed() {
  return PAGES.filter(([, , , adminOnly]) => !adminOnly || isAdmin());
}

function route() {
  const [name = "", ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  return { name: decodeURIComponent(name), arg: rest.map(decodeURIComponent).join("/") };
}

async function show() {
  if (leave) leave();
  leave = null;
  if (!session()) {
    renderSignIn();
    return;
  }
  renderChrome();
  const { name, arg } = route();
  if (name === "request" && arg) {
    leave = await requestPage(main, arg);
    return;
  }
  const page = allowed().find(([key]) => key === name);
  if (!page) {
    location.replace("#/overview");
    return;
  }
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${page[1]} · aigw console`;
  fill(main);
  leave = (await page[2](main, arg)) || null;
}

function renderChrome() {
  nav.hidden = false;
  who.hidden = false;
  fill(
    nav,
    h(
      "ul",
      {},
      allowed().map(([key, label]) => h("li", {}, h("a", { href: `#/${key}`, "data-page": key }, label))),
    ),
  );
  const { username, role } = session();
  fill(
    who,
    h("span", { class: "user" }, username),
    h("span", { class: `badge role-${role}` }, role),
    h("button", { type: "button", onclick: () => signOut() }, "Sign out"),
  );
}

function renderSignIn() {
  nav.hidden = true;
  who.hidden = true;
  document.title = "Sign in · aigw console";
  const username = h("input", { name: "username", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const message = h("div", { "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in"),
    field("User name", username),
    field("Password", password),
    button,
    message,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    fill(message);
    try {
      await signIn(username.value.trim(), password.value);
      if (!location.hash || location.hash === "#/") location.hash = "#/overview";
      else await show();
    } catch (err) {
      fill(message, notice("error", errorText(err)));
      button.disabled = false;
      password.select();
    }
  });
  fill(main, form);
  username.focus();
}

window.addEventListener("hashchange", () => {
  show();
  main.focus({ preventScroll: true });
});
window.addEventListener("aigw:signed-out", () => show());
show();
