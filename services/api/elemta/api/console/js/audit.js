// The audit log, newest first: who did what, when and from where.

import { get, query } from "./api.js";
import { h, panel, table, when } from "./dom.js";

export async function audit(view, params) {
  const before = params.get("before") || "";
  const page = await get("/api/v1/audit" + query({ limit: 100, before }));
  view.append(h("h1", {}, "Audit log"));
  const rows = page.entries.map((e) => {
    const extra = { ...e };
    for (const k of ["seq", "at", "actor", "action", "target", "remote"]) delete extra[k];
    const who = e.actor ? `${e.actor.label || e.actor.id} (${e.actor.kind}:${e.actor.id}, ${e.actor.role})` : "";
    return h("tr", {}, h("td", {}, when(e.at)), h("td", {}, who), h("td", { class: "mono" }, e.action),
      h("td", { class: "mono" }, e.target), h("td", {}, e.remote),
      h("td", { class: "mono" }, Object.keys(extra).length ? JSON.stringify(extra) : ""));
  });
  view.append(panel(null, rows.length ? table(["when", "who", "action", "target", "from", "details"], rows)
    : h("p", { class: "muted" }, "Nothing recorded yet."),
  page.next_before ? h("p", {}, h("a", { href: "#/audit" + query({ before: page.next_before }) }, "Older →")) : null));
}
