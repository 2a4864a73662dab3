"""web.review_page: the one page of ``featx review`` (HTML, CSS and plain JavaScript, no CDN).

Views: Overview, Suspects, Map, Refit (``#overview``, ``#suspects/KIND/OFFSET``, ``#map``,
``#refit``). Keys on Suspects: arrows move, 1-9 relabel as the n-th class, Enter takes the
suggestion, x excludes, space keeps, u (or Ctrl+Z) undoes this tab's last action, n / p turn pages.
A decision shows as done only once the server has answered (the corrections file holds it).
"""

from __future__ import annotations

import html

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>featx review: __TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#f6f6f4}
header{background:#243;color:#fff;padding:.5em 1em;display:flex;gap:1.2em;align-items:center;flex-wrap:wrap}
header a{color:#cfe;text-decoration:none;padding:.2em .5em;border-radius:4px}
header a.on{background:#465;color:#fff}
header .grow{flex:1}
#pending{background:#c60;color:#fff;border-radius:9px;padding:.1em .6em}
main{padding:1em;max-width:1400px;margin:auto}
table{border-collapse:collapse;margin:.6em 0;background:#fff}
td,th{border:1px solid #ccc;padding:3px 10px;text-align:right}
td:first-child,th:first-child{text-align:left}
.kinds a{margin-right:1em}.kinds a.on{font-weight:bold;text-decoration:none;color:#000}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:10px}
.card{background:#fff;border:2px solid #ddd;border-radius:6px;padding:6px;font-size:13px;outline:none}
.card.sel{border-color:#27c;box-shadow:0 0 0 2px #9bf}
.card.saving{opacity:.6}
.card .thumb{width:100%;height:170px;object-fit:contain;background:#ccc;display:block}
.card .path{font-family:monospace;font-size:11px;word-break:break-all;color:#555}
.card .state{min-height:1.3em;font-weight:bold}
.state.relabel{color:#070}.state.exclude{color:#a00}.state.keep{color:#555}.state.error{color:#c00}
.card button{font-size:12px;margin:2px 2px 0 0;cursor:pointer}
.nbrs{display:flex;gap:2px;margin-top:4px;flex-wrap:wrap}
.nbrs figure{margin:0;width:38px;text-align:center;font-size:9px;overflow:hidden}
.nbrs img{width:38px;height:38px;object-fit:cover;background:#ccc;display:block}
.pair{font-size:11px;color:#555}.pair img{width:60px;height:45px;object-fit:cover;vertical-align:middle}
.pager{margin:.8em 0}.note{color:#666;font-size:13px}
#maparea{position:relative;display:flex;gap:1em;align-items:flex-start}
#map{background:#fff;border:1px solid #ccc;cursor:crosshair}
#tip{position:absolute;pointer-events:none;background:#fff;border:1px solid #888;padding:3px;display:none;font-size:11px;z-index:5}
#tip img{width:120px;height:120px;object-fit:contain;display:block}
.legend span{display:inline-block;width:10px;height:10px;margin:0 3px 0 10px}
.up{color:#070;font-weight:bold}.down{color:#a00;font-weight:bold}
</style></head><body>
<header><b>featx review</b><span>__TITLE__</span>
<a href="#overview" id="nav-overview">Overview</a><a href="#suspects" id="nav-suspects">Suspects</a>
<a href="#map" id="nav-map">Map</a><a href="#refit" id="nav-refit">Refit</a>
<span class="grow"></span><span id="pending" title="corrections the head has not been refitted on">0 pending</span>
<button id="undo" title="undo this tab's last action (u)">Undo</button>
<span id="msg" class="note"></span></header>
<main id="view"></main>
<script>
"use strict";
const $ = (s, el) => (el || document).querySelector(s);
const esc = s => String(s).replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const fmt = (x, d) => x == null ? "n/a" : Number(x).toFixed(d == null ? 3 : d);
const COLOURS = ["#1f77b4","#ff7f0e","#2ca02c","#d62728","#9467bd","#8c564b","#e377c2","#7f7f7f","#bcbd22","#17becf"];
const KIND_NAMES = {label: "label issues", leak: "leaks across the split", outlier: "outliers", all: "all photos"};
const LIMIT = 24;
let classes = [], items = [], sel = 0, undo = [], view = "";

async function api(path, body) {
  const opts = body === undefined ? {} : {method: "POST", headers: {"content-type": "application/json"},
                                         body: JSON.stringify(body)};
  const r = await fetch(path, {credentials: "same-origin", ...opts});
  const data = await r.json().catch(() => ({error: r.statusText}));
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}
function say(text) { $("#msg").textContent = text; }
function setPending(n) { $("#pending").textContent = n + " pending"; }
const thumb = row => "/v1/thumbs/" + row;
function imgTag(row, cls, title) {
  return `<img class="${cls}" loading="lazy" src="${thumb(row)}" alt="" title="${esc(title || "")}"
           onerror="this.style.visibility='hidden'">`;
}

function stateText(it) {
  const d = it.decision;
  if (!d) return ["", ""];
  if (d.kind === "exclude") return ["excluded", "exclude"];
  if (d.kind === "keep") return ["kept as " + it.label, "keep"];
  return ["relabelled as " + d.new_label, "relabel"];
}
function card(it, i) {
  const [text, cls] = stateText(it);
  const buttons = classes.map((c, k) => c === it.label ? "" :
      `<button data-act="${esc(c)}" title="relabel as ${esc(c)} (${k + 1})">&rarr; ${esc(c)}</button>`).join("")
    + `<button data-act="exclude" title="exclude (x)">exclude</button>`
    + `<button data-act="keep" title="keep as ${esc(it.label)} (space)">keep</button>`;
  const sugg = it.suggested ? ` &rarr; suggested <b class="sugg">${esc(it.suggested)}</b> (${fmt(it.p_suggested, 2)})` : "";
  const pair = it.pair ? `<div class="pair">${imgTag(it.pair.row, "", it.pair.path)} near-twin in ${esc(it.pair.part)}
      (${esc(it.pair.label)}), cosine ${fmt(it.pair.similarity, 4)}</div>` : "";
  const nb = (it.neighbors || []).map(n => `<figure>${imgTag(n.row, "", n.path + " " + n.similarity)}
      <figcaption>${esc(n.label)}</figcaption></figure>`).join("");
  return `<div class="card" tabindex="0" data-i="${i}" data-row="${it.row}">
    ${imgTag(it.row, "thumb", it.path)}
    <div class="path">${esc(it.path)} &middot; ${esc(it.part)}</div>
    <div>given <b class="given">${esc(it.label)}</b>${sugg}</div>
    <div class="note">score ${fmt(it.score, 4)}${it.predicted ? " &middot; head says " + esc(it.predicted) : ""}</div>
    ${pair}<div class="state ${cls}">${esc(text)}</div>
    <div class="actions">${buttons}</div><div class="nbrs">${nb}</div></div>`;
}
function bindCards(root) {
  root.querySelectorAll(".card").forEach(el => {
    el.addEventListener("click", e => {
      select(Number(el.dataset.i));
      const b = e.target.closest("button[data-act]");
      if (b) act(Number(el.dataset.i), b.dataset.act);
    });
  });
}
function select(i) {
  if (!items.length) return;
  sel = Math.max(0, Math.min(items.length - 1, i));
  document.querySelectorAll(".card").forEach(el => el.classList.toggle("sel", Number(el.dataset.i) === sel));
  const el = document.querySelector(`.card[data-i="${sel}"]`);
  if (el) el.scrollIntoView({block: "nearest"});
}
function before(it) {
  const d = it.decision;
  if (!d || d.kind === "keep") return "keep";
  return d.kind === "exclude" ? "exclude" : d.new_label;
}
async function act(i, action, isUndo) {
  const it = items[i];
  if (!it) return;
  const el = document.querySelector(`.card[data-i="${i}"]`);
  const prev = before(it);
  if (el) { el.classList.add("saving"); $(".state", el).textContent = "saving..."; $(".state", el).className = "state"; }
  try {
    const r = await api("/v1/review/decide", {row: it.row, action});
    Object.assign(it, {decision: r.decision, current: r.current});
    if (!isUndo) undo.push({row: it.row, action: prev});
    setPending(r.pending);
    say((isUndo ? "undone: " : "saved: ") + it.path);
  } catch (e) {
    say("not saved: " + e.message);
    if (el) { $(".state", el).textContent = "not saved: " + e.message; $(".state", el).className = "state error"; }
    return;
  } finally { if (el) el.classList.remove("saving"); }
  if (el) { const [text, cls] = stateText(it); const s = $(".state", el); s.textContent = text; s.className = "state " + cls; }
}
async function undoLast() {
  const u = undo.pop();
  if (!u) { say("nothing to undo"); return; }
  let i = items.findIndex(it => it.row === u.row);
  if (i < 0) { items.push(await api("/v1/review/neighbors/" + u.row + "?k=1")); i = items.length - 1; }
  await act(i, u.action, true);
}

async function showOverview() {
  const o = await api("/v1/review/overview");
  classes = o.class_names; setPending(o.pending);
  const rows = o.counts.map(c => `<tr><td>${esc(c.class)}</td><td>${c.train}</td><td>${c.val}</td><td>${c.test}</td><td>${c.total}</td></tr>`).join("");
  const h = o.head;
  const status = Object.entries(o.status).map(([k, v]) => `${k}: ${esc(v)}`).join(" &middot; ");
  $("#view").innerHTML = `<h2>Overview</h2>
    <p>${o.n} photos, ${classes.length} classes. Corrections file <code>${esc(o.corrections_file)}</code>:
    <b id="n-relabelled">${o.relabelled}</b> relabelled, <b id="n-excluded">${o.excluded}</b> excluded;
    <b id="n-pending">${o.pending}</b> pending (not yet in the head).</p>
    <table id="counts"><tr><th>class</th><th>train</th><th>val</th><th>test</th><th>all</th></tr>${rows}</table>
    <table id="accuracy"><tr><th></th><th>validation</th><th>test</th></tr>
    <tr><td>the head (featx fit${h ? ", C " + esc(h.params.C) + ", scale " + esc(h.params.scale) : ""})</td>
    <td id="acc-val">${h ? fmt(h.val) : "fitting..."}</td><td id="acc-test">${h ? fmt(h.test) : "fitting..."}</td></tr>
    <tr><td>chance</td><td>${fmt(o.chance)}</td><td>${fmt(o.chance)}</td></tr></table>
    <p>Label issues found: ${o.label_issues == null ? "auditing..." : o.label_issues}. <span class="note">${status}</span></p>`;
  if (o.status.fit !== "ready" || o.status.audit !== "ready") setTimeout(() => view === "overview" && showOverview(), 2000);
}

async function showSuspects(kind, offset) {
  kind = kind || "label"; offset = Math.max(0, offset || 0);
  if (!classes.length) classes = (await api("/v1/review/overview")).class_names;
  const s = await api(`/v1/review/suspects?kind=${kind}&offset=${offset}&limit=${LIMIT}`);
  items = s.items; sel = 0;
  const tabs = Object.entries(KIND_NAMES).map(([k, name]) =>
    `<a href="#suspects/${k}/0" class="${k === kind ? "on" : ""}">${name}</a>`).join("");
  const total = s.total == null ? "?" : s.total;
  const pager = `<div class="pager">${offset > 0 ? `<a href="#suspects/${kind}/${Math.max(0, offset - LIMIT)}">&larr; previous (p)</a>` : ""}
      showing ${s.items.length ? offset + 1 : 0}-${offset + s.items.length} of <span id="total">${total}</span>
      ${s.total != null && offset + LIMIT < s.total ? `<a href="#suspects/${kind}/${offset + LIMIT}">next (n) &rarr;</a>` : ""}</div>`;
  const keys = classes.slice(0, 9).map((c, k) => `${k + 1} ${esc(c)}`).join(", ");
  $("#view").innerHTML = `<h2>Suspects</h2><div class="kinds">${tabs}</div>
    <p class="note">Worst first. Keys: arrows move; ${keys}; Enter takes the suggestion; x exclude; space keep; u undo; n/p pages.
    ${s.status !== "ready" ? "The audit is " + esc(s.status) + "..." : ""}</p>${pager}
    <div class="grid" id="cards">${items.map(card).join("")}</div>${pager}`;
  bindCards($("#cards")); select(0);
  if (s.status !== "ready" && kind !== "leak") setTimeout(() => view === "suspects" && route(), 2000);
}

let mapData = null;
async function showMap() {
  const m = await api("/v1/review/map");
  if (m.status !== "ready") {
    $("#view").innerHTML = `<h2>Map</h2><p id="mapstatus">The map is ${esc(m.status)}... (t-SNE takes a while on a large store; it is kept beside the store)</p>`;
    setTimeout(() => view === "map" && showMap(), 2000); return;
  }
  mapData = m; classes = m.class_names;
  const legend = classes.map((c, k) => `<span style="background:${COLOURS[k % 10]}"></span>${esc(c)}`).join("");
  $("#view").innerHTML = `<h2>Map</h2><p class="legend">${m.points.length} of ${m.n_total} photos (${esc(m.method)}); grey: excluded. ${legend}</p>
    <div id="maparea"><canvas id="map" width="820" height="620"></canvas><div id="tip"></div>
    <div id="mapside" style="flex:1"><p class="note">Hover a point for its photo; click it for its neighbours.</p></div></div>`;
  drawMap();
  const cv = $("#map");
  cv.addEventListener("mousemove", e => { const p = nearest(e); const tip = $("#tip");
    if (!p) { tip.style.display = "none"; return; }
    tip.innerHTML = `<img src="${thumb(p[0])}" alt="">${esc(classes[p[3]] || "excluded")} &middot; row ${p[0]}`;
    tip.style.left = (p.px + 12) + "px"; tip.style.top = (p.py + 12) + "px"; tip.style.display = "block"; });
  cv.addEventListener("mouseleave", () => { $("#tip").style.display = "none"; });
  cv.addEventListener("click", async e => { const p = nearest(e); if (!p) return;
    const n = await api("/v1/review/neighbors/" + p[0] + "?k=8");
    items = [n]; sel = 0;
    $("#mapside").innerHTML = `<div class="grid" id="cards">${card(n, 0)}</div>
      <h3>Neighbours</h3><div class="nbrs" id="mapnbrs">${n.neighbors.map(x => `<figure style="width:70px">${imgTag(x.row, "", x.path)}
      <figcaption>${esc(x.label)} ${fmt(x.similarity, 2)}</figcaption></figure>`).join("")}</div>`;
    $("#mapnbrs").querySelectorAll("img").forEach(im => { im.style.width = "70px"; im.style.height = "70px"; });
    bindCards($("#mapside")); });
}
function mapScale() {
  const pts = mapData.points, cv = $("#map");
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const p of pts) { x0 = Math.min(x0, p[1]); x1 = Math.max(x1, p[1]); y0 = Math.min(y0, p[2]); y1 = Math.max(y1, p[2]); }
  const pad = 12, w = cv.width - 2 * pad, h = cv.height - 2 * pad;
  return p => [pad + (p[1] - x0) / ((x1 - x0) || 1) * w, pad + (p[2] - y0) / ((y1 - y0) || 1) * h];
}
function drawMap() {
  const cv = $("#map"), ctx = cv.getContext("2d"), at = mapScale();
  ctx.clearRect(0, 0, cv.width, cv.height);
  for (const p of mapData.points) { const [x, y] = at(p); p.px = x; p.py = y;
    ctx.fillStyle = p[3] < 0 ? "#bbb" : COLOURS[p[3] % 10]; ctx.fillRect(x - 2, y - 2, 4, 4); }
}
function nearest(e) {
  const r = $("#map").getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
  let best = null, bd = 64;
  for (const p of mapData.points) { const d = (p.px - mx) ** 2 + (p.py - my) ** 2; if (d < bd) { bd = d; best = p; } }
  return best;
}

async function showRefit(result) {
  const o = await api("/v1/review/overview"); setPending(o.pending);
  const last = result || await api("/v1/review/refit");
  let body = `<h2>Refit</h2><p>Fits featx fit's head again on the labels in force (${o.pending} corrections pending), then audits them afresh.</p>
    <p><button id="refit-btn">Refit now</button> <span id="refit-status" class="note"></span></p>`;
  if (last) {
    const cell = (a, b) => `<td class="${b > a ? "up" : b < a ? "down" : ""}">${fmt(b)}</td>`;
    const changed = last.changed.map((it, i) => card({...it, neighbors: []}, i)).join("");
    body += `<table id="refit-table"><tr><th></th><th>validation</th><th>test</th></tr>
      <tr><td>before</td><td id="old-val">${fmt(last.old.val)}</td><td id="old-test">${fmt(last.old.test)}</td></tr>
      <tr><td>after</td>${cell(last.old.val, last.new.val).replace("<td", '<td id="new-val"')}${cell(last.old.test, last.new.test).replace("<td", '<td id="new-test"')}</tr></table>
      <p>${last.corrections_applied} corrections applied; fit ${fmt(last.seconds.fit, 2)} s<span id="ranking-state">${last.ranking === "ready"
        ? `, fresh audit ${fmt(last.seconds.audit, 2)} s. Label issues: ${last.label_issues.before} before, ${last.label_issues.after} now`
        : "; the fresh audit is " + esc(last.ranking) + "..."}</span>.</p>
      <h3><span id="n-changed">${last.n_changed}</span> photos changed prediction</h3>
      <div class="grid" id="changed">${changed}</div>
      <h3>The fresh ranking (<a href="#suspects/label/0">all label issues</a>)</h3>
      <div class="grid" id="fresh">${last.top.map((it, i) => card({...it, neighbors: []}, last.changed.length + i)).join("")}</div>`;
    items = [...last.changed, ...last.top];
  }
  $("#view").innerHTML = body;
  if (last) { bindCards($("#changed")); bindCards($("#fresh")); }
  if (last && last.ranking === "running") setTimeout(async () => {
    if (view === "refit") await showRefit(); }, 1000);
  $("#refit-btn").addEventListener("click", async () => {
    $("#refit-btn").disabled = true; $("#refit-status").textContent = "refitting...";
    try { const r = await api("/v1/review/refit", {}); await showRefit(r); say("refitted in " + fmt(r.seconds.total, 2) + " s"); }
    catch (e) { $("#refit-status").textContent = "failed: " + e.message; $("#refit-btn").disabled = false; }
  });
}

async function route() {
  const [name, kind, offset] = (location.hash.slice(1) || "overview").split("/");
  view = name;
  document.querySelectorAll("header a").forEach(a => a.classList.toggle("on", a.id === "nav-" + name));
  try {
    if (name === "suspects") await showSuspects(kind, Number(offset) || 0);
    else if (name === "map") await showMap();
    else if (name === "refit") await showRefit();
    else await showOverview();
  } catch (e) { $("#view").innerHTML = `<p class="state error">${esc(e.message)}</p>`; }
}
window.addEventListener("hashchange", route);
$("#undo").addEventListener("click", undoLast);
document.addEventListener("keydown", e => {
  if (e.target.closest && e.target.closest("input,textarea,select")) return;
  if ((e.key === "z" && (e.ctrlKey || e.metaKey)) || e.key === "u") { e.preventDefault(); undoLast(); return; }
  if (view !== "suspects" || e.ctrlKey || e.metaKey || e.altKey) return;
  const it = items[sel], [, kind, off] = location.hash.slice(1).split("/");
  const turn = d => { const o = (Number(off) || 0) + d * LIMIT; if (o >= 0) location.hash = `#suspects/${kind || "label"}/${o}`; };
  if (e.key === "ArrowRight" || e.key === "ArrowDown") { e.preventDefault(); select(sel + 1); }
  else if (e.key === "ArrowLeft" || e.key === "ArrowUp") { e.preventDefault(); select(sel - 1); }
  else if (e.key === "n") turn(1);
  else if (e.key === "p") turn(-1);
  else if (!it) return;
  else if (/^[1-9]$/.test(e.key) && classes[Number(e.key) - 1]) act(sel, classes[Number(e.key) - 1]);
  else if (e.key === "Enter" && it.suggested) act(sel, it.suggested);
  else if (e.key === "x") act(sel, "exclude");
  else if (e.key === " ") { e.preventDefault(); act(sel, "keep"); }
});
setInterval(() => api("/v1/review/overview").then(o => setPending(o.pending)).catch(() => {}), 5000);
route();
</script></body></html>
"""


def render(title: str) -> str:
    """The page, titled with the store's name."""
    return PAGE.replace("__TITLE__", html.escape(title))
