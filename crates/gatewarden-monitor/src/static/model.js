"use strict";
// The Model page's card (issue #15): what the running model is, how well its
// probabilities are calibrated, which sessions that was measured on, and the
// input ranges outside which it abstains — a summary and tables for a person.
// status.js calls renderModelCard(box, card) with /api/model's "model".
function mcEl(tag, cls, ...kids) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
}
function mcNum(x, digits) {
  const n = Number(x);
  if (!isFinite(n)) return "–";
  if (Number.isInteger(n)) return n.toLocaleString("en");
  if (Math.abs(n) >= 100) return Math.round(n).toLocaleString("en");
  return String(Number(n.toFixed(digits == null ? 3 : digits)));
}
function mcPct(x) { const n = x == null ? NaN : Number(x); return isFinite(n) ? (100 * n).toFixed(1) + " %" : "–"; }
function mcTable(cls, head, rows) {
  const t = mcEl("table", "mc-table " + cls);
  t.append(mcEl("thead", null, mcEl("tr", null, ...head.map(h => mcEl("th", null, h)))));
  t.append(mcEl("tbody", null, ...rows.map(r => mcEl("tr", null, ...r.map(c => mcEl("td", null, c))))));
  return t;
}
function renderModelCard(box, c) {
  const cal = c.calibration || {}, ood = c.ood || {}, vm = c.validation_metrics || {}, td = c.training_data || {};
  const out = [];
  const floors = (c.class_floors || []).map(f => "“" + f.class + "” is only given at " + f.column + " ≥ " + mcNum(f.min) + " (below, it counts as benign)");
  const rows = td.train_rows ? Object.entries(td.train_rows).map(([k, v]) => mcNum(v) + " " + k).join(", ") : "";
  out.push(mcEl("p", "mc-summary",
    mcEl("b", null, c.name), " (trained " + (c.created || "?") + ") tells " + (c.classes || []).join(", ") + " apart from " +
    ((c.feature_schema || {}).columns || []).length + " host statistics. ",
    rows ? "Training rows: " + rows + ". " : ""));
  out.push(mcEl("p", "mc-summary",
    "Calibrated by " + (cal.method || "?") + " scaling (T = " + mcNum(cal.temperature) + ") on " + (cal.held_out_sessions || []).length +
    " held-out sessions (" + mcNum(cal.rows) + " rows): expected calibration error ",
    mcEl("b", "mc-ece", mcNum(cal.ece_before, 4) + " → " + mcNum(cal.ece_after, 4)),
    " (" + (cal.bins || "?") + " bins; 0 means its probabilities match how often it is right)."));
  out.push(mcEl("p", "mc-summary",
    "Outside the training range of any input (± " + mcNum(100 * (ood.margin || 0), 0) + " % of that range) the model abstains for the host and the detector decides without it. " +
    floors.join("; ") + (floors.length ? "." : "")));
  const per = vm.per_class || {}, g = vm.guarded || {}, gper = g.per_class || {};
  if (Object.keys(per).length) {
    out.push(mcEl("h3", null, "On held-out sessions"));
    out.push(mcTable("mc-classes", ["class", "precision", "recall", "rows", "precision as the detector sees it"],
      (c.classes || Object.keys(per)).filter(k => per[k]).map(k => [k, mcPct(per[k].precision), mcPct(per[k].recall),
        mcNum(per[k].support), gper[k] ? mcPct(gper[k].precision) : "–"])));
    out.push(mcEl("p", "muted", "– : the class was never predicted. “As the detector sees it”: after calibration, the class floors and " +
      mcNum(g.abstained || 0) + " of " + mcNum(g.rows || 0) + " held-out rows abstained (outside the training ranges)."));
  }
  if ((cal.held_out_sessions || []).length) {
    out.push(mcEl("h3", null, "Held-out sessions"));
    out.push(mcEl("p", "mc-sessions muted", cal.held_out_sessions.join(", ")));
  }
  out.push(mcEl("h3", null, "Input ranges (training data)"));
  out.push(mcTable("mc-ood", ["input", "min", "0.5 %", "99.5 %", "max"],
    (ood.features || []).map(f => [f.column, mcNum(f.min), mcNum(f.p0_5), mcNum(f.p99_5), mcNum(f.max)])));
  if (c.architecture) out.push(mcEl("p", "muted", "Layers: " + c.architecture + "."));
  box.classList.remove("muted");
  box.replaceChildren(...out);
}
