#!/usr/bin/env python3
"""Draws the plots in docs/ from the measured tables next to them.

A table in a doc that a plot is drawn from has a marker on the line before
it, `<!-- plot:NAME -->`; the plot is docs/plots/NAME.svg, linked after the
table. The figures stay in the table (the record, with its command); the
plot is what a person looks at. Plain SVG, no libraries, so it runs
wherever python3 does.

  python3 tools/plot_docs.py           (re)write every plot
  python3 tools/plot_docs.py --check   fail if a plot differs from its table
                                       (the suite runs this: tests/docs_plots.rs)
"""

import argparse
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What each plot shows. `label` names the bars (a column, or several joined),
# `series` (optional) colours them, `value` is the bar's length; a cell
# "median (min–max)" draws the range as a whisker. `log` uses a log axis;
# `ref` draws a labelled line (a goal).
PLOTS = {
    "lab-time-to-block": dict(
        doc="docs/DETECTION.md",
        title="First attack packet → its source in a block set",
        label=["scenario"],
        value="→ block element",
        unit="s",
        log=True,
        ref=(1.0, "1 s"),
        skip_blank=True,
    ),
    "live-cpu-per-frame": dict(
        doc="docs/PERFORMANCE.md",
        title="CPU a frame, live capture of the same traffic (lower is better)",
        label=["round"],
        label_prefix="round ",
        series="contender",
        value="CPU ns a frame",
        unit="ns",
    ),
    "flood-vs-real-tool": dict(
        doc="docs/PERFORMANCE.md",
        title="Spoofed flood ÷ real-tool capture, instructions a packet (callgrind; #19's goal 2×)",
        label=["build"],
        value="flood ÷ real-tool",
        unit="",
        ref=(2.0, "2×"),
    ),
    "instructions-per-frame": dict(
        doc="docs/PERFORMANCE.md",
        title="Instructions a frame by stage, replay of the real-tool capture (callgrind)",
        label=["stage"],
        value="instructions a frame",
        unit="",
    ),
}

PALETTE = ["#2b6cb0", "#dd6b20", "#2f855a", "#805ad5"]
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


class PlotError(Exception):
    """A marker or a table a plot needs is missing or unreadable."""


def table_after_marker(text, name, doc):
    """The rows of the Markdown table after `<!-- plot:NAME -->` as dicts."""
    lines = text.splitlines()
    marker = f"<!-- plot:{name} -->"
    where = [i for i, l in enumerate(lines) if l.strip() == marker]
    if len(where) != 1:
        raise PlotError(f"{doc}: expected one line `{marker}` before the table, found {len(where)}")
    rows = []
    i = where[0] + 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    while i < len(lines) and lines[i].lstrip().startswith("|"):
        rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
        i += 1
    if len(rows) < 3 or not all(set(c) <= set("-: ") for c in rows[1]):
        raise PlotError(f"{doc}: the table after `{marker}` needs a header, a rule and a row")
    header = rows[0]
    return header, [dict(zip(header, r)) for r in rows[2:]]


NUMBER = r"-?\d[\d  ]*(?:\.\d+)?"


def number(text):
    """A figure as the docs write it: `1 063`, `**0.75 s**`, `4.13`."""
    m = re.search(NUMBER, text.replace("*", ""))
    if not m:
        return None
    return float(m.group(0).replace(" ", "").replace("\u202f", "").replace("\u00a0", ""))


def cell(text):
    """(value, low, high) of `median (min–max)` or of a single figure."""
    m = re.match(rf"\s*({NUMBER})[^()]*\(\s*({NUMBER})\s*[–-]\s*({NUMBER})\s*\)", text.replace("*", ""))
    if m:
        return tuple(number(g) for g in m.groups())
    v = number(text)
    return (v, None, None)


def nice_ticks(lo, hi, n=5):
    span = hi - lo
    if span <= 0:
        return [lo]
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    t = math.floor(lo / step) * step
    out = []
    while t <= hi + step * 1e-9:
        out.append(round(t, 10))
        t += step
    if out[-1] < hi:
        # The axis ends on a tick at or past the longest bar.
        out.append(round(t, 10))
    return out


def fmt(v, unit):
    if v == 0:
        s = "0"
    elif abs(v) >= 1000:
        s = f"{v:,.0f}".replace(",", " ")
    elif abs(v) >= 10:
        s = f"{v:.0f}"
    elif abs(v) >= 1:
        s = f"{v:.2f}".rstrip("0").rstrip(".")
    else:
        s = f"{v:.3f}".rstrip("0").rstrip(".")
    return f"{s} {unit}".strip()


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def draw(spec, header, rows):
    for col in spec["label"] + [spec["value"]] + ([spec["series"]] if spec.get("series") else []):
        if col not in header:
            raise PlotError(f"{spec['doc']}: the table for this plot has no column {col!r} (it has {header})")
    bars = []
    for r in rows:
        v, lo, hi = cell(r[spec["value"]])
        if v is None:
            if spec.get("skip_blank"):
                continue
            raise PlotError(f"{spec['doc']}: no figure in {r[spec['value']]!r}")
        label = spec.get("label_prefix", "") + " ".join(r[c].replace("*", "").replace("`", "") for c in spec["label"])
        series = r[spec["series"]].replace("*", "") if spec.get("series") else ""
        bars.append((label, series, v, lo, hi))
    series_names = list(dict.fromkeys(b[1] for b in bars))
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(series_names)}
    labels = list(dict.fromkeys(b[0] for b in bars))
    unit, log = spec["unit"], spec.get("log", False)
    top = max(max(b[4] or b[2] for b in bars), (spec.get("ref") or (0,))[0])
    if log:
        positive = [b[3] or b[2] for b in bars if (b[3] or b[2]) > 0]
        lo_dec = math.floor(math.log10(min(positive)))
        hi_dec = math.ceil(math.log10(top * 1.05))
        ticks = [10.0**d for d in range(lo_dec, hi_dec + 1)]
        x0v, x1v = ticks[0], ticks[-1]

        def xpos(v):
            v = max(v, x0v)
            return (math.log10(v) - math.log10(x0v)) / (math.log10(x1v) - math.log10(x0v))

    else:
        ticks = nice_ticks(0, top * 1.08)
        x0v, x1v = 0.0, ticks[-1]

        def xpos(v):
            return (v - x0v) / (x1v - x0v)

    per_label = max(1, len(series_names))
    bar_h, gap = 14, 8
    label_w = max(7 * max(len(l) for l in labels) + 16, 90)
    plot_w = 460
    value_w = 90
    width = label_w + plot_w + value_w
    legend_h = 22 if len(series_names) > 1 else 0
    top_m = 34 + legend_h + (14 if spec.get("ref") else 0)
    rows_h = len(labels) * (per_label * bar_h + gap)
    height = top_m + rows_h + 34
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' {FONT} font-size='12'>",
        f"<rect width='{width}' height='{height}' fill='white'/>",
        f"<text x='{width / 2:.0f}' y='20' text-anchor='middle' font-size='14' font-weight='bold'>{esc(spec['title'])}</text>",
    ]
    if legend_h:
        x = label_w
        for s in series_names:
            out.append(f"<rect x='{x}' y='30' width='12' height='12' fill='{colour[s]}'/>")
            out.append(f"<text x='{x + 16}' y='40'>{esc(s)}</text>")
            x += 16 + 7 * len(s) + 20
    axis_y = top_m + rows_h
    for t in ticks:
        x = label_w + xpos(t) * plot_w
        out.append(f"<line x1='{x:.1f}' y1='{top_m - 4}' x2='{x:.1f}' y2='{axis_y}' stroke='#e2e8f0'/>")
        out.append(f"<text x='{x:.1f}' y='{axis_y + 16}' text-anchor='middle' fill='#4a5568'>{esc(fmt(t, unit))}</text>")
    y = top_m
    for label in labels:
        group = [b for b in bars if b[0] == label]
        out.append(
            f"<text x='{label_w - 8}' y='{y + per_label * bar_h / 2 + 4:.1f}' text-anchor='end'>{esc(label)}</text>"
        )
        for s in series_names:
            for _, _, v, lo, hi in [b for b in group if b[1] == s]:
                w = max(xpos(v) * plot_w, 1.0)
                out.append(
                    f"<rect x='{label_w}' y='{y + 1}' width='{w:.1f}' height='{bar_h - 2}' fill='{colour[s]}'/>"
                )
                end = label_w + w
                if lo is not None and hi is not None:
                    a, b_ = label_w + xpos(lo) * plot_w, label_w + xpos(hi) * plot_w
                    mid = y + bar_h / 2
                    out.append(f"<line x1='{a:.1f}' y1='{mid}' x2='{b_:.1f}' y2='{mid}' stroke='#1a202c'/>")
                    for e in (a, b_):
                        out.append(f"<line x1='{e:.1f}' y1='{mid - 4}' x2='{e:.1f}' y2='{mid + 4}' stroke='#1a202c'/>")
                    end = max(end, b_)
                out.append(f"<text x='{end + 4:.1f}' y='{y + bar_h - 3}' fill='#2d3748'>{esc(fmt(v, unit))}</text>")
            y += bar_h
        y += gap
    out.append(f"<line x1='{label_w}' y1='{axis_y}' x2='{label_w + plot_w}' y2='{axis_y}' stroke='#4a5568'/>")
    if spec.get("ref"):
        rv, rl = spec["ref"]
        x = label_w + xpos(rv) * plot_w
        out.append(
            f"<line x1='{x:.1f}' y1='{top_m - 6}' x2='{x:.1f}' y2='{axis_y}' stroke='#c53030' stroke-dasharray='4 3'/>"
        )
        out.append(f"<text x='{x + 4:.1f}' y='{top_m - 8}' fill='#c53030'>{esc(rl)}</text>")
    if log:
        out.append(f"<text x='{label_w + plot_w}' y='{axis_y + 30}' text-anchor='end' fill='#718096'>log scale</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render(name):
    spec = PLOTS[name]
    doc = ROOT / spec["doc"]
    header, rows = table_after_marker(doc.read_text(encoding="utf-8"), name, spec["doc"])
    return draw(spec, header, rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with docs/plots/ instead of writing")
    args = ap.parse_args()
    stale = []
    for name, spec in PLOTS.items():
        path = ROOT / "docs" / "plots" / f"{name}.svg"
        try:
            svg = render(name)
        except PlotError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        link = f"(plots/{name}.svg)"
        if link not in (ROOT / spec["doc"]).read_text(encoding="utf-8"):
            print(f"error: {spec['doc']} does not show {link}: link it after its table", file=sys.stderr)
            return 1
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != svg:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(svg, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(
            f"error: {', '.join(stale)} differ from the tables they are drawn from: "
            "run `python3 tools/plot_docs.py` and commit the plots",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
