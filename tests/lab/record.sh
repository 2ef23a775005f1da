#!/usr/bin/env bash
# Records labelled captures with the traffic lab (root; tools/test.sh installs the tools):
# one capture + ground-truth labels (src,start,end,label; what `gatewarden features
# --labels` reads) per scenario, a benign-only capture, and demo.pcap (benign traffic
# with a scan, a SYN flood, SSH brute force and floods) with demo.labels.csv.
set -euo pipefail

usage() {
    cat >&2 <<USAGE
usage: $0 [OUT_DIR] [SCENARIO,…]
       $0 --benign SEED,… [OUT_DIR]
  OUT_DIR     where captures and labels go (default: datasets/lab; with --benign datasets/benign)
  SCENARIO,…  only these (names as in tests/lab/harness.rs, plus 'demo'); default: all
  --benign    benign-only sessions of the corpus, one per seed, into OUT_DIR/seed-<n>/
              (benign.pcap.xz: the headers-only capture, xz -9)
              (env GATEWARDEN_LAB_RECORD_S: seconds per seed, default 90)
Rebuilds the committed sets:  tests/lab/record.sh datasets/lab
                              tests/lab/record.sh --benign \$(seq -s, 1 34),100 datasets/benign
Seeds 1-99 may be trained on; 100 and above are held out for evaluation (datasets/README.md).
Bigger sets: run it repeatedly into different directories (each run takes ~5 minutes).
USAGE
    exit 2
}
[[ ${1:-} == -h || ${1:-} == --help ]] && usage
[[ $(id -u) -eq 0 ]] || { echo "error: the lab needs root (network namespaces)" >&2; exit 1; }
cd "$(dirname "$0")/../.."
if [[ ${1:-} == --benign ]]; then
    [[ -n ${2:-} ]] || usage
    [[ $2 =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "error: seeds are whole numbers separated by commas, got '$2'" >&2; exit 2; }
    out=$(realpath -m "${3:-datasets/benign}")
    mkdir -p "$out"
    export GATEWARDEN_LAB_OUT=$out GATEWARDEN_LAB_SEEDS=$2
    cargo test --release --test lab -- --ignored --exact lab_record_benign --nocapture
    # Stored compressed (datasets/README.md: ~10x smaller); tools/train/train.py decompresses.
    for s in ${2//,/ }; do
        xz -9 -f "$out/seed-$s/benign.pcap"
    done
    du -sh "$out"
    exit 0
fi
out=$(realpath -m "${1:-datasets/lab}")
mkdir -p "$out"
export GATEWARDEN_LAB_OUT=$out
[[ -n ${2:-} ]] && export GATEWARDEN_LAB_ONLY=$2
cargo test --release --test lab -- --ignored --exact lab_record --nocapture
echo "wrote $(ls "$out" | wc -l) files to $out"
