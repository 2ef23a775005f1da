#!/usr/bin/env bash
# Runs every lab scenario live against `gatewarden run --role all` in the router
# namespace and writes the scoring table (root; tools/test.sh installs the tools).
set -euo pipefail

usage() {
    cat >&2 <<USAGE
usage: $0 [OUT.md]
  OUT.md  where the Markdown table goes (default: stdout)
The table in docs/DETECTION.md comes from:  GATEWARDEN_LAB_BENIGN_S=600 tests/lab/score.sh /tmp/score.md
  GATEWARDEN_LAB_BENIGN_S  seconds of the benign-only session (default 30)
USAGE
    exit 2
}
[[ ${1:-} == -h || ${1:-} == --help ]] && usage
[[ $(id -u) -eq 0 ]] || { echo "error: the lab needs root (network namespaces)" >&2; exit 1; }
cd "$(dirname "$0")/../.."
report=$(mktemp)
trap 'rm -f "$report"' EXIT
GATEWARDEN_LAB_REPORT=$report cargo test --release --test lab -- --ignored --exact lab_score --nocapture
if [[ -n ${1:-} ]]; then
    cp "$report" "$1"
    echo "wrote $1"
else
    cat "$report"
fi
