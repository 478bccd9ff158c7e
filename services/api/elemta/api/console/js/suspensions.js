// Suspended destinations: listed with reason and end; added and lifted when the
// role may.

import { del, get, post } from "./api.js";
import { h, panel, table, toast, when } from "./dom.js";
import { can, go } from "./main.js";

export async function suspensions(view) {
  const list = await get("/api/v1/suspensions");
  view.append(h("h1", {}, "Suspensions"));
  if (can("suspensions.write")) {
    const domain = h("input", { name: "domain", required: true, placeholder: "example.com" });
    const reason = h("input", { name: "reason", size: 30 });
    const minutes = h("input", { name: "minutes", type: "number", min: 1, value: 60, required: true });
    view.append(h("form", {
      class: "row", id: "suspend",
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await post("/api/v1/suspensions", { domain: domain.value.trim(), reason: reason.value, duration: Number(minutes.value) * 60 });
          toast("Suspended " + domain.value.trim());
        } catch (e) { toast(e.message, true); }
        go("#/suspensions");
      },
    }, h("label", {}, "Domain", domain), h("label", {}, "Reason", reason), h("label", {}, "Minutes", minutes),
    h("button", { type: "submit" }, "Suspend")));
  }
  const rows = list.map((s) => h("tr", {}, h("td", { class: "mono" }, s.domain), h("td", {}, s.reason),
    h("td", {}, when(s.until)), h("td", {}, s.created_by),
    h("td", {}, can("suspensions.write") ? h("button", {
      type: "button", class: "secondary",
      onclick: async () => {
        try { await del("/api/v1/suspensions/" + encodeURIComponent(s.domain)); toast("Lifted " + s.domain); } catch (e) { toast(e.message, true); }
        go("#/suspensions");
      },
    }, "Lift") : "")));
  view.append(panel(null, rows.length ? table(["domain", "reason", "until", "by", ""], rows)
    : h("p", { class: "muted" }, "No destination is suspended.")));
}
