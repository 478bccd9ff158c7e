// Dashboard: the queue by state, by destination and age (qshape) with the last
// error and suspensions, and how the services' consumers keep up.

import { get } from "./api.js";
import { h, panel, reply, table, when } from "./dom.js";
import { can, go } from "./main.js";

const STATES = ["active", "deferred", "held", "failed"];

export async function dashboard(view) {
  const [summary, queue, health] = await Promise.all([
    get("/api/v1/queue/summary"),
    get("/api/v1/queue"),
    can("system.read") ? get("/api/v1/health") : [],
  ]);
  view.append(h("h1", {}, "Dashboard"));

  view.append(h("div", { class: "cards", id: "by-state" },
    h("div", { class: "card" }, h("div", { class: "n" }, summary.total), h("div", { class: "l" }, "messages queued")),
    STATES.map((s) => h("div", { class: "card", dataset: { state: s } },
      h("div", { class: "n" }, summary.by_state[s] || 0), h("div", { class: "l" }, s)))));

  const buckets = summary.age_buckets;
  const rows = summary.destinations.map((d) => h("tr", {
    class: "click", onclick: () => go("#/messages?destination=" + encodeURIComponent(d.destination)),
  },
  h("td", { class: "mono" }, d.destination),
  h("td", { class: "n" }, d.total),
  h("td", { class: "n" }, d.deferred),
  h("td", { class: "n" }, d.held),
  d.ages.map((n) => h("td", { class: "n" + (n ? "" : " muted") }, n)),
  h("td", {}, d.suspended_until ? h("span", { class: "state held" }, "until " + when(d.suspended_until)) : ""),
  h("td", {}, reply(d.last_error))));
  view.append(panel("Destinations by age (minutes)",
    rows.length ? table(["destination", "total#", "deferred#", "held#", ...buckets.map((b) => b + "#"), "suspended", "last error"], rows)
      : h("p", { class: "muted" }, "The queue is empty.")));

  const consumers = [];
  for (const [stream, info] of Object.entries(queue.streams)) {
    for (const [name, c] of Object.entries(info.consumers)) {
      consumers.push(h("tr", {}, h("td", { class: "mono" }, name), h("td", { class: "mono" }, stream),
        h("td", { class: "n" }, c.pending), h("td", { class: "n" }, c.ack_pending),
        h("td", { class: "n" }, c.redelivered), h("td", { class: "n" }, c.waiting)));
    }
  }
  view.append(h("div", { class: "cards" },
    h("div", { class: "card" }, h("div", { class: "n" }, queue.delivery_waiting), h("div", { class: "l" }, "delivery jobs waiting")),
    h("div", { class: "card" }, h("div", { class: "n" }, queue.delivery_in_flight), h("div", { class: "l" }, "in delivery now")),
    h("div", { class: "card" }, h("div", { class: "n" }, queue.deferred), h("div", { class: "l" }, "retries parked")),
    h("div", { class: "card" }, h("div", { class: "n" }, queue.outcomes_pending), h("div", { class: "l" }, "outcomes to process"))));
  const services = health.map((s) => h("tr", { dataset: { service: s.service } },
    h("td", {}, s.service), h("td", { class: "mono" }, s.address),
    h("td", {}, h("span", { class: "state " + (s.ready ? "ok" : "bad") }, s.ready ? "ready" : "not ready")),
    h("td", { class: "muted" }, s.ready ? "" : s.detail)));
  view.append(panel("Service health", h("div", { id: "health" },
    services.length ? table(["service", "health address", "state", ""], services) : null),
  h("h2", { style: null }, "Consumers"),
  table(["consumer (service)", "stream", "waiting#", "in flight#", "redelivered#", "pulling#"], consumers)));
}
