#!/usr/bin/env python3
"""Trains gatewarden's host classifier and exports it for the detector.

Reads `gatewarden features` CSVs made from every labelled capture
(NAME.pcap or NAME.pcap.xz, + NAME.labels.csv) under datasets/lab/,
datasets/benign/ (the lab's recorded benign corpus, one folder per seed:
seed-N/, stored xz-compressed and decompressed into --work/pcap/ before
`gatewarden features` reads them) and the seeded synthetic benign captures
tools/train/synth_benign.py writes into --work,
trains a small MLP on the schema's host columns (the damped per-source
statistics the router sends with every flow batch), and writes:

  models/host-mlp.tflite          float32 TFLite, fixed batch dimension
  models/host-mlp.card.json       model card (schema name/version/columns,
                                  preprocessing, classes, data, metrics)
  models/host-mlp.reference.json  reference inputs + TFLite interpreter
                                  outputs (the Rust test checks tract ≤ 1e-5)

The split is by *session* (one capture), never row-wise inside one: the lab
scenarios in VALIDATION and every seeded capture with seed >=
--holdout-seed-min (100) are held out. The held-out sessions give the
validation metrics and the calibration: a temperature T fitted on them
(probabilities become softmax(ln p / T)), with the expected calibration error
(10 bins of the top probability) before and after, also per group of held-out
sessions (the recorded corpus's seeds, the synthetic homes, the lab). The
model already in --out (the previous one) is scored on the same held-out
sessions, so the card says what the retraining changed. The card also stores each
input column's training range (the detector abstains outside it, see
src/detect/model.rs) and the lowest packet rate at which "flood" may be given.

Features come from `gatewarden features` with 2 s flow timeouts, so long
flows (downloads, camera streams) yield a row every 2 s with the host's live
statistics, as the detector sees them, rather than one row at their end.

Usage (tools/train/train.sh wraps it; it is the one command to retrain):
  python3 tools/train/train.py --gatewarden target/debug/gatewarden --out models
"""

import argparse
import datetime
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd

SEED = 7
BATCH = 64  # rows per inference call in the exported model
CLASSES = ["benign", "scan", "flood"]
LABEL_TO_CLASS = {
    "benign": "benign",
    "port_scan": "scan",
    "host_sweep": "scan",
    "syn_flood": "flood",
    "udp_flood": "flood",
    "icmp_flood": "flood",
}
# Scenarios held out for validation: never trained on. Each attack family
# keeps at least one scenario on each side where the lab has two.
VALIDATION = [
    "nmap_syn_T4",
    "nmap_connect_T3",
    "nmap_udp_T4",
    "nmap_telnet_sweep",
    "hping3_icmp_flood",
    "hydra_ssh_t16",
    "camera_exfil_new_host",
]
# Left out of the model entirely: forged sources send one SYN each and are
# handled per victim (SYN meter), never blocked; exfiltration is the
# per-device baseline's job, not a class. Brute force is not a class either:
# the lab has 31 hydra flows, and host statistics cannot tell a hydra SSH
# session from the admin's (a first model with the class flagged the admin
# at p = 1.00); the session-count heuristic catches hydra instead.
EXCLUDED_SCENARIOS = ["hping3_syn_flood_rand_source"]
EXCLUDED_LABELS = ["exfiltration", "brute_force"]
WINDOWS = ["w1", "w10", "w60"]
HOST_STATS = [
    "host_pkt_rate", "host_byte_rate", "host_distinct_dports", "host_distinct_dsts", "host_syn_ratio",
    "host_synack_ratio", "host_rst_ratio", "host_unreach_ratio", "host_failed_share", "host_new_dst_rate",
]
HOST_COLUMNS = [f"{c}_{w}" for w in WINDOWS for c in HOST_STATS]


# Flow timeouts for the training CSVs: a long flow yields a row every 2 s.
FEATURES_CONFIG = "[flow]\nidle_timeout_s = 2\nactive_timeout_s = 2\n"
# OOD guard margin (fraction of each column's training range, each side).
OOD_MARGIN = 0.25
ECE_BINS = 10
# Capture files train.py reads; the recorded corpus is stored as .pcap.xz (datasets/README.md).
PCAP_EXTS = (".pcap.xz", ".pcap")


def discover(roots):
    """Every NAME.pcap (or NAME.pcap.xz) with NAME.labels.csv under the roots: (session, pcap, labels, seed).
    A session is one capture, named by its root's name and relative path; its seed is
    the N of a seed-N folder on its path (None for the lab's scenario captures)."""
    out = {}
    for tag, root in roots:
        if not os.path.isdir(root):
            continue
        for d, _, files in sorted(os.walk(root)):
            for f in sorted(files):
                ext = next((e for e in PCAP_EXTS if f.endswith(e)), None)
                if ext is None:
                    continue
                pcap = os.path.join(d, f)
                labels = pcap[: -len(ext)] + ".labels.csv"
                if not os.path.exists(labels):
                    continue
                rel = os.path.relpath(pcap, root)[: -len(ext)]
                m = re.search(r"seed-(\d+)", rel)
                session = f"{tag}/{rel}"
                if session in out:
                    sys.exit(f"error: {session} is there twice ({out[session][1]} and {pcap}): keep one of them")
                out[session] = (session, pcap, labels, int(m.group(1)) if m else None)
    return [out[k] for k in sorted(out)]


def plain_pcap(work, session, pcap):
    """The capture as a plain pcap `gatewarden features` can read: itself, or (NAME.pcap.xz)
    decompressed once into WORK/pcap/SESSION.pcap (redone when the .xz is newer)."""
    if not pcap.endswith(".xz"):
        return pcap
    out = os.path.join(work, "pcap", session + ".pcap")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(pcap):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp = out + ".part"
        with lzma.open(pcap) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, out)
    return out


def features_csv(gatewarden, work, session, pcap, labels):
    out = os.path.join(work, "csv", session + ".csv")
    cfg = os.path.join(work, "features.toml")
    if not os.path.exists(cfg) or open(cfg).read() != FEATURES_CONFIG:
        with open(cfg, "w") as f:
            f.write(FEATURES_CONFIG)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    newest = max(os.path.getmtime(pcap), os.path.getmtime(labels), os.path.getmtime(cfg))
    if not os.path.exists(out) or os.path.getmtime(out) < newest:
        pcap = plain_pcap(work, session, pcap)
        subprocess.run([gatewarden, "features", pcap, "--labels", labels, "-c", cfg, "-o", out], check=True,
                       stdout=subprocess.DEVNULL)
    df = pd.read_csv(out)
    df["scenario"] = session
    return df


def f32(x):
    """A float32's shortest exact decimal (the card stays small; Rust reads the same f32)."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-"))


def f32s(xs):
    return [f32(x) for x in np.asarray(xs).ravel()]


def parse_seeds(text):
    """"1-24,101-106" -> [1..24, 101..106]."""
    out = []
    for part in filter(None, text.split(",")):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def softmax_t(p, t):
    """Temperature scaling of softmax outputs: softmax(ln p / t) (= logits / t); as src/detect/model.rs does."""
    z = np.log(np.maximum(p.astype(np.float64), 1e-30)) / t
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def ece(p, y, bins=ECE_BINS):
    """Expected calibration error: top-probability confidence vs accuracy, equal-width bins, row-weighted."""
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for i in range(bins):
        m = (conf > edges[i]) & (conf <= edges[i + 1]) if i else (conf <= edges[1])
        if m.any():
            total += m.mean() * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return float(total)


def fit_temperature(p, y):
    """The T minimising held-out negative log-likelihood (grid over 0.05–50, then refined)."""
    def nll(t):
        q = softmax_t(p, t)
        return -np.log(np.maximum(q[np.arange(len(y)), y], 1e-30)).mean()
    grid = np.exp(np.linspace(np.log(0.05), np.log(50.0), 400))
    best = min(grid, key=nll)
    fine = np.linspace(best * 0.97, best * 1.03, 61)
    return float(min(fine, key=nll))


def schema_of(csv_columns):
    """Name and version from src/features/schema.rs (the binary the CSVs came from was built from it);
    columns from the CSV header. The Rust test `embedded_model_loads_and_matches_this_binarys_schema`
    catches any disagreement."""
    import re
    src = open(os.path.join(os.path.dirname(__file__), "../../src/features/schema.rs")).read()
    name = re.search(r'SCHEMA_NAME: &str = "([^"]+)"', src).group(1)
    version = int(re.search(r"SCHEMA_VERSION: u32 = (\d+)", src).group(1))
    return {"name": name, "version": version, "columns": list(csv_columns)}


def prepare(x, mean=None, std=None):
    x = np.log1p(np.maximum(x.astype(np.float32), 0.0)).astype(np.float32)
    if mean is None:
        mean = x.mean(axis=0).astype(np.float32)
        std = x.std(axis=0).astype(np.float32)
        std = np.where(std < 1e-3, 1.0, std).astype(np.float32)
    return ((x - mean) / std).astype(np.float32), mean, std


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gatewarden", required=True, help="the gatewarden binary (its `features` makes the CSVs)")
    ap.add_argument("--datasets", default="datasets", help="folder holding lab/ and benign/ (NAME.pcap + NAME.labels.csv)")
    ap.add_argument("--work", default="target/train", help="where the feature CSVs and synthetic captures are cached")
    ap.add_argument("--out", default="models", help="where the model, card and reference go")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--synthetic-seeds", default="1-24,101-106",
                    help="seeds of tools/train/synth_benign.py's benign captures (\"\" for none)")
    ap.add_argument("--previous", default=None,
                    help="folder of the model to compare with on the same held-out sessions (default: --out, "
                         "read before it is overwritten)")
    ap.add_argument("--holdout-seed-min", type=int, default=100,
                    help="seeded sessions (seed-N folders) with N at least this are held out")
    args = ap.parse_args()

    import tensorflow as tf

    tf.keras.utils.set_random_seed(SEED)
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    previous = previous_model(args.previous or args.out)
    synth_dir = os.path.join(args.work, "synthetic")
    seeds = parse_seeds(args.synthetic_seeds)
    if seeds:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import synth_benign
        for seed in seeds:
            synth_benign.write_seed(synth_dir, seed)
    roots = [("lab", os.path.join(args.datasets, "lab")), ("benign", os.path.join(args.datasets, "benign"))]
    if seeds:
        roots.append(("synthetic", synth_dir))
    sessions = [x for x in discover(roots) if x[0] not in [f"lab/{n}" for n in EXCLUDED_SCENARIOS]
                and not (x[0].startswith("synthetic/") and x[3] not in seeds)]
    if not sessions:
        sys.exit(f"error: no NAME.pcap + NAME.labels.csv under {args.datasets}/lab or {args.datasets}/benign")
    held_out = sorted(s for s, _, _, seed in sessions
                      if (s.startswith("lab/") and os.path.basename(s) in VALIDATION) or (seed is not None and seed >= args.holdout_seed_min))
    frames = [features_csv(args.gatewarden, args.work, s, p, l) for s, p, l, _ in sessions]
    df = pd.concat(frames, ignore_index=True)
    schema = schema_of(frames[0].columns)
    missing = [c for c in HOST_COLUMNS if c not in schema["columns"]]
    if missing:
        sys.exit(f"error: the binary's schema lacks {missing}: update HOST_COLUMNS in {__file__}")
    df = df[~df["label"].isin(EXCLUDED_LABELS)]
    unknown = set(df["label"]) - set(LABEL_TO_CLASS)
    if unknown:
        sys.exit(f"error: labels {sorted(unknown)} have no class: add them to LABEL_TO_CLASS")
    df["class"] = df["label"].map(LABEL_TO_CLASS).map(CLASSES.index)
    val_mask = df["scenario"].isin(held_out)
    train, val = df[~val_mask], df[val_mask]
    # The split is by session: no capture contributes rows to both sides.
    assert not set(train["scenario"]) & set(val["scenario"])
    print(f"sessions: {len(sessions)} ({len(held_out)} held out); rows: train {len(train)}, held out {len(val)}")
    print("train classes:", train["class"].value_counts().sort_index().to_dict())
    print("held-out classes:", val["class"].value_counts().sort_index().to_dict())
    rows_by_source = {src: {CLASSES[c]: int(n) for c, n in g["class"].value_counts().sort_index().items()}
                      for src, g in train.groupby(train["scenario"].map(source_of))}
    recorded = {seed: s in held_out for s, _, _, seed in sessions if s.startswith("benign/") and seed is not None}
    print("train rows by source:", rows_by_source)

    xt, mean, std = prepare(train[HOST_COLUMNS].to_numpy())
    xv, _, _ = prepare(val[HOST_COLUMNS].to_numpy(), mean, std)
    yt, yv = train["class"].to_numpy(), val["class"].to_numpy()
    counts = np.bincount(yt, minlength=len(CLASSES)).astype(np.float64)
    weights = {i: float(len(yt) / (len(CLASSES) * max(c, 1))) for i, c in enumerate(counts)}

    inp = tf.keras.Input(shape=(len(HOST_COLUMNS),), name="host")
    h = tf.keras.layers.Dense(32, activation="relu")(inp)
    h = tf.keras.layers.Dense(16, activation="relu")(h)
    out = tf.keras.layers.Dense(len(CLASSES), activation="softmax")(h)
    model = tf.keras.Model(inp, out)
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(xt, yt, epochs=args.epochs, batch_size=256, class_weight=weights, verbose=2, shuffle=True)

    pv = model.predict(xv, batch_size=1024, verbose=0)
    metrics = evaluate(val, pv)

    # Calibration on the held-out sessions: one temperature.
    temperature = fit_temperature(pv, yv)
    pcal = softmax_t(pv, temperature)
    calibration = {
        "method": "temperature",
        "temperature": temperature,
        "ece_before": ece(pv, yv),
        "ece_after": ece(pcal, yv),
        "bins": ECE_BINS,
        "rows": int(len(yv)),
        "held_out_sessions": held_out,
    }
    print("calibration:", {k: v for k, v in calibration.items() if k != "held_out_sessions"})

    # OOD guard: each input column's training range (raw values).
    raw_train = train[HOST_COLUMNS].to_numpy().astype(np.float64)
    ood = {"margin": OOD_MARGIN, "features": [
        {"column": c, "min": f32(raw_train[:, i].min()), "max": f32(raw_train[:, i].max()),
         "p0_5": f32(np.percentile(raw_train[:, i], 0.5)), "p99_5": f32(np.percentile(raw_train[:, i], 99.5))}
        for i, c in enumerate(HOST_COLUMNS)]}

    # "flood" only at flood rates: half the 1st percentile of the training floods' 1 s packet rate.
    flood_rates = train.loc[train["class"] == CLASSES.index("flood"), "host_pkt_rate_w1"].to_numpy()
    floor = float(np.floor(0.5 * np.percentile(flood_rates, 1))) if len(flood_rates) else 0.0
    class_floors = [{
        "class": "flood", "column": "host_pkt_rate_w1", "min": floor,
        "note": f"half the 1st percentile of the training floods' 1 s packet rate "
                f"({np.percentile(flood_rates, 1):.0f} packets/s); a lower-rate 'flood' counts as benign",
    }] if len(flood_rates) else []

    metrics["guarded"] = evaluate_guarded(val, pcal, ood, class_floors)
    print(json.dumps(metrics, indent=2))

    # Export float32 with a fixed batch dimension (tract reads the static
    # shape): the same layers on a fixed-batch input, weights frozen to constants.
    fixed_in = tf.keras.Input(batch_shape=(BATCH, len(HOST_COLUMNS)), name="host")
    x = fixed_in
    for layer in model.layers[1:]:
        x = layer(x)
    fixed = tf.keras.Model(fixed_in, x)
    conv = tf.lite.TFLiteConverter.from_keras_model(fixed)
    tflite = conv.convert()
    tfl_path = os.path.join(args.out, "host-mlp.tflite")
    with open(tfl_path, "wb") as f:
        f.write(tflite)

    # This model and the previous one on the same held-out sessions, and on every lab scenario.
    this = {"preprocess": {"mean": mean, "std": std}, "calibration": calibration, "ood": ood,
            "class_floors": class_floors}
    lab = df[df["scenario"].str.startswith("lab/")]
    metrics["held_out_groups"] = score_groups(val, card_probs(tflite, this, val), this)
    metrics["lab_scenarios"] = score_lab(lab, card_probs(tflite, this, lab), this)
    print("held-out groups:", json.dumps(metrics["held_out_groups"], indent=1))
    print("lab scenarios:", json.dumps(metrics["lab_scenarios"]))
    compared = None
    if previous is not None:
        old_tflite, old_card = previous
        compared = {
            "tflite_sha256": hashlib.sha256(old_tflite).hexdigest(),
            "created": old_card.get("created"),
            "train_rows": old_card.get("training_data", {}).get("train_rows"),
            "note": "the model this one replaced, scored by this train.py on this model's held-out sessions "
                    "(all of them unseen by both) and on the lab scenarios",
            "held_out_groups": score_groups(val, card_probs(old_tflite, old_card, val), old_card),
            "lab_scenarios": score_lab(lab, card_probs(old_tflite, old_card, lab), old_card),
        }
        print("previous model, held-out groups:", json.dumps(compared["held_out_groups"], indent=1))
        print("previous model, lab scenarios:", json.dumps(compared["lab_scenarios"]))

    # Reference: raw host features from validation rows of every class, and
    # the TFLite interpreter's outputs on them after the card's preprocessing.
    rng = np.random.default_rng(SEED)
    picks = []
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(yv == c)
        if len(idx):
            picks.extend(rng.choice(idx, size=min(len(idx), BATCH), replace=False))
    picks = np.array(picks[: BATCH * 2])
    raw = val[HOST_COLUMNS].to_numpy()[picks].astype(np.float32)
    prepared, _, _ = prepare(raw, mean, std)
    ref_out = tflite_probs(tflite, prepared).astype(np.float32).tolist()
    with open(os.path.join(args.out, "host-mlp.reference.json"), "w") as f:
        json.dump({"inputs": [f32s(r) for r in raw], "outputs": [f32s(r) for r in ref_out]}, f)

    card = {
        "name": "gatewarden-host-mlp",
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "feature_schema": {"name": schema["name"], "version": schema["version"], "columns": HOST_COLUMNS},
        "preprocess": {"log1p": True, "mean": f32s(mean), "std": f32s(std)},
        "classes": CLASSES,
        "architecture": f"{len(HOST_COLUMNS)}→32→16→{len(CLASSES)} MLP, ReLU, softmax; float32; batch {BATCH}",
        "training_data": {
            "source": "datasets/lab: real tools (nmap, hping3, hydra, iperf3) and benign IoT profiles in the "
                      "traffic lab; datasets/benign/seed-N: the lab's benign corpus, recorded with real tools "
                      "(train_rows_by_source: recorded); synthetic/seed-N: tools/train/synth_benign.py's "
                      "seeded benign homes, an extra (synthetic). One row per flow (and per 2 s of a "
                      "long flow) from `gatewarden features`, host columns at export time",
            "split": f"by session (capture): lab scenarios {VALIDATION} and seeds >= {args.holdout_seed_min} "
                     "held out",
            "label_map": LABEL_TO_CLASS,
            # Lab scenario names (datasets/lab/NAME.pcap), as tests/detection.rs reads them;
            # every session (lab/, benign/, synthetic/) in train_sessions and calibration.held_out_sessions.
            "train_scenarios": sorted(s[len("lab/"):] for s in set(train["scenario"]) if s.startswith("lab/")),
            "validation_scenarios": sorted(s[len("lab/"):] for s in set(val["scenario"]) if s.startswith("lab/")),
            "train_sessions": sorted(set(train["scenario"])),
            "synthetic_seeds": seeds,
            "excluded_scenarios": EXCLUDED_SCENARIOS,
            "excluded_labels": EXCLUDED_LABELS,
            "train_rows": {CLASSES[i]: int(c) for i, c in enumerate(counts)},
            # recorded = datasets/benign (the lab's benign corpus, real tools), synthetic =
            # synth_benign.py's homes (an extra), lab = datasets/lab's scenario captures.
            "train_rows_by_source": rows_by_source,
            "recorded_seeds": {"train": sorted(k for k, h in recorded.items() if not h),
                               "held_out": sorted(k for k, h in recorded.items() if h)},
            "epochs": args.epochs,
            "seed": SEED,
            "tensorflow": tf.__version__,
        },
        "validation_metrics": metrics,
        "previous_model": compared,
        "calibration": calibration,
        "ood": ood,
        "class_floors": class_floors,
        # The exact .tflite this card describes (the gateway's validator checks it first).
        "tflite_sha256": hashlib.sha256(tflite).hexdigest(),
        # Every 8th reference row: a candidate model must reproduce these (within the tolerance)
        # in the gateway's validator before it is stored or hot-swapped (issue #14).
        "reference": {"inputs": [f32s(r) for r in raw[::8]], "outputs": [f32s(r) for r in ref_out[::8]],
                      "tolerance": 1e-4},
    }
    with open(os.path.join(args.out, "host-mlp.card.json"), "w") as f:
        json.dump(card, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {tfl_path} ({len(tflite)} bytes), card and reference to {args.out}")


def previous_model(out):
    """The model + card already in OUT (read before they are overwritten), when its card has
    calibration, OOD ranges and this trainer's input columns; else None."""
    try:
        with open(os.path.join(out, "host-mlp.card.json")) as f:
            card = json.load(f)
        with open(os.path.join(out, "host-mlp.tflite"), "rb") as f:
            tflite = f.read()
    except OSError:
        return None
    if card.get("feature_schema", {}).get("columns") != HOST_COLUMNS or "calibration" not in card or "ood" not in card:
        print("note: the model in", out, "predates this trainer's card; not compared")
        return None
    return tflite, card


def guarded_predictions(val, probs, ood, floors):
    """What the detector does with calibrated probabilities: (inside, pred) where inside is
    False for rows the OOD guard abstains on, pred the argmax after the class floors."""
    raw = val[HOST_COLUMNS].to_numpy().astype(np.float64)
    inside = np.ones(len(raw), bool)
    for i, r in enumerate(ood["features"]):
        slack = ood["margin"] * (r["max"] - r["min"]) + 1e-3
        inside &= (raw[:, i] >= r["min"] - slack) & (raw[:, i] <= r["max"] + slack)
    p = probs.copy()
    for f in floors:
        k = CLASSES.index(f["class"])
        low = val[f["column"]].to_numpy() < f["min"]
        p[low, 0] += p[low, k]
        p[low, k] = 0.0
    return inside, p.argmax(axis=1)


def evaluate_guarded(val, probs, ood, floors):
    """What the detector gets on the held-out rows: abstentions (OOD), then calibrated
    probabilities with the class floors applied; per-class precision among opinions."""
    inside, pred = guarded_predictions(val, probs, ood, floors)
    y = val["class"].to_numpy()
    out = {"rows": int(len(y)), "abstained": int((~inside).sum()),
           "abstained_by_class": {n: int(((~inside) & (y == c)).sum()) for c, n in enumerate(CLASSES)}}
    per = {}
    for c, name in enumerate(CLASSES):
        m = inside
        tp = int(((pred == c) & (y == c) & m).sum())
        fp = int(((pred == c) & (y != c) & m).sum())
        fn = int(((pred != c) & (y == c) & m).sum())
        per[name] = {"precision": tp / (tp + fp) if tp + fp else None, "recall": tp / max(tp + fn, 1),
                     "support": int(((y == c) & m).sum()), "false_positives": fp}
    out["per_class"] = per
    ben = (y == 0) & inside
    out["benign_rows_called_attack"] = int((pred[ben] != 0).sum())
    return out


def source_of(session):
    """Where a session's rows come from: "recorded" (datasets/benign, the lab's benign corpus),
    "synthetic" (synth_benign.py) or "lab" (datasets/lab scenarios)."""
    return {"benign": "recorded", "synthetic": "synthetic"}.get(session.split("/", 1)[0], "lab")


def tflite_probs(tflite, prepared):
    """The TFLite interpreter's outputs for prepared rows (padded to the model's fixed batch)."""
    import tensorflow as tf
    interp = tf.lite.Interpreter(model_content=tflite)
    interp.allocate_tensors()
    i_in, i_out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    n_in = interp.get_input_details()[0]["shape"]
    out = []
    for s in range(0, len(prepared), n_in[0]):
        chunk = prepared[s:s + n_in[0]]
        pad = np.zeros(tuple(n_in), np.float32)
        pad[: len(chunk)] = chunk
        interp.set_tensor(i_in, pad)
        interp.invoke()
        out.extend(interp.get_tensor(i_out)[: len(chunk)].tolist())
    return np.asarray(out, np.float64).reshape(len(prepared), -1)


def card_probs(tflite, card, rows):
    """A model + card's raw probabilities on raw host columns (the card's own preprocessing)."""
    mean = np.asarray(card["preprocess"]["mean"], np.float32)
    std = np.asarray(card["preprocess"]["std"], np.float32)
    prepared, _, _ = prepare(rows[HOST_COLUMNS].to_numpy(), mean, std)
    return tflite_probs(tflite, prepared)


def score_groups(val, probs, card):
    """Per group of held-out sessions (all, and by source): calibration error before and after
    the card's temperature, rows the guard abstains on, and benign sources flagged (a source of a
    session counts once; raw = any row's argmax is an attack, guarded = any row the detector
    would call an attack after the OOD guard, temperature and class floors)."""
    t = card["calibration"]["temperature"]
    pcal = softmax_t(probs, t)
    inside, gpred = guarded_predictions(val, pcal, card["ood"], card.get("class_floors", []))
    y = val["class"].to_numpy()
    src = val["scenario"].map(source_of).to_numpy()
    out = {}
    for group in ["all", "recorded", "synthetic", "lab"]:
        m = np.ones(len(y), bool) if group == "all" else src == group
        if not m.any():
            continue
        v = val[m].assign(raw=probs[m].argmax(axis=1) != 0, guarded=(gpred[m] != 0) & inside[m])
        ben = v[v["class"] == 0].groupby(["scenario", "src"]).agg(raw=("raw", "max"), guarded=("guarded", "max"))
        out[group] = {
            "sessions": int(v["scenario"].nunique()), "rows": int(m.sum()),
            "ece_before": ece(probs[m], y[m]), "ece_after": ece(pcal[m], y[m]),
            "abstained_rows": int((~inside[m]).sum()),
            "benign_sources": int(len(ben)), "benign_sources_flagged_raw": int(ben["raw"].sum()),
            "benign_sources_flagged_guarded": int(ben["guarded"].sum()),
        }
    return out


def score_lab(lab, probs, card):
    """Per lab scenario (datasets/lab, trained on or held out): attack rows the detector's model
    opinion gets right (guarded: an abstention is a miss) and whether the attacker is flagged."""
    pcal = softmax_t(probs, card["calibration"]["temperature"])
    inside, gpred = guarded_predictions(lab, pcal, card["ood"], card.get("class_floors", []))
    y = lab["class"].to_numpy()
    out = {}
    for name in sorted(set(lab["scenario"])):
        m = (lab["scenario"] == name).to_numpy() & (y != 0)
        if not m.any():
            continue
        hit = (gpred == y) & inside & m
        out[name[len("lab/"):]] = {"class": CLASSES[int(np.bincount(y[m]).argmax())], "attack_rows": int(m.sum()),
                                   "recall": float(hit.sum() / m.sum()), "abstained": int((~inside & m).sum())}
    return out


def evaluate(val, probs):
    """Row-level and source-level metrics on the held-out scenarios."""
    y = val["class"].to_numpy()
    pred = probs.argmax(axis=1)
    out = {"rows": int(len(y)), "row_accuracy": float((pred == y).mean())}
    per_class = {}
    for c, name in enumerate(CLASSES):
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        per_class[name] = {
            "precision": tp / (tp + fp) if tp + fp else None,  # None: never predicted
            "recall": tp / max(tp + fn, 1),
            "support": int((y == c).sum()),
        }
    out["per_class"] = per_class
    # A source is flagged when any of its rows is classified as an attack.
    attack = pred != CLASSES.index("benign")
    v = val.assign(flag=attack)
    src = v.groupby(["scenario", "src"]).agg(flag=("flag", "max"), cls=("class", "max"))
    att = src[src["cls"] != 0]
    ben = src[src["cls"] == 0]
    out["sources"] = {
        "attack_sources": int(len(att)),
        "attack_sources_flagged": int(att["flag"].sum()),
        "benign_sources": int(len(ben)),
        "benign_sources_flagged": int(ben["flag"].sum()),
        "note": "a (scenario, source) pair counts once; flagged = any row classified as an attack",
    }
    return out


if __name__ == "__main__":
    main()
