"use strict";
// The Model page's card (issues #15, #18): what the running model is, how well
// it did on sessions it never saw (precision/recall bars, the counts behind
// them), how well its probabilities are calibrated, when it abstains, what it
// was trained on, and its inputs with their training ranges — tables and small
// bar charts a person reads, never the card's JSON.
// status.js calls renderModelCard(box, card) with /api/model's "model".
function mcEl(tag, cls, ...kids) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
}
function mcNum(x, digits) {
  const n = Number(x);
  if (x == null || !isFinite(n)) return "–";
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
// A number with a small bar under it: `frac` of the cell's width (0..1), set
// through the CSSOM (the page's CSP allows no style attributes).
function mcBar(text, frac, kind) {
  const bar = mcEl("span", "mc-bar" + (kind ? " mc-" + kind : ""));
  const f = Number(frac);
  bar.style.width = (isFinite(f) ? Math.max(0, Math.min(1, f)) * 100 : 0) + "%";
  return mcEl("span", "mc-barcell", mcEl("span", "mc-val", text), mcEl("span", "mc-track", bar));
}
function mcList(items) { return (items || []).join(", "); }
// Key–value rows.
function mcFacts(cls, pairs) {
  const t = mcEl("table", "mc-table mc-facts " + cls);
  t.append(mcEl("tbody", null, ...pairs.filter(p => p[1] !== undefined && p[1] !== null && p[1] !== "")
    .map(([k, v]) => mcEl("tr", null, mcEl("th", null, k), mcEl("td", null, v)))));
  return t;
}
function renderModelCard(box, c) {
  const cal = c.calibration || {}, ood = c.ood || {}, vm = c.validation_metrics || {}, td = c.training_data || {};
  const fs = c.feature_schema || {}, classes = c.classes || [];
  const out = [];
  const floors = (c.class_floors || []).map(f => "“" + f.class + "” is only given at " + f.column + " ≥ " + mcNum(f.min) + " (below, it counts as benign)");
  const rows = td.train_rows ? Object.entries(td.train_rows).map(([k, v]) => mcNum(v) + " " + k).join(", ") : "";
  out.push(mcEl("p", "mc-summary",
    mcEl("b", null, c.name), " (trained " + (c.created || "?") + ") tells " + classes.join(", ") + " apart from " +
    (fs.columns || []).length + " host statistics. ",
    rows ? "Training rows: " + rows + ". " : ""));
  out.push(mcEl("p", "mc-summary",
    "Calibrated by " + (cal.method || "?") + " scaling (T = " + mcNum(cal.temperature) + ") on " + (cal.held_out_sessions || []).length +
    " held-out sessions (" + mcNum(cal.rows) + " rows): expected calibration error ",
    mcEl("b", "mc-ece", mcNum(cal.ece_before, 4) + " → " + mcNum(cal.ece_after, 4)),
    " (" + (cal.bins || "?") + " bins; 0 means its probabilities match how often it is right)."));
  out.push(mcEl("p", "mc-summary",
    "Outside the training range of any input (± " + mcNum(100 * (ood.margin || 0), 0) + " % of that range) the model abstains for the host and the detector decides without it. " +
    floors.join("; ") + (floors.length ? "." : "")));

  // Architecture.
  const pre = c.preprocess || {};
  out.push(mcEl("h3", null, "Architecture"));
  out.push(mcFacts("mc-arch", [
    ["layers", c.architecture],
    ["classes", classes.map((k, i) => i + ": " + k).join(", ")],
    ["inputs", (fs.columns || []).length + " (feature schema " + (fs.name || "?") + " v" + (fs.version == null ? "?" : fs.version) + ")"],
    ["preprocessing", (pre.log1p ? "log(1 + x), then " : "") + (pre.mean ? "standardised per input (training mean and deviation)" : "none")],
    ["calibration", (cal.method || "?") + ", T = " + mcNum(cal.temperature)],
    ["training", [td.epochs != null ? td.epochs + " epochs" : "", td.seed != null ? "seed " + td.seed : "", td.tensorflow ? "TensorFlow " + td.tensorflow : ""].filter(x => x).join(", ")],
    ["file", c.tflite_sha256 ? "sha256 " + c.tflite_sha256 : ""],
  ]));

  // Per class: precision and recall bars, then the counts behind them.
  const per = vm.per_class || {}, g = vm.guarded || {}, gper = g.per_class || {};
  const known = classes.length ? classes.filter(k => per[k]) : Object.keys(per);
  if (known.length) {
    out.push(mcEl("h3", null, "On held-out sessions (" + mcNum(vm.rows) + " rows, accuracy " + mcPct(vm.row_accuracy) + ")"));
    out.push(mcTable("mc-classes", ["class", "precision", "recall", "rows", "precision as the detector sees it"],
      known.map(k => [k, mcBar(mcPct(per[k].precision), per[k].precision, "p"), mcBar(mcPct(per[k].recall), per[k].recall, "r"),
        mcNum(per[k].support), gper[k] ? mcBar(mcPct(gper[k].precision), gper[k].precision, "p") : "–"])));
    out.push(mcEl("p", "muted", "– : the class was never predicted. “As the detector sees it”: after calibration, the class floors and " +
      mcNum(g.abstained || 0) + " of " + mcNum(g.rows || 0) + " held-out rows abstained (outside the training ranges)."));
    // A full matrix when the card has one; else the counts that follow from
    // precision, recall and rows (which are all the card keeps).
    const m = vm.confusion;
    out.push(mcEl("h3", null, "Confusion (held-out rows)"));
    if (Array.isArray(m) && m.length === classes.length) {
      out.push(mcTable("mc-confusion", ["true ↓ / predicted →", ...classes],
        m.map((r, i) => [classes[i], ...classes.map((_, j) => mcNum((r || [])[j]))])));
    } else {
      out.push(mcTable("mc-confusion", ["class", "rows", "called right", "missed", "called this class", "wrongly called this class"],
        known.map(k => {
          const p = per[k], tp = Math.round((p.recall || 0) * (p.support || 0));
          const called = p.precision > 0 ? Math.round(tp / p.precision) : (p.precision == null ? 0 : NaN);
          return [k, mcNum(p.support), mcNum(tp), mcNum((p.support || 0) - tp), mcNum(called), mcNum(called - tp)];
        })));
      out.push(mcEl("p", "muted", "Counts from each class's precision, recall and rows (the card keeps no full matrix): missed rows were called another class."));
    }
  }

  // Calibration per held-out group (and against the model this one replaced, when the card says).
  const groups = vm.held_out_groups || {}, prev = ((c.previous_model || {}).held_out_groups) || {};
  const hasPrev = Object.keys(prev).length > 0;
  const ece = x => x != null && x > 0 && x < 0.00005 ? "< 0.0001" : mcNum(x, 4);
  if (Object.keys(groups).length) {
    const emax = Math.max(0.0001, ...Object.values(groups).map(x => Math.max(x.ece_before || 0, x.ece_after || 0)));
    out.push(mcEl("h3", null, "Calibration: expected calibration error per held-out group"));
    out.push(mcTable("mc-cal", ["group", "sessions", "rows", "ECE before", "ECE after", ...(hasPrev ? ["previous model, after"] : []), "abstained rows"],
      Object.entries(groups).map(([k, x]) => [k, mcNum(x.sessions), mcNum(x.rows), mcBar(ece(x.ece_before), x.ece_before / emax, "e"),
        mcBar(ece(x.ece_after), x.ece_after / emax, "e"), ...(hasPrev ? [prev[k] ? ece(prev[k].ece_after) : "–"] : []), mcNum(x.abstained_rows)])));
  }

  // Lab scenarios: recall per recorded attack.
  const labs = vm.lab_scenarios || {};
  if (Object.keys(labs).length) {
    out.push(mcEl("h3", null, "Recall per lab attack scenario"));
    out.push(mcTable("mc-labs", ["scenario", "class", "attack rows", "recall", "abstained"],
      Object.entries(labs).map(([k, x]) => [k, x.class, mcNum(x.attack_rows), mcBar(mcPct(x.recall), x.recall, "r"), mcNum(x.abstained)])));
  }

  // Out-of-distribution guard.
  const abByClass = g.abstained_by_class || {};
  out.push(mcEl("h3", null, "Out-of-distribution guard"));
  out.push(mcFacts("mc-oodstats", [
    ["margin", "± " + mcNum(100 * (ood.margin || 0), 0) + " % of each input's training range"],
    ["held-out rows abstained", g.rows ? mcNum(g.abstained || 0) + " of " + mcNum(g.rows) + " (" + mcPct((g.abstained || 0) / g.rows) + ")" : ""],
    ["abstained by true class", Object.entries(abByClass).map(([k, v]) => k + " " + mcNum(v)).join(", ")],
    ["benign rows called an attack", g.benign_rows_called_attack != null ? mcNum(g.benign_rows_called_attack) : ""],
    ["class floors", floors.join("; ")],
  ]));

  // Training data.
  const bySrc = td.train_rows_by_source || {};
  out.push(mcEl("h3", null, "Training data"));
  if (Object.keys(bySrc).length) {
    out.push(mcTable("mc-train", ["source", ...classes, "total"],
      Object.entries(bySrc).map(([src, r]) => [src, ...classes.map(k => mcNum(r[k] || 0)), mcNum(Object.values(r).reduce((a, b) => a + b, 0))])
        .concat(td.train_rows ? [["all", ...classes.map(k => mcNum(td.train_rows[k] || 0)), mcNum(Object.values(td.train_rows).reduce((a, b) => a + b, 0))]] : [])));
  }
  out.push(mcFacts("mc-trainfacts", [
    ["split", td.split],
    ["train scenarios", mcList(td.train_scenarios)],
    ["validation scenarios", mcList(td.validation_scenarios)],
    ["train sessions", (td.train_sessions || []).length ? (td.train_sessions || []).length + " sessions" : ""],
    ["left out", [mcList(td.excluded_scenarios), (td.excluded_labels || []).length ? "labels " + mcList(td.excluded_labels) : ""].filter(x => x).join("; ")],
    ["where from", td.source],
  ]));
  if ((cal.held_out_sessions || []).length) {
    out.push(mcEl("h3", null, "Held-out sessions"));
    out.push(mcEl("p", "mc-sessions muted", cal.held_out_sessions.join(", ")));
  }

  // Inputs: the feature list in the model's order, with the training ranges.
  out.push(mcEl("h3", null, "Inputs and their training ranges (" + (ood.features || []).length + ", in the model's order)"));
  out.push(mcTable("mc-ood", ["input", "min", "0.5 %", "99.5 %", "max"],
    (ood.features || []).map(f => [f.column, mcNum(f.min), mcNum(f.p0_5), mcNum(f.p99_5), mcNum(f.max)])));
  box.classList.remove("muted");
  box.replaceChildren(...out);
}
