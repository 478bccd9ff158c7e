"""The dashboard placeholder: queue counts every two seconds and a queue id lookup.

The API needs a key: the page asks for one and keeps it in the tab's
sessionStorage (gone when the tab closes), sending it as ``Authorization: Bearer``.
"""

from __future__ import annotations

__all__ = ["INDEX_HTML"]

INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Elemta</title>
<style>
body { font: 15px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 52em; padding: 0 1em; }
table { border-collapse: collapse; }
td, th { padding: .2em 1.2em .2em 0; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f4f4f4; padding: 1em; overflow: auto; }
#err { color: #b00; }
</style>
</head>
<body>
<h1>Elemta</h1>
<form id="keyform"><input id="key" type="password" size="40" placeholder="API key" autocomplete="off">
<button>Use key</button></form>
<h2>Queue</h2>
<table id="counts"><tbody></tbody></table>
<p id="err"></p>
<h2>Message</h2>
<form id="lookup"><input id="qid" size="24" placeholder="queue id" autocomplete="off">
<button>Look up</button></form>
<pre id="msg" hidden></pre>
<script>
"use strict";
const labels = {
  messages: "Messages in the queue",
  delivery_waiting: "Delivery jobs waiting",
  delivery_in_flight: "Delivery jobs in flight",
  deferred: "Deferred jobs",
  outcomes_pending: "Outcomes not yet processed",
};
function auth() {
  return { headers: { Authorization: "Bearer " + (sessionStorage.getItem("elemta-key") || "") } };
}
document.getElementById("keyform").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("elemta-key", document.getElementById("key").value.trim());
  document.getElementById("key").value = "";
  refresh();
});
async function refresh() {
  const err = document.getElementById("err");
  try {
    const r = await fetch("api/v1/queue", auth());
    const data = await r.json();
    if (!r.ok) throw new Error(data.detail || r.statusText);
    const body = document.querySelector("#counts tbody");
    body.replaceChildren();
    for (const [key, label] of Object.entries(labels)) {
      const tr = body.insertRow();
      tr.insertCell().textContent = label;
      const td = tr.insertCell();
      td.className = "n";
      td.textContent = String(data[key]);
    }
    err.textContent = "";
  } catch (e) {
    err.textContent = "Queue counts unavailable: " + e.message;
  }
}
document.getElementById("lookup").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = document.getElementById("msg");
  const id = document.getElementById("qid").value.trim();
  const r = await fetch("api/v1/messages/" + encodeURIComponent(id), auth());
  out.textContent = JSON.stringify(await r.json(), null, 2);
  out.hidden = false;
});
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""
