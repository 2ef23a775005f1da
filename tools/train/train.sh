#!/usr/bin/env bash
# Trains the default detector model from datasets/lab into models/ (see tools/train/train.py).
# The venv lives outside the repo (default /work/venvs/tf or $GATEWARDEN_TRAIN_VENV): TensorFlow is 1.6 GB.
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
