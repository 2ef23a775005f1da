"use strict";
const KINDS = ["port_scan","host_sweep","syn_flood","tcp_flood","udp_flood","icmp_flood","brute_force","anomaly","channel_abuse","link_health","system","slow_http","spoofing","lan_mapping","slow_scan","distributed_scan","slow_guessing"];
const SEV = {1:"high",2:"medium",3:"low"};
const S = { token:null, role:null, sub:null, pub:false, status:null, history:[], alerts:new Map(), order:[], es:null, filters:{} };
const $ = id => document.getElementById(id);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
}
function fmtN(n) { n = Number(n) || 0; if (n >= 1e9) return (n/1e9).toFixed(1)+"G"; if (n >= 1e6) return (n/1e6).toFixed(1)+"M"; if (n >= 1e4) return (n/1e3).toFixed(1)+"k"; return String(Math.round(n)); }
function fmtDur(s) { s = Math.max(0, Math.floor(s)); const d = Math.floor(s/86400), h = Math.floor(s%86400/3600), m = Math.floor(s%3600/60); return d ? d+"d "+h+"h" : h ? h+"h "+m+"m" : m ? m+"m "+(s%60)+"s" : s+"s"; }
function fmtTime(iso) { const d = new Date(String(iso).replace(/\+0000$/, "Z")); return isNaN(d) ? String(iso) : d.toLocaleTimeString(); }
function msg(text) { $("msg").textContent = text || ""; }
function canWrite() { return S.role === "admin"; }

function readToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    localStorage.setItem("gw_token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + "#overview");
  }
  S.token = localStorage.getItem("gw_token");
}
async function api(path, method, payload) {
  const headers = {};
  if (S.token) headers.Authorization = "Bearer " + S.token;
  if (payload !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method: method || "GET", headers, cache: "no-store", body: payload === undefined ? undefined : JSON.stringify(payload) });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  return { status: r.status, body };
}

// ---- views ----
function hashParam(k) { return new URLSearchParams(location.hash.replace("#", "").split("&").slice(1).join("&")).get(k); }
// A source address as a link to its incident view.
function ipLink(ip) { return ip ? el("a", {href: "#incidents&ip=" + encodeURIComponent(ip), class: "iplink"}, ip) : "—"; }
function show() {
  const v = (location.hash.replace("#", "") || "overview").split("&")[0];
  const name = ["overview","alerts","incidents","model","training","settings","nodes"].includes(v) ? v : "overview";
  for (const a of document.querySelectorAll("nav a[data-view]")) a.classList.toggle("on", a.dataset.view === name);
  for (const s of document.querySelectorAll(".view")) s.classList.toggle("on", s.id === "v-" + name);
  if (name === "model") loadModel();
  if (name === "incidents") loadIncidents(hashParam("ip"));
  if (name === "training") loadTraining();
  if (name === "settings") loadSettings(true);
  if (name === "overview") drawCharts();
}

// ---- charts (canvas, drawn here: no libraries) ----
// Axis ticks at 1, 2 or 5 × 10^k, so a chart reads "0, 2, 4" rather than "1, 1, 0".
function niceStep(raw, integer) {
  if (!(raw > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / p, s = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  return integer ? Math.max(1, Math.round(s)) : s;
}
function fmtTick(v, step) {
  if (v >= 1e4) return fmtN(v);
  const d = step >= 1 ? 0 : Math.min(3, Math.ceil(-Math.log10(step)));
  return v.toFixed(d);
}
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
function fmtClock(t, utc, span) {
  const d = new Date(t * 1000);
  if (utc) { const iso = d.toISOString(); return span >= 86400 ? iso.slice(5, 16).replace("T", " ") : iso.slice(11, span >= 600 ? 16 : 19); }
  return span >= 600 ? d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"}) : d.toLocaleTimeString();
}
// Draws `values` (one per equal slot from t0 to t1, Unix seconds) with a y
// axis of round numbers and a time axis. `opts`: color, bars, integer (counts),
// utc (a capture's own clock). The canvas carries what it plots in data-*
// attributes (range, clock, sum), for tests and for a person's devtools.
function chart(canvas, values, opts) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.dataset.from = opts.t0; canvas.dataset.to = opts.t1; canvas.dataset.clock = opts.utc ? "capture" : "wall";
  canvas.dataset.sum = values.reduce((a, b) => a + b, 0); canvas.dataset.points = values.length;
  if (!w || !h) return;
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const vmax = Math.max(0, ...values);
  const step = niceStep((vmax || 1) / 3, opts.integer);
  const top = Math.max(step, Math.ceil(vmax / step) * step);
  g.font = "11px system-ui, sans-serif"; g.lineWidth = 1;
  const ticks = []; for (let v = 0; v <= top + step / 2; v += step) ticks.push(v);
  const x0 = 6 + Math.max(...ticks.map(v => g.measureText(fmtTick(v, step)).width)), x1 = w - 8, y0 = h - 20, y1 = 8, span = y0 - y1;
  g.strokeStyle = "#2b3540"; g.fillStyle = "#8b98a5"; g.textAlign = "right";
  canvas.dataset.yticks = ticks.map(v => fmtTick(v, step)).join(" ");
  const xticks = [];
  for (const v of ticks) { const y = Math.round(y0 - span * v / top) + 0.5; g.beginPath(); g.moveTo(x0 + 2, y); g.lineTo(x1, y); g.stroke(); g.fillText(fmtTick(v, step), x0 - 2, y + 4); }
  // Time axis: a round step that leaves room for each label.
  const tspan = Math.max(0, opts.t1 - opts.t0);
  if (tspan > 0) {
    const label = fmtClock(opts.t1, opts.utc, tspan), room = g.measureText(label).width + 16;
    const maxLabels = Math.max(2, Math.floor((x1 - x0) / room));
    const ts = TIME_STEPS.find(s => tspan / s <= maxLabels) || Math.ceil(tspan / maxLabels);
    g.textAlign = "center";
    let right = -Infinity;
    for (let t = Math.ceil(opts.t0 / ts) * ts; t <= opts.t1 + 1e-6; t += ts) {
      const x = x0 + (x1 - x0) * (t - opts.t0) / tspan, at = Math.min(Math.max(x, x0 + room / 2), x1 - room / 2);
      g.beginPath(); g.moveTo(x, y0); g.lineTo(x, y0 + 3); g.stroke();
      if (at - room / 2 < right) continue; // a label squeezed against the edge would overlap its neighbour
      right = at + room / 2;
      xticks.push(fmtClock(t, opts.utc, tspan));
      g.fillText(fmtClock(t, opts.utc, tspan), at, h - 5);
    }
  }
  canvas.dataset.xticks = xticks.join(" ");
  if (!values.length) return;
  const n = values.length, slot = (x1 - x0) / Math.max(1, n - (opts.bars ? 0 : 1));
  g.fillStyle = opts.color; g.strokeStyle = opts.color; g.lineWidth = 2;
  if (opts.bars) {
    values.forEach((v, i) => { if (!v) return; const bh = Math.max(2, span * v / top); g.fillRect(x0 + i * slot + (slot > 3 ? 1 : 0), y0 - bh, Math.max(2, slot - 2), bh); });
  } else {
    g.beginPath();
    values.forEach((v, i) => { const x = n === 1 ? (x0 + x1) / 2 : x0 + i * slot, y = y0 - span * v / top; i ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke();
  }
}
// After `replay --serve`, /api/status carries the capture's timeline: the
// charts plot the capture's own time range; live, the last 10 minutes.
function drawCharts() {
  const tl = (S.status || {}).timeline;
  if (tl && tl.pps && tl.pps.length) {
    const t1 = tl.from + tl.bucket_s * tl.pps.length;
    $("h-traffic").textContent = "Traffic (packets/s, capture time, UTC)";
    $("h-alerts").textContent = "Alerts (per " + fmtDur(tl.bucket_s) + ", capture time)";
    chart($("c-traffic"), tl.pps, {color: "#4fb3ff", t0: tl.from, t1: t1, utc: true});
    chart($("c-alerts"), tl.alerts, {color: "#ff5c5c", bars: true, integer: true, t0: tl.from, t1: t1, utc: true});
    const last = S.history[S.history.length - 1], prev = S.history[S.history.length - 2];
    $("t-pps").textContent = fmtN(last && prev ? Math.max(0, (last.packets - prev.packets) / Math.max(1, last.t - prev.t)) : 0);
    return;
  }
  const h = S.history;
  const pps = [], alerts = [];
  for (let i = 1; i < h.length; i++) { const dt = Math.max(1, h[i].t - h[i-1].t); pps.push(Math.max(0, (h[i].packets - h[i-1].packets) / dt)); }
  // 60 buckets of 10 s ending now, so one busy moment is one bar, not the whole chart.
  for (let i = 0; i < 60; i++) alerts.push(0);
  const end = h.length ? h[h.length - 1].t : Math.floor(Date.now() / 1000);
  if (h.length) {
    let base = h[0].alerts;
    for (const p of h) { const b = 59 - Math.floor((end - p.t) / 10); if (b >= 0) alerts[b] += Math.max(0, p.alerts - base); base = p.alerts; }
  }
  $("h-traffic").textContent = "Traffic (packets/s, last 10 min)";
  $("h-alerts").textContent = "Alerts (per 10 s)";
  chart($("c-traffic"), pps, {color: "#4fb3ff", t0: h.length > 1 ? h[1].t : end, t1: end});
  chart($("c-alerts"), alerts, {color: "#ff5c5c", bars: true, integer: true, t0: end - 600, t1: end});
  $("t-pps").textContent = fmtN(pps.length ? pps[pps.length - 1] : 0);
}

// ---- overview ----
function fill(tbody, rows) { tbody.replaceChildren(...rows); }
function renderStatus(s) {
  if (!s) return;
  $("node").textContent = s.node; $("role").textContent = s.role; $("version").textContent = s.version || "";
  $("uptime").textContent = fmtDur(s.uptime_s);
  if (s.history) S.history = s.history.slice(-600);
  const last = S.history[S.history.length - 1];
  $("t-packets").textContent = fmtN(last ? last.packets : 0);
  $("t-flows").textContent = fmtN(last ? last.flows : 0);
  $("t-alerts").textContent = fmtN(s.alerts_total);
  const st = s.alert_states || {};
  $("t-new").textContent = fmtN(st.new);
  $("newcount").textContent = st.new ? "(" + st.new + ")" : "";
  $("t-blocks").textContent = fmtN((s.blocks || []).length);
  $("t-nodes").textContent = fmtN(Object.keys(s.nodes || {}).length);
  fill($("talkers"), (s.top_talkers || []).map(t => el("tr", {}, el("td", {class:"addr"}, ipLink(t.ip)), el("td", {}, fmtN(t.bytes)), el("td", {class:"hide-sm"}, fmtN(t.packets)), el("td", {}, fmtN(t.flows)))));
  if (!(s.top_talkers || []).length) fill($("talkers"), [el("tr", {}, el("td", {colSpan:4, class:"muted"}, "no traffic seen yet"))]);
  const now = Date.now() / 1000;
  fill($("blocks"), (s.blocks || []).map(b => el("tr", {"data-block": b.ip}, el("td", {class:"addr"}, b.ip), el("td", {title: b.reason + (b.node ? " (in " + b.node + "'s nftables)" : " (not enforced: a replay)")}, (b.kind === "contain" ? "contained MAC, forged " + ((b.forged || []).join(", ") || "?") : b.kind) + (b.node ? " @ " + b.node : ""), b.dropped ? el("div", {class: "muted", "data-dropped": b.dropped.packets}, droppedText(b.dropped)) : ""),
    // The detectors whose verdicts asked for it (node ids, checked by the monitor's decoder): whose certificate to suspect.
    el("td", {class: "hide-sm", "data-senders": (b.senders || []).join(","), title: (b.senders || []).length ? "the detector(s) whose verdicts asked for this block" : "no detector named: an operator's or feed block, or one whose sender is unknown"}, (b.senders || []).join(", ") || "-"),
    el("td", {class:"nowrap"}, fmtDur(b.until - now)),
    el("td", {}, actionButton("unblock", () => unblock(b.ip), "unblock " + b.ip)))));
  if (!(s.blocks || []).length) fill($("blocks"), [el("tr", {}, el("td", {colSpan:5, class:"muted"}, "nothing blocked"))]);
  renderNodes(s.nodes || {});
  S.status = Object.assign(S.status || {}, s);
  drawCharts();
}
function renderNodes(nodes) {
  const now = Date.now() / 1000;
  const entries = Object.entries(nodes);
  const health = n => n.online === false ? el("span", {class:"down"}, "offline") : (now - n.last_seen < 5 ? el("span", {class:"ok"}, "online") : el("span", {class:"down"}, "silent"));
  fill($("nodes-mini"), entries.map(([id, n]) => el("tr", {}, el("td", {}, id), el("td", {}, n.role || "?"), el("td", {}, n.last_seen ? fmtDur(now - n.last_seen) + " ago" : "never"), el("td", {}, (n.latency_ms || 0).toFixed(1) + " ms"), el("td", {}, health(n)))));
  fill($("nodes"), entries.map(([id, n]) => el("tr", {}, el("td", {}, id), el("td", {}, n.role || "?"), el("td", {class:"hide-sm"}, n.version || ""), el("td", {class:"hide-sm"}, fmtDur(n.uptime_s || 0)), el("td", {}, n.last_seen ? fmtDur(now - n.last_seen) + " ago" : "never"), el("td", {}, (n.latency_ms || 0).toFixed(1) + " ms"), el("td", {}, health(n)), el("td", {class:"hide-sm"}, fmtN(n.alerts)))));
  if (!entries.length) { fill($("nodes-mini"), [el("tr", {}, el("td", {colSpan:5, class:"muted"}, "no heartbeats yet"))]); fill($("nodes"), [el("tr", {}, el("td", {colSpan:8, class:"muted"}, "no heartbeats yet"))]); }
}

// ---- alerts ----
function actionButton(label, fn, title) {
  const b = el("button", {type:"button", title: canWrite() ? title : "needs an admin token", disabled: !canWrite()}, label);
  b.addEventListener("click", fn);
  return b;
}
function matches(a) {
  const f = S.filters, g = a.gatewarden || {};
  if (f.kind && g.kind !== f.kind) return false;
  if (f.state && g.state !== f.state) return false;
  if (f.source && a.src_ip !== f.source) return false;
  if (f.severity) { const max = {high:1, medium:2, low:3}[f.severity]; if (a.alert.severity > max) return false; }
  return true;
}
function addAlert(a, front) {
  const id = a.gatewarden.id;
  if (!S.alerts.has(id)) { if (front) S.order.unshift(id); else S.order.push(id); }
  S.alerts.set(id, a);
  while (S.order.length > 500) S.alerts.delete(S.order.pop());
}
function alertRow(a) {
  const g = a.gatewarden, id = g.id;
  const acts = el("div", {class:"acts"},
    actionButton("ack", () => setState(id, "acknowledge"), "acknowledge alert " + id),
    actionButton("resolve", () => setState(id, "resolve"), "resolve alert " + id));
  acts.children[0].setAttribute("data-act", "acknowledge"); acts.children[1].setAttribute("data-act", "resolve");
  if (g.state !== "new") acts.children[0].disabled = true;
  if (g.state === "resolved") acts.children[1].disabled = true;
  if (a.src_ip && a.alert.action === "blocked") { const u = actionButton("unblock", () => unblock(a.src_ip), "unblock " + a.src_ip); u.setAttribute("data-act", "unblock"); acts.append(u); }
  if (a.src_ip) acts.append(pcapLink(id));
  return el("tr", {"data-alert-id": id, "data-state": g.state},
    el("td", {}, fmtTime(a.timestamp)), el("td", {class:"hide-sm sev" + a.alert.severity}, SEV[a.alert.severity] || a.alert.severity),
    el("td", {class:"kind sev" + a.alert.severity}, String(g.kind).replace(/_/g, " ")), el("td", {}, ipLink(a.src_ip)), el("td", {class:"hide-sm"}, a.dest_ip ? a.dest_ip + (a.dest_port ? ":" + a.dest_port : "") : "—"),
    el("td", {class:"reason hide-sm"}, g.reason), el("td", {class:"st-" + g.state, "data-col": "state"}, g.state), el("td", {}, acts));
}
// The alert's evidence pcap (its source's first packets, issue #18): fetched with the token, then saved.
function pcapLink(id) {
  const l = el("a", {href: "/api/alerts/" + id + "/pcap", download: "alert-" + id + ".pcap", title: "download the packets behind alert " + id, "data-act": "pcap"}, "pcap");
  l.addEventListener("click", async ev => {
    ev.preventDefault();
    const r = await fetch(l.href, {headers: S.token ? {Authorization: "Bearer " + S.token} : {}, cache: "no-store"});
    if (!r.ok) { let m = "no evidence kept"; try { m = (await r.json()).error || m; } catch (e) { /* not JSON */ } l.title = m; l.textContent = "no pcap"; return; }
    const u = URL.createObjectURL(await r.blob()), t = el("a", {href: u, download: l.download});
    document.body.append(t); t.click(); t.remove(); setTimeout(() => URL.revokeObjectURL(u), 10000);
  });
  return l;
}
function renderAlerts() {
  const list = S.order.map(id => S.alerts.get(id)).filter(a => a && matches(a));
  fill($("alerts"), list.slice(0, 200).map(alertRow));
  if (!list.length) fill($("alerts"), [el("tr", {}, el("td", {colSpan:8, class:"muted"}, "no alerts match"))]);
  $("alerts-note").textContent = canWrite() ? "" : "Read-only: acknowledging, resolving and unblocking need an admin token.";
  fill($("latest"), S.order.slice(0, 6).map(id => S.alerts.get(id)).filter(Boolean).map(a => el("tr", {"data-latest": a.gatewarden.id},
    el("td", {}, fmtTime(a.timestamp)), el("td", {class:"sev" + a.alert.severity}, String(a.gatewarden.kind).replace(/_/g, " ")), el("td", {}, ipLink(a.src_ip)), el("td", {class:"st-" + a.gatewarden.state}, a.gatewarden.state))));
  if (!S.order.length) fill($("latest"), [el("tr", {}, el("td", {colSpan:4, class:"muted"}, "no alerts yet"))]);
}
async function loadAlerts() {
  const q = new URLSearchParams({limit: "200"});
  for (const [k, v] of Object.entries(S.filters)) if (v) q.set(k, v);
  const r = await api("/api/alerts?" + q);
  if (r.status !== 200) { msg((r.body && r.body.error) || "cannot load alerts (" + r.status + ")"); return; }
  // Merged, never replaced: an alert the live stream brought while this
  // request was on its way must stay. Ids grow with time: newest first.
  for (const a of r.body.alerts) addAlert(a, false);
  S.order.sort((x, y) => y - x);
  renderAlerts();
}
async function setState(id, action) {
  const r = await api("/api/alerts/" + id + "/" + action, "POST");
  if (r.status !== 200) { msg((r.body && r.body.error) || action + " failed (" + r.status + ")"); return; }
  applyState(r.body);
  msg("alert " + id + " " + r.body.state + " by " + r.body.by);
}
function applyState(c) {
  const a = S.alerts.get(c.id);
  if (a) { a.gatewarden.state = c.state; renderAlerts(); }
}
async function unblock(ip) {
  const r = await api("/api/unblock/" + encodeURIComponent(ip), "POST");
  msg(r.status === 200 || r.status === 202 ? r.body.result : ((r.body && r.body.error) || "unblock failed (" + r.status + ")"));
}

// ---- incidents: per attacker, first packet → detection → block ----
function droppedText(d) { return fmtN(d.packets) + " packets dropped since " + new Date(d.since_unix_s * 1000).toISOString().slice(11, 16) + " UTC"; }
function fmtStamp(iso) { return iso ? String(iso).replace("T", " ").replace(/(\.\d+)?(\+0000|Z|\+00:00)$/, " UTC") : "—"; }
function tsSec(a) { return a ? Number(a.gatewarden && a.gatewarden.ts_ns ? a.gatewarden.ts_ns / 1e9 : Date.parse(a.timestamp) / 1000) : NaN; }
function after(t, t0) { const d = t - t0; return isFinite(d) && d >= 0 ? " (+" + (d < 1 ? (d * 1000).toFixed(0) + " ms" : fmtDur(d)) + ")" : ""; }
// The evidence pcap needs the token, so a plain link would get 401: fetch it and hand the browser the bytes.
async function evidence(id) {
  const r = await fetch("/api/alerts/" + id + "/pcap", {headers: S.token ? {Authorization: "Bearer " + S.token} : {}, cache: "no-store"});
  if (r.status === 404) { msg("no evidence kept for alert " + id); return; }
  if (r.status === 405) { msg("no evidence kept for alert " + id + " (this monitor keeps no evidence pcaps)"); return; }
  if (r.status !== 200) { msg("cannot fetch the evidence of alert " + id + " (" + r.status + ")"); return; }
  const blob = await r.blob();
  const url = URL.createObjectURL(blob);
  const a = el("a", {href: url, download: "alert-" + id + ".pcap"});
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  msg("evidence pcap of alert " + id + " saved as alert-" + id + ".pcap (" + blob.size + " bytes)");
}
function evidenceLink(a) {
  const id = a.gatewarden.id;
  const l = el("a", {href: a.evidence || "/api/alerts/" + id + "/pcap", class: "evidence", "data-evidence": id}, "evidence pcap");
  l.addEventListener("click", e => { e.preventDefault(); evidence(id); });
  return l;
}
function step(label, when, ...body) { return el("li", {}, el("b", {}, label), " ", el("span", {class: "muted"}, when), el("div", {}, ...body)); }
async function loadIncidents(ip) {
  const r = await api("/api/incidents");
  if (r.status === 200) {
    const rows = r.body.incidents || [];
    fill($("incidents"), rows.map(x => el("tr", {"data-incident": x.ip, class: x.ip === ip ? "on" : ""},
      el("td", {}, ipLink(x.ip)), el("td", {}, fmtN(x.alerts)), el("td", {class: "hide-sm"}, (x.kinds || []).join(", ")),
      el("td", {class: "hide-sm"}, fmtStamp(x.first_alert)), el("td", {}, fmtStamp(x.last_alert)), el("td", {class: x.blocked ? "sev1" : "muted"}, x.blocked ? "yes" : "no"))));
    if (!rows.length) fill($("incidents"), [el("tr", {}, el("td", {colSpan: 6, class: "muted"}, "no alert names a source yet"))]);
  }
  if (ip) await loadIncident(ip);
}
async function loadIncident(ip) {
  const r = await api("/api/incidents/" + encodeURIComponent(ip));
  const box = $("incident");
  if (r.status !== 200) { box.textContent = (r.body && r.body.error) || "cannot load the incident (" + r.status + ")"; return; }
  const x = r.body, d = x.detected, b = x.blocked, fp = x.first_packet;
  const t0 = fp ? fp.ts_ns / 1e9 : tsSec(d);
  const steps = [];
  steps.push(step("First packet", fp ? fmtStamp(fp.timestamp) : "not known",
    fp ? fmtN(fp.packets) + " packets in " + fmtN(fp.flows) + " flows counted from this source" : "the top-talkers table no longer tracks this source"));
  steps.push(step("Detected", d ? fmtStamp(d.timestamp) + after(tsSec(d), t0) : "—",
    d ? el("span", {}, el("span", {class: "sev" + d.alert.severity}, d.gatewarden.kind), " — ", el("span", {class: "reason"}, d.gatewarden.reason)) : "no alert",
    d && d.gatewarden.rule ? el("div", {class: "muted"}, "policy rule: " + d.gatewarden.rule) : ""));
  if (b) {
    steps.push(step("Blocked", fmtStamp(b.timestamp) + after(tsSec(b), t0), "the router confirmed the block (alert " + b.gatewarden.id + ")",
      x.block ? el("div", {class: "muted"}, "held " + (x.block.node ? "by " + x.block.node : "") + " (" + x.block.source + "), " + fmtDur(x.block.until - Date.now() / 1000) + " left") : el("div", {class: "muted"}, "no longer in a block table")));
  } else if (x.block) {
    steps.push(step("Blocked", x.block.source === "replay" ? "not enforced (a replay)" : "listed by " + (x.block.node || "the monitor"),
      x.block.reason, el("div", {class: "muted"}, x.block.source + ", " + fmtDur(x.block.until - Date.now() / 1000) + " left")));
  } else {
    steps.push(step("Not blocked", "", d ? "every alert's action is " + d.alert.action : ""));
  }
  const perSet = Object.entries((x.dropped && x.dropped.per_set) || {});
  steps.push(step("Dropped", x.dropped && x.dropped.packets != null ? el("span", {"data-dropped": x.dropped.packets}, droppedText(x.dropped)) : "not counted for this address", el("span", {class: "muted"}, (x.dropped && x.dropped.why) || ""),
    perSet.length ? el("div", {class: "muted", "data-per-set": "1"}, "this router's drop counters, all addresses together: " + perSet.map(([k, v]) => k + " " + fmtN(v)).join(", ")) : ""));
  const list = (x.alerts || []).map(a => el("tr", {"data-alert-id": a.gatewarden.id},
    el("td", {}, fmtStamp(a.timestamp)), el("td", {class: "sev" + a.alert.severity}, a.gatewarden.kind), el("td", {}, a.alert.action),
    el("td", {class: "reason hide-sm"}, a.gatewarden.reason + (a.gatewarden.rule ? " [rule " + a.gatewarden.rule + "]" : "")), el("td", {}, evidenceLink(a))));
  box.classList.remove("muted");
  box.replaceChildren(el("h3", {}, x.ip), el("ol", {class: "steps"}, ...steps),
    el("h3", {}, "Alerts about " + x.ip + " (" + fmtN(x.alerts_total) + ")"),
    el("div", {class: "scroll"}, el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "time"), el("th", {}, "kind"), el("th", {}, "action"), el("th", {class: "hide-sm"}, "reason"), el("th", {}, ""))), el("tbody", {id: "incident-alerts"}, ...list))));
}

// ---- model ----
async function loadModel() {
  const r = await api("/api/model");
  if (r.status !== 200) return;
  const m = r.body;
  if (m.model) {
    renderModelCard($("card"), m.model); // model.js
  } else {
    $("card").replaceChildren(el("p", {}, "No learned model is loaded: verdicts come from the explainable heuristics (thresholds in the [detector] config)."));
  }
  const bars = (tb, obj) => { const max = Math.max(1, ...Object.values(obj || {})); fill(tb, Object.entries(obj || {}).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, fmtN(v)), el("td", {class: "half"}, (() => { const d = el("div", {class:"bar"}); d.style.width = (100 * v / max) + "%"; return d; })())))); if (!Object.keys(obj || {}).length) fill(tb, [el("tr", {}, el("td", {class:"muted"}, "none yet"))]); };
  bars($("verdicts"), m.verdicts_by_kind);
  bars($("bykind"), m.alerts_by_kind);
  fill($("detcounters"), Object.entries(m.detector_counters || {}).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, fmtN(v)))));
}

// ---- training: upload a model, see each detector's answer ----
async function loadTraining() {
  const r = await api("/api/model");
  if (r.status !== 200) { $("tr-current").textContent = (r.body && r.body.error) || "cannot read the model (" + r.status + ")"; return; }
  const m = r.body, c = m.model;
  $("tr-current").replaceChildren(c
    ? el("div", {}, el("div", {}, el("b", {}, c.name), " (" + (c.created || "?") + ")"),
        el("div", {}, "classes: " + (c.classes || []).join(", ")),
        el("div", {}, "schema: " + (c.feature_schema ? c.feature_schema.name + " v" + c.feature_schema.version + ", " + c.feature_schema.columns.length + " inputs" : "?")))
    : el("p", {}, "No learned model: the detector runs on heuristics and the baseline."));
  $("tr-send").disabled = !canWrite() || !m.uploads_possible;
  if (!canWrite()) $("tr-result").textContent = "Uploading needs an admin token.";
  else if (!m.uploads_possible) $("tr-result").textContent = "No detector is connected to this monitor.";
  const u = m.upload;
  $("tr-last").textContent = u ? u.name + " (" + fmtN(u.bytes) + " bytes) uploaded by " + u.by + " at " + fmtTime(u.at) : "nothing uploaded since the monitor started";
  const rows = u ? Object.entries(u.results || {}).map(([node, x]) => el("tr", {}, el("td", {}, node), el("td", {class: x.ok ? "ok" : "sev1"}, x.ok ? "loaded" : "refused"), el("td", {}, x.reason), el("td", {class:"hide-sm"}, fmtTime(x.ts)))) : [];
  // Nothing waits forever: no answer within the timeout is shown as timed out, with what to do.
  const none = !u ? el("td", {class: "muted", colSpan: 4}, "—")
    : u.state === "timed_out" ? el("td", {class: "sev1", colSpan: 4, "data-state": "timed_out"}, "timed out: " + u.error)
    : el("td", {class: "muted", colSpan: 4}, "waiting for the detectors… (at most " + u.timeout_s + " s)");
  fill($("tr-results"), rows.length ? rows : [el("tr", {}, none)]);
  return u;
}
function toBase64(buf) {
  const bytes = new Uint8Array(buf); let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
$("tr-form").addEventListener("submit", async e => {
  e.preventDefault();
  const t = $("tr-tflite").files[0], c = $("tr-card").files[0];
  if (!t || !c) { $("tr-result").textContent = "Choose both files: the .tflite and its card."; return; }
  $("tr-result").textContent = "checking…";
  const r = await api("/api/model", "POST", { tflite_base64: toBase64(await t.arrayBuffer()), card: await c.text() });
  $("tr-result").textContent = r.status === 200 ? "accepted: " + r.body.name + "; " + r.body.status : "refused (" + r.status + "): " + ((r.body && r.body.error) || "no reason given");
  $("tr-result").className = r.status === 200 ? "ok" : "sev1";
  if (r.status !== 200) return;
  // Until every answer is in (or the upload timed out): the server bounds the wait.
  for (let i = 0; i <= (r.body.timeout_s || 60) + 5; i++) {
    const u = await loadTraining();
    if (!u || u.version !== r.body.version) break;
    if (u.state !== "pending") {
      const said = {loaded: "loaded by the detectors", refused: "refused by the detectors: ", partly_refused: "refused by some detectors: ", timed_out: "timed out: "}[u.state] || u.state;
      $("tr-result").textContent = r.body.name + " " + said + (u.error || "");
      $("tr-result").className = u.state === "loaded" ? "ok" : "sev1";
      break;
    }
    await new Promise(ok => setTimeout(ok, 1000));
  }
});

// ---- settings: thresholds, TTLs, allowlist; validated by the monitor and by every node ----
async function loadSettings(fillForm) {
  const r = await api("/api/settings");
  if (r.status !== 200) { $("set-note").textContent = (r.body && r.body.error) || "cannot read the settings (" + r.status + ")"; return; }
  const s = r.body;
  $("set-note").textContent = (s.saved ? "Saved by " + s.by + " at " + fmtTime(s.at) + "; the monitor sends them to every detector and router (again every 30 s)." : "Each node runs its own config file until settings are saved here.") + (canWrite() ? "" : " Changing them needs an admin token.");
  if (fillForm) {
    $("set-allow").value = (s.allowlist || []).join(", ");
    fill($("set-detector"), Object.entries(s.detector || {}).map(([k, v]) => el("label", {}, el("span", {}, k.replace(/_/g, " ")),
      typeof v === "boolean" ? el("input", {type: "checkbox", checked: v, name: k, "data-kind": "bool"}) : el("input", {type: "number", step: "any", value: v, name: k, "data-kind": "number"}))));
    fill($("set-response"), Object.entries(s.response || {}).map(([k, v]) => el("label", {}, el("span", {}, k.replace(/_/g, " ")),
      typeof v === "string"
        ? el("select", {name: k, "data-kind": "action"}, ...["block", "alert", "ignore"].map(a => el("option", {value: a, selected: a === v}, a)))
        : el("input", {type: "number", step: "any", value: v, name: k, "data-kind": "number"}))));
  }
  $("set-save").disabled = !canWrite() || !s.can_send;
  const rows = Object.entries(s.results || {}).map(([node, x]) => el("tr", {}, el("td", {}, node), el("td", {class: x.ok ? "ok" : "sev1"}, x.ok ? "applied" : "refused"), el("td", {}, x.reason), el("td", {class: "hide-sm"}, fmtTime(x.ts))));
  fill($("set-results"), rows.length ? rows : [el("tr", {}, el("td", {class: "muted", colSpan: 4}, s.saved ? "waiting for the nodes…" : "—"))]);
}
$("set-form").addEventListener("submit", async e => {
  e.preventDefault();
  const detector = {};
  for (const i of $("set-detector").querySelectorAll("input")) detector[i.name] = i.dataset.kind === "bool" ? i.checked : Number(i.value);
  const response = {};
  for (const i of $("set-response").querySelectorAll("select, input")) response[i.name] = i.dataset.kind === "action" ? i.value : Number(i.value);
  const allowlist = $("set-allow").value.split(/[\s,]+/).filter(x => x);
  const r = await api("/api/settings", "POST", { detector, response, allowlist });
  $("set-result").textContent = r.status === 200 ? "applied: " + r.body.status : "refused (" + r.status + "): " + ((r.body && r.body.error) || "no reason given");
  $("set-result").className = r.status === 200 ? "ok" : "sev1";
  for (let i = 0; i < 6; i++) { await loadSettings(false); await new Promise(ok => setTimeout(ok, 1000)); }
});

// ---- live events ----
function connect() {
  if (S.es) S.es.close();
  const url = "/api/events" + (S.token ? "?access_token=" + encodeURIComponent(S.token) : "");
  const es = new EventSource(url);
  S.es = es;
  // Once subscribed, load what the stream cannot replay: alerts raised
  // before it opened or while it was reconnecting.
  es.addEventListener("open", () => { $("conn").textContent = "live"; $("conn").className = "ok"; loadAlerts(); });
  es.addEventListener("error", () => { $("conn").textContent = "reconnecting…"; $("conn").className = "down"; });
  es.addEventListener("hello", e => renderStatus(JSON.parse(e.data)));
  es.addEventListener("tick", e => {
    const t = JSON.parse(e.data);
    S.history.push(t.point); if (S.history.length > 600) S.history.shift();
    renderStatus(Object.assign({}, S.status || {}, t, {history: null, node: (S.status || {}).node, role: (S.status || {}).role, version: (S.status || {}).version}));
    if (document.querySelector("#v-model.on")) loadModel();
    if (document.querySelector("#v-training.on") && S.history.length % 3 === 0) loadTraining();
    if (document.querySelector("#v-incidents.on") && S.history.length % 3 === 0) loadIncidents(hashParam("ip"));
  });
  es.addEventListener("alert", e => { const a = JSON.parse(e.data); addAlert(a, true); renderAlerts(); });
  es.addEventListener("alert_state", e => applyState(JSON.parse(e.data)));
  es.addEventListener("blocks", e => renderStatus(Object.assign({}, S.status || {}, JSON.parse(e.data), {history: null})));
}

async function start() {
  readToken();
  const w = await api("/api/whoami");
  S.role = w.body ? w.body.role : null; S.sub = w.body ? w.body.sub : null; S.pub = !!(w.body && w.body.public_status);
  if (w.status === 401) { msg((w.body && w.body.error) || "the token was refused"); localStorage.removeItem("gw_token"); S.token = null; }
  $("who").textContent = S.role ? S.sub + " (" + S.role + ")" : (S.pub ? "public read-only" : "not signed in");
  if (!S.role && !S.pub) {
    const r = await api("/api/status");
    if (r.body) renderStatus(r.body);
    $("conn").textContent = "needs a token"; $("login").classList.add("on");
    return;
  }
  connect();
  await loadAlerts();
}

const kindSel = document.querySelector("#filters select[name=kind]");
for (const k of KINDS) kindSel.append(el("option", {value: k}, k.replace(/_/g, " ")));
$("filters").addEventListener("submit", e => {
  e.preventDefault();
  const fd = new FormData(e.target);
  S.filters = {}; for (const [k, v] of fd.entries()) if (v) S.filters[k] = String(v).trim();
  loadAlerts();
});
$("loginbtn").addEventListener("click", () => $("login").classList.add("on"));
$("tokenclose").addEventListener("click", () => $("login").classList.remove("on"));
$("tokenclear").addEventListener("click", () => { localStorage.removeItem("gw_token"); location.reload(); });
$("tokensave").addEventListener("click", () => { const t = $("tokentext").value.trim(); if (t) { localStorage.setItem("gw_token", t); location.reload(); } });
window.addEventListener("hashchange", () => { if (/token=/.test(location.hash)) { location.reload(); return; } show(); });
window.addEventListener("resize", drawCharts);
setInterval(() => { if (S.status) $("uptime").textContent = fmtDur((S.status.uptime_s || 0)); }, 5000);
show();
renderAlerts();
start().catch(e => msg("cannot reach the monitor: " + e));
// The JSON status API this page reads: /api/status, /api/alerts, /api/events (live), /api/model.
