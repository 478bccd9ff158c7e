// Messages: search (sender, recipient, domain, state) with results, and one
// message's detail with the actions the role allows.

import { get, post, query } from "./api.js";
import { age, h, panel, reply, size, stateBadge, table, toast, when } from "./dom.js";
import { can, go } from "./main.js";

const FIELDS = [
  ["sender", "Sender"], ["recipient", "Recipient"], ["domain", "Domain"],
  ["destination", "Destination"],
];

export async function messages(view, params) {
  view.append(h("h1", {}, "Messages"));
  const inputs = {};
  const form = h("form", {
    class: "row", id: "search",
    onsubmit: (ev) => {
      ev.preventDefault();
      const q = {};
      for (const [k, el] of Object.entries(inputs)) q[k] = el.value.trim();
      go("#/messages" + query(q));
    },
  });
  for (const [name, label] of FIELDS) {
    inputs[name] = h("input", { name, value: params.get(name) || "", size: 22 });
    form.append(h("label", {}, label, inputs[name]));
  }
  inputs.state = h("select", { name: "state" },
    ["", "active", "deferred", "held", "failed"].map((s) => h("option", { value: s, selected: s === (params.get("state") || "") }, s || "any")));
  form.append(h("label", {}, "State", inputs.state), h("button", { type: "submit" }, "Search"));
  view.append(form);

  const filters = {};
  for (const k of [...FIELDS.map((f) => f[0]), "state", "cursor"]) filters[k] = params.get(k) || "";
  const page = await get("/api/v1/messages" + query({ ...filters, limit: 100 }));
  const rows = page.messages.map((m) => h("tr", { class: "click", dataset: { id: m.id }, onclick: () => go("#/messages/" + m.id) },
    h("td", { class: "mono" }, m.id), h("td", {}, stateBadge(m.state)), h("td", {}, m.sender || "<>"),
    h("td", {}, m.recipients.join(", ")), h("td", { class: "n" }, size(m.size)), h("td", { class: "n" }, age(m.age)),
    h("td", { class: "n" }, m.attempts), h("td", {}, reply(m.last_error))));
  view.append(panel(null,
    rows.length ? table(["queue id", "state", "sender", "recipients", "size#", "age#", "attempts#", "last reply"], rows)
      : h("p", { class: "muted", id: "no-results" }, "No message matches."),
    page.next_cursor ? h("p", {}, h("a", { href: "#/messages" + query({ ...filters, cursor: page.next_cursor }) }, "Next page →")) : null));
}

const ACTIONS = [
  // [action, label, shown for these states, style, confirmation]
  ["hold", "Hold", ["active", "deferred"], "secondary", null],
  ["release", "Release", ["held"], "", null],
  ["retry", "Retry now", ["deferred"], "", null],
  ["bounce", "Bounce", ["active", "deferred", "held"], "danger", "Bounce this message to its sender with a DSN?"],
  ["delete", "Delete", ["active", "deferred", "held"], "danger", "Delete this message without a notice to its sender?"],
];

function eventClass(type) {
  if (["bounced", "expired", "failed", "deleted"].includes(type)) return "bad";
  if (["deferred", "hold"].includes(type)) return "warn";
  if (["delivered", "released"].includes(type)) return "good";
  return "";
}

async function rawHeaders(id) {
  const resp = await fetch(`/api/v1/messages/${encodeURIComponent(id)}/raw`, { credentials: "same-origin" });
  if (!resp.ok) return "(not stored)";
  return (await resp.text()).split(/\r?\n\r?\n/)[0];
}

export async function message(view, id) {
  const [rec, headers] = await Promise.all([
    get("/api/v1/messages/" + encodeURIComponent(id)),
    can("queue.raw") ? rawHeaders(id).catch((e) => e.message) : null,
  ]);
  const s = rec.state || {};
  const sum = rec.summary;
  view.append(h("h1", {}, "Message ", h("span", { class: "mono" }, rec.id), " ",
    sum ? stateBadge(sum.state) : h("span", { class: "state" }, "finished")));

  if (sum && can("queue.act")) {
    const bar = h("div", { class: "actions", id: "actions" });
    for (const [action, label, states, style, confirmText] of ACTIONS) {
      if (!states.includes(sum.state)) continue;
      bar.append(h("button", {
        type: "button", class: style, dataset: { action },
        onclick: async () => {
          if (confirmText && !confirm(confirmText)) return;
          try {
            const r = await post(`/api/v1/messages/${rec.id}/${action}`);
            const answer = r.results[rec.id] || {};
            toast(r.touched ? `${label}: done` : `${label}: ${answer.error || "nothing to do"}`, !r.touched);
          } catch (e) { toast(e.message, true); }
          go("#/messages/" + rec.id);
        },
      }, label));
    }
    view.append(bar);
  }

  view.append(panel("Envelope", h("dl", { class: "kv", id: "envelope" },
    h("dt", {}, "sender"), h("dd", {}, s.sender || "<>"),
    h("dt", {}, "recipients"), h("dd", {}, (s.recipients || []).join(", ")),
    h("dt", {}, "size"), h("dd", {}, sum ? size(sum.size) : "—"),
    h("dt", {}, "received"), h("dd", {}, when(s.received_at)),
    h("dt", {}, "age"), h("dd", {}, sum ? age(sum.age) : "—"),
    rec.trace_id ? [h("dt", {}, "trace"), h("dd", { class: "mono" },
      rec.trace_url ? h("a", { href: rec.trace_url, target: "_blank", rel: "noopener noreferrer" }, rec.trace_id) : rec.trace_id)] : null)));

  const dests = Object.entries(s.dests || {}).map(([k, d]) => h("tr", {},
    h("td", { class: "mono" }, d.domain || k), h("td", {}, (d.recipients || []).join(", ")), h("td", {}, d.status || ""),
    h("td", { class: "n" }, d.attempt || 0), h("td", {}, d.status === "deferred" ? when(d.next_attempt) : ""),
    h("td", {}, reply(d.last))));
  if (dests.length) {
    view.append(panel("Destinations", table(["destination", "recipients", "status", "attempt#", "next attempt", "last reply"], dests)));
  }

  if (rec.attempts && rec.attempts.length) {
    view.append(panel("Delivery attempts", h("ol", { class: "timeline", id: "attempts" }, rec.attempts.map((a) => h("li", {
      class: a.status === "delivered" ? "good" : a.status === "deferred" ? "warn" : a.status ? "bad" : "",
    }, h("strong", {}, `attempt ${a.attempt}`), " ", h("span", { class: "muted" }, when(a.at)), " ",
    `${a.recipient} via ${a.host || a.dest}: ${a.status} ${[a.code || "", a.enhanced, a.text].filter(Boolean).join(" ")}`)))));
  }
  if (rec.verdicts && rec.verdicts.length) {
    view.append(panel("Policy", h("ol", { class: "timeline" }, rec.verdicts.map((v) => h("li", {}, describe(v))))));
  }

  view.append(panel("History", h("ol", { class: "timeline", id: "history" }, rec.events.map((e) => h("li", { class: eventClass(e.type) },
    h("strong", {}, e.type || "event"), " ", h("span", { class: "muted" }, when(e.at || e.time)), " ",
    describe(e))))));

  if (headers != null) view.append(panel("Headers", h("pre", { id: "headers" }, headers)));
}

function describe(e) {
  const skip = new Set(["type", "at", "time", "id", "queue_id", "sender", "recipients"]);
  const parts = [];
  for (const [k, v] of Object.entries(e)) {
    if (skip.has(k) || v == null || v === "") continue;
    parts.push(`${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
  }
  return parts.join(" ");
}
