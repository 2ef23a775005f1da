#!/usr/bin/env bash
# Counts the flow rows of the recorded benign corpus (datasets/benign/seed-N/benign.pcap.xz):
# each capture is decompressed into a temp dir and read by `gatewarden features` with its
# default flow timeouts (the count issue #15's "20x the 845 benign rows" is measured in),
# and with the trainer's 2 s timeouts (the rows tools/train/train.py trains on).
# Prints one line per seed (train or held out) and the totals.
#   tools/train/corpus_rows.sh [DATASETS_BENIGN_DIR]   (default datasets/benign)
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    echo "usage: $0 [DIR]   (DIR holds seed-N/benign.pcap.xz + benign.labels.csv; default datasets/benign)" >&2
    exit 2
fi
cd "$(dirname "$0")/../.."
dir=${1:-datasets/benign}
cargo build -q --bin gatewarden
bin=target/debug/gatewarden
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '[flow]\nidle_timeout_s = 2\nactive_timeout_s = 2\n' >"$tmp/train.toml"
rows() { # CSV rows (minus the header) of `gatewarden features` on pcap $1 with labels $2 [config $3]
    local log
    log=$("$bin" features "$1" --labels "$2" ${3:+-c "$3"} -o "$tmp/out.csv" 2>&1) || {
        echo "error: gatewarden features $1: $log" >&2
        exit 1
    }
    echo $(($(wc -l <"$tmp/out.csv") - 1))
}
declare -A total=([train]=0 [train2]=0 [held]=0 [held2]=0)
printf '%-10s %-9s %8s %8s\n' seed use rows rows_2s
for d in $(ls -d "$dir"/seed-* | sort -t- -k2 -n); do
    n=${d##*seed-}
    if [[ -f $d/benign.pcap.xz ]]; then
        xz -dc "$d/benign.pcap.xz" >"$tmp/s.pcap"
    elif [[ -f $d/benign.pcap ]]; then
        cp "$d/benign.pcap" "$tmp/s.pcap"
    else
        echo "warning: $d has no benign.pcap(.xz); skipped" >&2
        continue
    fi
    a=$(rows "$tmp/s.pcap" "$d/benign.labels.csv")
    b=$(rows "$tmp/s.pcap" "$d/benign.labels.csv" "$tmp/train.toml")
    use=train
    ((n >= 100)) && use=held
    total[$use]=$((total[$use] + a))
    total[${use}2]=$((total[${use}2] + b))
    printf '%-10s %-9s %8d %8d\n' "seed-$n" "$use" "$a" "$b"
done
printf 'train (seeds 1-99): %d rows (%d with 2 s timeouts); held out (>= 100): %d (%d)\n' \
    "${total[train]}" "${total[train2]}" "${total[held]}" "${total[held2]}"
