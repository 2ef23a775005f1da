#!/usr/bin/env python3
"""Fails when the code's layering breaks (issue #16).

1. Crates: every dependency between workspace members must be an edge of
   LAYERS below (read from `cargo metadata`), so an upward import is a CI
   failure even before it is a build error.
2. Modules: inside each crate, no two sibling modules may import each other,
   directly or through others (a cycle). Imports are read from the source:
   `crate::a::b`, `use crate::{a, b::c}` and `super::x` paths outside
   `#[cfg(test)]` code; a module using its own parent or child does not count
   (that is one unit). A cycle in any crate, the binary's included, fails.
3. `#![forbid(unsafe_code)]` in every library crate except capture and netlink.

Usage: tools/check-layers.py [--quiet]
"""
import json
import os
import re
import subprocess
import sys

# crate -> the workspace crates it may depend on (issue #16's table).
LAYERS = {
    "gatewarden-core": set(),
    "gatewarden-proto": {"gatewarden-core"},
    "gatewarden-capture": {"gatewarden-core"},
    "gatewarden-netlink": {"gatewarden-core"},
    "gatewarden-secure": {"gatewarden-core"},
    "gatewarden-flow": {"gatewarden-core", "gatewarden-proto", "gatewarden-capture"},
    "gatewarden-detect": {"gatewarden-core", "gatewarden-proto", "gatewarden-flow"},
    "gatewarden-enforce": {"gatewarden-core", "gatewarden-proto", "gatewarden-netlink"},
    "gatewarden-bus": {"gatewarden-core", "gatewarden-proto", "gatewarden-secure"},
    "gatewarden-policy": {"gatewarden-core", "gatewarden-proto"},
    "gatewarden-monitor": {"gatewarden-core", "gatewarden-proto", "gatewarden-policy", "gatewarden-detect"},
}
LAYERS["gatewarden"] = set(LAYERS)
UNSAFE_ALLOWED = {"gatewarden-capture", "gatewarden-netlink", "gatewarden"}

quiet = "--quiet" in sys.argv
errors = []


def say(msg):
    if not quiet:
        print(msg)


meta = json.loads(subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--no-deps"]))
members = {p["name"]: p for p in meta["packages"] if p["id"] in meta["workspace_members"]}
for name, pkg in sorted(members.items()):
    if name not in LAYERS:
        errors.append(f"{name}: not a crate of the layer table (tools/check-layers.py, docs/ARCHITECTURE.md)")
        continue
    for dep in pkg["dependencies"]:
        if dep["name"] in members and dep.get("kind") in (None, "normal", "build") and dep["name"] not in LAYERS[name]:
            errors.append(f"{name} depends on {dep['name']}: not allowed by the layer table; "
                          "add a message or a trait in a lower crate instead")
missing = sorted(set(LAYERS) - set(members))
say(f"crates: {len(members)} of {len(LAYERS)} in the workspace, every edge within the table"
    + (f"; not split out yet: {', '.join(missing)}" if missing else ""))


def module_files(src_dir):
    """module path (tuple) -> file, for every file module under src_dir."""
    mods = {}
    for root, _, files in os.walk(src_dir):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src_dir)
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "mod" or (len(parts) == 1 and parts[0] in ("lib", "main")):
                parts = parts[:-1]
            mods[tuple(parts)] = os.path.join(root, f)
    return mods


def resolve(mods, path):
    """The longest file module that is a prefix of `path`."""
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in mods:
            return tuple(path[:n])
    return ()


def imports(text, here):
    """Module paths (tuples) this file's non-test code names."""
    cut = text.find("#[cfg(test)]")
    body = text if cut < 0 else text[:cut]
    body = re.sub(r"//[^\n]*", "", body)
    out = []
    for m in re.finditer(r"\bcrate::((?:\w+::)*\w+)", body):
        out.append(m.group(1).split("::"))
    for m in re.finditer(r"\buse crate::\{([^;]*)\};", body, re.S):
        for item in re.split(r",(?![^{]*\})", m.group(1)):
            item = item.strip().split("{")[0].strip(":").strip()
            if item and item != "self":
                out.append(item.split("::"))
    for m in re.finditer(r"\b((?:super::)+)((?:\w+::)*\w+)", body):
        ups = m.group(1).count("super::")
        base = list(here[: len(here) - ups]) if ups <= len(here) else []
        out.append(base + m.group(2).split("::"))
    return out


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


for name, pkg in sorted(members.items()):
    src_dir = os.path.join(os.path.dirname(pkg["manifest_path"]), "src")
    mods = module_files(src_dir)
    graph = {}
    for here, path in mods.items():
        text = open(path, encoding="utf-8").read()
        for target in imports(text, here):
            there = resolve(mods, target)
            if there == here:
                continue
            k = 0
            while k < min(len(here), len(there)) and here[k] == there[k]:
                k += 1
            if k == len(here) or k == len(there):
                continue  # a module and its own parent or child
            a, b = "::".join(here[: k + 1]), "::".join(there[: k + 1])
            graph.setdefault(a, set()).add(b)
    found = cycles(graph)
    lib = pkg["manifest_path"].find("/crates/") >= 0
    for comp in found:
        errors.append(f"{name}: modules import each other: {' <-> '.join(comp)}")
    say(f"{name}: {len(mods)} modules, no cycle" if not found else f"{name}: {len(found)} cycle(s)")
    if lib:
        if name not in UNSAFE_ALLOWED:
            libfile = os.path.join(src_dir, "lib.rs")
            if "#![forbid(unsafe_code)]" not in open(libfile, encoding="utf-8").read():
                errors.append(f"{name}: src/lib.rs lacks #![forbid(unsafe_code)]")

if errors:
    print("layer check failed:", file=sys.stderr)
    for e in errors:
        print(f"  {e}", file=sys.stderr)
    sys.exit(1)
say("layers: ok")
