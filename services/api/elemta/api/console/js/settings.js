// Settings: the effective configuration of the api service, read-only, secrets
// shown as *** by the API.

import { get } from "./api.js";
import { h, panel, table } from "./dom.js";

function value(v) {
  return typeof v === "object" && v !== null ? JSON.stringify(v) : String(v);
}

export async function settings(view) {
  const cfg = await get("/api/v1/config");
  view.append(h("h1", {}, "Settings"),
    h("p", { class: "muted" }, "The configuration the api service runs with (file and environment). Read-only: change elemta.toml or the environment and restart."));
  for (const [section, keys] of Object.entries(cfg)) {
    if (typeof keys !== "object" || keys === null) continue;
    view.append(panel("[" + section + "]", table(["key", "value"],
      Object.entries(keys).map(([k, v]) => h("tr", {}, h("td", { class: "mono" }, k), h("td", { class: "mono" }, value(v)))))));
  }
}
