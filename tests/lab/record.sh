#!/usr/bin/env bash
# Records labelled captures with the traffic lab (root; tools/test.sh installs the tools):
# one capture + ground-truth labels (src,start,end,label; what `gatewarden features
# --labels` reads) per scenario, a benign-only capture, and demo.pcap (benign traffic
# with a scan, a SYN flood, SSH brute force and floods) with demo.labels.csv.
set -euo pipefail

usage() {
    cat >&2 <<USAGE
usage: $0 [OUT_DIR] [SCENARIO,…]
  OUT_DIR     where captures and labels go (default: datasets/lab)
  SCENARIO,…  only these (names as in tests/lab/harness.rs, plus 'demo'); default: all
Rebuilds the committed set:  tests/lab/record.sh datasets/lab
Bigger sets: run it repeatedly into different directories (each run takes ~5 minutes).
USAGE
    exit 2
}
[[ ${1:-} == -h || ${1:-} == --help ]] && usage
[[ $(id -u) -eq 0 ]] || { echo "error: the lab needs root (network namespaces)" >&2; exit 1; }
cd "$(dirname "$0")/../.."
out=$(realpath -m "${1:-datasets/lab}")
mkdir -p "$out"
export GATEWARDEN_LAB_OUT=$out
[[ -n ${2:-} ]] && export GATEWARDEN_LAB_ONLY=$2
cargo test --release --test lab -- --ignored --exact lab_record --nocapture
echo "wrote $(ls "$out" | wc -l) files to $out"
