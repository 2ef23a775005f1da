#!/usr/bin/env bash
# Retrains the default detector model into models/ in one command (see tools/train/train.py):
# every labelled capture under datasets/lab/ and datasets/benign/seed-N/ (seeds >= 100 held out),
# plus seeded synthetic benign homes (tools/train/synth_benign.py, cached in target/train/synthetic),
# split by session, calibrated on the held-out sessions, with OOD ranges and the flood rate floor
# in the card. Afterwards: `cargo test --lib detect::model` and `gatewarden model` show the result.
# The venv lives outside the repo (default ~/.cache/gatewarden-train-venv or $GATEWARDEN_TRAIN_VENV): TensorFlow is 1.6 GB.
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    echo "usage: $0 [train.py options]   (venv: \${GATEWARDEN_TRAIN_VENV:-\$HOME/.cache/gatewarden-train-venv})" >&2
    exit 2
fi
cd "$(dirname "$0")/../.."
venv=${GATEWARDEN_TRAIN_VENV:-$HOME/.cache/gatewarden-train-venv}
if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r tools/train/requirements.txt
fi
cargo build -q --bin gatewarden
"$venv/bin/python" tools/train/train.py --gatewarden target/debug/gatewarden "$@"
