"""The /status page: one static HTML page with inline CSS and JS (no build step) that polls
/status.json and renders what the running services report. Data is inserted as text, never as
HTML, so nothing a peer sends can script the page."""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dicom-adapter status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  h2 { font-size: 1.05em; margin: 1.4em 0 .4em; border-bottom: 1px solid #ddd; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .25em .6em; border-bottom: 1px solid #eee;
           vertical-align: top; }
  th { background: #f6f6f6; font-weight: 600; }
  code, .mono { font-family: ui-monospace, monospace; font-size: .92em; }
  .ok { color: #17702f; font-weight: 600; } .bad { color: #b00020; font-weight: 600; }
  .muted { color: #777; } #error { color: #b00020; }
</style>
</head>
<body>
<h1>dicom-adapter <span id="site" class="mono"></span></h1>
<div class="muted">version <span id="version"></span> &middot; <span id="ready"></span>
  &middot; updated <span id="updated">never</span> (<span id="polls">0</span> refreshes, every
  <span id="interval"></span> s) <span id="error"></span></div>

<h2>Listeners</h2>
<table id="listeners"><tbody></tbody></table>
<h2>Destinations and queues</h2>
<table id="queues"><tbody></tbody></table>
<h2>Spool</h2>
<table id="spool"><tbody></tbody></table>
<h2>Last failures (<span id="failures-total">0</span> since start)</h2>
<table id="failures"><thead><tr><th>time</th><th>plugin</th><th>what</th><th>DIMSE status</th>
  <th>HTTP status</th><th>reason</th><th>SOP Instance UID</th></tr></thead><tbody></tbody></table>
<h2>Dead letters</h2>
<table id="dead-letters"><thead><tr><th>plugin</th><th>count</th><th>id</th><th>reason</th>
  <th>DIMSE / HTTP</th><th>SOP Instance UID</th></tr></thead><tbody></tbody></table>
<h2>Readiness</h2>
<table id="readiness"><tbody></tbody></table>

<script>
"use strict";
const params = new URLSearchParams(location.search);
const interval = Math.max(0.5, Number(params.get("interval")) || 2);
let polls = 0;
document.getElementById("interval").textContent = interval;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function fmt(value) {
  if (value === null || value === undefined) return "-";
  if (Array.isArray(value)) return value.join(", ");
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}
function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 120) return seconds.toFixed(1) + " s";
  if (seconds < 7200) return (seconds / 60).toFixed(1) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}
function when(epoch) { return epoch ? new Date(epoch * 1000).toLocaleTimeString() : "-"; }
function fill(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows);
  if (!rows.length) {
    const cols = table.tHead ? table.tHead.rows[0].cells.length : 2;
    const td = el("td", "none", "muted"); td.colSpan = cols;
    const tr = el("tr"); tr.append(td); body.append(tr);
  }
}
function serviceRows(services, wanted) {
  const rows = [];
  for (const [name, info] of Object.entries(services)) {
    if (!wanted(info.kind)) continue;
    const tr = el("tr"); tr.dataset.service = name;
    tr.append(el("th", name));
    const details = el("td");
    for (const [key, value] of Object.entries(info)) {
      if (key === "kind") continue;
      const span = el("span"); span.dataset.key = key;
      span.append(el("span", key + ": ", "muted"), el("span", fmt(value), "mono"));
      details.append(span, document.createTextNode("  "));
    }
    tr.append(details); rows.push(tr);
  }
  return rows;
}
function render(s) {
  document.getElementById("site").textContent = s.site;
  document.getElementById("version").textContent = s.version;
  const ready = document.getElementById("ready");
  ready.textContent = s.ready ? "ready" : "NOT ready";
  ready.className = s.ready ? "ok" : "bad";
  fill(document.getElementById("listeners"), serviceRows(s.services, k => k === "listener"));
  fill(document.getElementById("queues"), serviceRows(s.services, k => k !== "listener"));
  const spool = [];
  for (const [name, info] of Object.entries(s.services)) {
    if (!("spool_depth" in info)) continue;
    const tr = el("tr"); tr.dataset.service = name;
    tr.append(el("th", name), el("td", info.spool_depth + " instance(s)"),
              el("td", fmt(info.spool_bytes) + " bytes"),
              el("td", "oldest " + age(info.spool_oldest_age_seconds)));
    spool.push(tr);
  }
  fill(document.getElementById("spool"), spool);
  document.getElementById("failures-total").textContent = s.failures_total;
  fill(document.getElementById("failures"), s.failures.map(f => {
    const tr = el("tr", undefined, f.permanent ? "bad" : "");
    tr.dataset.dimseStatus = f.dimse_status || ""; tr.dataset.httpStatus = f.http_status || "";
    tr.append(el("td", when(f.time)), el("td", f.plugin), el("td", f.what),
              el("td", f.dimse_status || "-", "mono"), el("td", f.http_status || "-", "mono"),
              el("td", f.reason), el("td", f.sop_instance_uid || "-", "mono"));
    return tr;
  }));
  const letters = [];
  for (const [plugin, info] of Object.entries(s.dead_letters)) {
    const recent = info.recent.length ? info.recent : [null];
    for (const d of recent) {
      const tr = el("tr"); tr.dataset.plugin = plugin;
      const codes = d ? [d.dimse_status, d.http_status].filter(x => x).join(" / ") : "";
      tr.append(el("td", plugin), el("td", fmt(info.count)), el("td", d ? d.id : "-", "mono"),
                el("td", d ? d.reason : "-"), el("td", codes || "-", "mono"),
                el("td", d && d.sop_instance_uid ? d.sop_instance_uid : "-", "mono"));
      letters.push(tr);
    }
  }
  fill(document.getElementById("dead-letters"), letters);
  fill(document.getElementById("readiness"), Object.entries(s.readiness).map(([k, ok]) => {
    const tr = el("tr"); tr.append(el("th", k), el("td", ok ? "ok" : "failing", ok ? "ok" : "bad"));
    return tr;
  }));
}
async function poll() {
  try {
    const response = await fetch("status.json", {cache: "no-store"});
    if (!response.ok) throw new Error("status.json: HTTP " + response.status);
    render(await response.json());
    polls += 1;
    document.getElementById("polls").textContent = polls;
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    document.getElementById("error").textContent = "";
  } catch (err) {
    document.getElementById("error").textContent = String(err);
  } finally {
    setTimeout(poll, interval * 1000);
  }
}
poll();
</script>
</body>
</html>
"""
