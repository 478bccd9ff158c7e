// API keys: created (the secret shown this once) and revoked.

import { del, get, post } from "./api.js";
import { h, panel, table, toast, when } from "./dom.js";
import { can, go } from "./main.js";

let justCreated = null; // shown once, on the page drawn right after creation

export async function keys(view) {
  const list = await get("/api/v1/keys");
  view.append(h("h1", {}, "API keys"));
  if (justCreated) {
    view.append(h("div", { class: "secret", id: "new-key" },
      h("strong", {}, `Key “${justCreated.label}” (${justCreated.role}) created. `),
      "Copy it now: it is not shown again.", h("br"),
      h("code", { class: "mono", id: "new-key-token" }, justCreated.token)));
    justCreated = null;
  }
  if (can("keys.write")) {
    const label = h("input", { name: "label", required: true, maxlength: 100 });
    const role = h("select", { name: "role" }, ["readonly", "operator", "admin", "user"].map((r) => h("option", { value: r }, r)));
    const addresses = h("input", { name: "addresses", size: 30, placeholder: "for role user: a@example.com, …" });
    const days = h("input", { name: "days", type: "number", min: 0, value: 0 });
    view.append(h("form", {
      class: "row", id: "create-key",
      onsubmit: async (ev) => {
        ev.preventDefault();
        const body = {
          label: label.value.trim(), role: role.value,
          addresses: addresses.value.split(/[\s,]+/).filter(Boolean),
          expires_at: Number(days.value) > 0 ? Date.now() / 1000 + Number(days.value) * 86400 : 0,
        };
        try { justCreated = await post("/api/v1/keys", body); } catch (e) { toast(e.message, true); }
        go("#/keys");
      },
    }, h("label", {}, "Label", label), h("label", {}, "Role", role), h("label", {}, "Addresses", addresses),
    h("label", {}, "Expires in days (0: never)", days), h("button", { type: "submit" }, "Create key")));
  }
  const rows = list.map((k) => h("tr", { dataset: { key: k.id, label: k.label } },
    h("td", { class: "mono" }, k.id), h("td", {}, k.label), h("td", {}, k.role), h("td", {}, k.addresses.join(", ")),
    h("td", {}, when(k.created_at)), h("td", {}, k.created_by), h("td", {}, k.expires_at ? when(k.expires_at) : "never"),
    h("td", {}, can("keys.write") ? h("button", {
      type: "button", class: "danger",
      onclick: async () => {
        if (!confirm(`Revoke key “${k.label}” (${k.id})? Requests with it are refused at once.`)) return;
        try { await del("/api/v1/keys/" + k.id); toast("Revoked " + k.id); } catch (e) { toast(e.message, true); }
        go("#/keys");
      },
    }, "Revoke") : "")));
  view.append(panel(null, table(["id", "label", "role", "addresses", "created", "by", "expires", ""], rows)));
}
