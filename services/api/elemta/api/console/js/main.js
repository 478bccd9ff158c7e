// The console's shell: log in, the navigation the role allows, and the routes
// (#/, #/messages, #/messages/<id>, #/suspensions, #/keys, #/audit, #/settings).

import { ApiError, del, get, post, setSession, whenLoggedOut } from "./api.js";
import { h, toast } from "./dom.js";
import { dashboard } from "./dashboard.js";
import { messages, message } from "./messages.js";
import { suspensions } from "./suspensions.js";
import { keys } from "./keys.js";
import { audit } from "./audit.js";
import { settings } from "./settings.js";

const main = document.getElementById("main");
let me = null;

export function can(permission) { return !!me && me.permissions.includes(permission); }

const PAGES = [
  { path: "", title: "Dashboard", needs: "queue.summary", render: dashboard },
  { path: "messages", title: "Messages", needs: "queue.read", render: messages },
  { path: "suspensions", title: "Suspensions", needs: "suspensions.read", render: suspensions },
  { path: "keys", title: "API keys", needs: "keys.read", render: keys },
  { path: "audit", title: "Audit log", needs: "audit.read", render: audit },
  { path: "settings", title: "Settings", needs: "system.read", render: settings },
];

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(qs || "") };
}

export function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

async function route() {
  if (!me) return;
  const { parts, params } = parseHash();
  const allowed = PAGES.filter((p) => can(p.needs));
  let page = allowed.find((p) => p.path === (parts[0] || ""));
  if (!page) page = allowed[0];
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("current", a.dataset.path === page.path);
  }
  const view = h("div", { id: "view" });
  main.replaceChildren(view);
  try {
    if (page.path === "messages" && parts[1]) await message(view, decodeURIComponent(parts[1]));
    else await page.render(view, params);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) {
      view.append(h("p", { class: "error" }, "Could not load: " + e.message));
    }
  }
}

function showShell() {
  const nav = document.getElementById("nav");
  nav.replaceChildren(...PAGES.filter((p) => can(p.needs)).map(
    (p) => h("a", { href: "#/" + p.path, dataset: { path: p.path } }, p.title)));
  nav.hidden = false;
  const who = document.getElementById("who");
  who.textContent = `${me.label} · ${me.role}`;
  who.hidden = false;
  document.getElementById("logout").hidden = false;
}

async function logIn(body, err) {
  try {
    me = await post("/console/session", body);
    setSession(me);
    showShell();
    route();
  } catch (e) {
    err.textContent = e.message;
  }
}

function showLogin(message) {
  me = null;
  setSession(null);
  for (const id of ["nav", "who", "logout"]) document.getElementById(id).hidden = true;
  const err = h("p", { class: "error", id: "login-error" }, message || "");
  const login = h("input", { id: "login", name: "login", autocomplete: "username", required: true });
  const password = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const key = h("input", { id: "api-key", type: "password", autocomplete: "off", required: true, placeholder: "elemta_…" });
  const userForm = h("form", {
    id: "login-form",
    onsubmit: (ev) => { ev.preventDefault(); logIn({ login: login.value.trim(), password: password.value }, err); },
  }, h("label", {}, "User name", login), h("label", {}, "Password", password),
  h("button", { type: "submit" }, "Log in"));
  const keyForm = h("form", {
    id: "key-form",
    onsubmit: (ev) => { ev.preventDefault(); logIn({ api_key: key.value.trim() }, err); },
  }, h("label", {}, "API key", key), h("button", { type: "submit", class: "secondary" }, "Log in with the key"));
  main.replaceChildren(h("section", { class: "panel login" }, h("h1", {}, "Log in to Elemta"), userForm,
    err, h("details", {}, h("summary", {}, "Log in with an API key instead"), keyForm)));
  login.focus();
}

document.getElementById("logout").addEventListener("click", async () => {
  try { await del("/console/session"); } catch (e) { toast(e.message, true); }
  showLogin("Logged out.");
});

whenLoggedOut(() => showLogin("Your session has ended: log in again."));
window.addEventListener("hashchange", route);

(async () => {
  try {
    me = await get("/console/session");
    setSession(me);
    showShell();
    route();
  } catch (e) {
    showLogin(e instanceof ApiError && e.status === 401 ? "" : e.message);
  }
})();
