"use strict";
const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
function say(text, bad) { const m = $("msg"); m.textContent = text; m.className = bad ? "err" : ""; }
// A #token= link (as `replay --serve` prints) logs in, as on the dashboard.
(function readToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    localStorage.setItem("gw_token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
})();
async function call(method, path, body) {
  const opt = { method, headers: {} };
  // The dashboard's token (it stores the one from its #token= login link).
  const token = localStorage.getItem("gw_token");
  if (token) opt.headers.Authorization = "Bearer " + token;
  if (body !== undefined) { opt.headers["Content-Type"] = "application/json"; opt.body = JSON.stringify(body); }
  const r = await fetch(path, opt);
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(j.error || (r.status + " " + r.statusText));
  return j;
}
async function act(method, path, body, done) {
  try { await call(method, path, body); say(done); await refresh(); } catch (e) { say(e.message, true); }
}

function drawGroups(groups) {
  const tb = $("groups"); tb.replaceChildren();
  for (const g of groups) {
    const del = g.origin === "config" ? el("span", { class: "muted" }, "config")
      : el("button", { class: "bad", onclick: () => act("DELETE", "/api/policy/groups/" + encodeURIComponent(g.name), undefined, "group " + g.name + " removed"), "aria-label": "remove group " + g.name, title: "remove group " + g.name }, "✕");
    tb.append(el("tr", {}, el("td", {}, g.name), el("td", { class: "muted" }, g.members.join(", ")), el("td", {}, del)));
  }
}
function drawRules(rules) {
  const tb = $("rules"); tb.replaceChildren();
  for (const r of rules) {
    const del = r.origin === "config" ? el("span", { class: "muted" }, "config")
      : el("button", { class: "bad", onclick: () => act("DELETE", "/api/policy/rules/" + r.id, undefined, "rule #" + r.id + " deleted"), "aria-label": "delete rule " + r.id, title: "delete rule " + r.id }, "✕");
    tb.append(el("tr", { title: r.comment || "" }, el("td", {}, r.id), el("td", {}, r.source_group + " → " + r.destination_group),
      el("td", {}, r.protocol + "/" + r.port_range), el("td", { class: r.action }, r.action), el("td", {}, r.priority), el("td", {}, del)));
  }
}
function drawMatrix(m) {
  const svg = $("matrix"); svg.replaceChildren();
  const NS = "http://www.w3.org/2000/svg";
  const groups = m.groups || [];
  const mk = (tag, attrs, text) => { const e = document.createElementNS(NS, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text !== undefined) e.textContent = text; return e; };
  if (!groups.length) { svg.setAttribute("viewBox", "0 0 300 30"); svg.append(mk("text", { x: 4, y: 18 }, "no groups yet")); return; }
  const label = 90, cell = Math.max(24, Math.min(60, Math.floor(600 / groups.length)));
  const size = label + cell * groups.length;
  svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
  const pairs = {}; let max = 1;
  for (const p of m.pairs || []) { pairs[p.src + ">" + p.dst] = p.totals; max = Math.max(max, p.totals.flows); }
  groups.forEach((g, i) => {
    svg.append(mk("text", { x: label - 4, y: label + i * cell + cell / 2 + 4, "text-anchor": "end" }, g.slice(0, 12)));
    svg.append(mk("text", { x: label + i * cell + cell / 2, y: label - 6, "text-anchor": "start", transform: `rotate(-45 ${label + i * cell + cell / 2} ${label - 6})` }, g.slice(0, 12)));
  });
  groups.forEach((s, i) => groups.forEach((d, j) => {
    const t = pairs[s + ">" + d];
    const flows = t ? t.flows : 0;
    const level = flows ? Math.log(1 + flows) / Math.log(1 + max) : 0;
    const unanswered = t && t.flows ? 1 - t.answered / t.flows : 0;
    const hue = unanswered > 0.5 ? 0 : 205;
    const fill = flows ? `hsl(${hue} 80% ${12 + 45 * level}%)` : "#121920";
    const r = mk("rect", { x: label + j * cell + 1, y: label + i * cell + 1, width: cell - 2, height: cell - 2, rx: 3, fill });
    r.append(mk("title", {}, `${s} → ${d}: ${flows} flows, ${t ? t.answered : 0} answered, ${t ? t.bytes : 0} bytes, ${t ? t.cells : 0} protocol/port cells`));
    svg.append(r);
    if (flows) svg.append(mk("text", { x: label + j * cell + cell / 2, y: label + i * cell + cell / 2 + 4, "text-anchor": "middle" }, flows > 9999 ? Math.round(flows / 1000) + "k" : flows));
  }));
}
function drawSuggestions(list) {
  const box = $("suggestions"); box.replaceChildren();
  if (!list.length) { box.append(el("p", { class: "muted" }, "No suggestions yet: they come from traffic between groups and from scan alerts.")); return; }
  for (const s of list) {
    const r = s.rule;
    // Through the CSSOM: a style attribute is inline style, which the page's CSP refuses.
    const level = el("i");
    level.style.width = `${Math.round(s.confidence * 100)}%`;
    const bar = el("div", { class: "bar" }, level);
    box.append(el("div", { class: "card" },
      el("b", { class: r.action }, r.action + " "), `${r.source_group} → ${r.destination_group} ${r.protocol}/${r.port_range} (priority ${r.priority}) `,
      el("span", { class: "muted" }, `confidence ${s.confidence.toFixed(2)} · accepted ${s.accepted_similar} of ${s.answered_similar} similar`),
      bar,
      el("div", { class: "muted" }, s.justification),
      el("form", { onsubmit: (e) => e.preventDefault() },
        el("button", { class: "ok", onclick: () => act("POST", `/api/policy/suggestions/${s.id}/accept`, {}, "accepted: rule created and applied") }, "accept"),
        el("button", { class: "bad", onclick: () => act("POST", `/api/policy/suggestions/${s.id}/reject`, {}, "rejected") }, "reject"))));
  }
}
async function refresh() {
  try {
    const [p, m, s] = await Promise.all([call("GET", "/api/policy"), call("GET", "/api/policy/matrix"), call("GET", "/api/policy/suggestions")]);
    $("version").textContent = p.version;
    drawGroups(p.groups); drawRules(p.rules); drawMatrix(m); drawSuggestions(s.suggestions);
  } catch (e) { say(e.message, true); }
}
$("group-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const members = String(f.get("members")).split(/[\s,]+/).filter(Boolean);
  act("POST", "/api/policy/groups", { name: f.get("name"), members }, "group saved").then(() => e.target.reset());
});
$("rule-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = Object.fromEntries(new FormData(e.target));
  f.priority = parseInt(f.priority, 10) || 0;
  act("POST", "/api/policy/rules", f, "rule created and applied");
});
$("explain-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const q = new URLSearchParams(Object.fromEntries(new FormData(e.target)));
  try { $("explain").textContent = (await call("GET", "/api/policy/explain?" + q)).why; } catch (err) { $("explain").textContent = err.message; }
});
refresh();
setInterval(refresh, 3000);
