#!/usr/bin/env bash
# The issue #15 soak: the benign corpus (13 devices, tests/lab/benign.sh) for an
# hour against `gatewarden run --role all` with shipped defaults and enforcement
# on, a seed never used for training (≥ 100), one 30 s WAN outage; writes the
# figures (false positives per device-hour, per-device table, every behaviour's
# parameters). Root; tools/test.sh installs the tools.
set -euo pipefail

usage() {
    cat >&2 <<USAGE
usage: $0 [OUT.md]
  OUT.md  where the figures go (default: stdout)
env:
  GATEWARDEN_LAB_SOAK_S  length in seconds (default 3600)
  GATEWARDEN_LAB_SEED    the benign corpus's seed (≥ 100; default: from the clock, printed)
The figures in docs/DETECTION.md come from:  tests/lab/soak.sh /tmp/soak.md
USAGE
    exit 2
}
[[ ${1:-} == -h || ${1:-} == --help ]] && usage
[[ $(id -u) -eq 0 ]] || { echo "error: the lab needs root (network namespaces)" >&2; exit 1; }
if [[ -n ${GATEWARDEN_LAB_SEED:-} ]] && ((GATEWARDEN_LAB_SEED < 100)); then
    echo "error: seeds 1-99 are for training (datasets/README.md); the soak needs one ≥ 100" >&2
    exit 2
fi
cd "$(dirname "$0")/../.."
report=$(mktemp)
trap 'rm -f "$report"' EXIT
status=0
GATEWARDEN_LAB_REPORT=$report cargo test --release --test lab -- --ignored --exact lab_soak_60_minutes --nocapture ||
    status=$?
if [[ -n ${1:-} ]]; then
    cp "$report" "$1"
    echo "wrote $1"
else
    cat "$report"
fi
exit "$status"
