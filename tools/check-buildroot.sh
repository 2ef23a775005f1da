#!/usr/bin/env bash
# Check the BR2_EXTERNAL tree in buildroot/ against a Buildroot source tree,
# without downloading or building anything.
#
# Usage: tools/check-buildroot.sh BUILDROOT_DIR
#
# For every buildroot/configs/*_defconfig:
#   1. make BR2_EXTERNAL=buildroot O=<tmp> <name>_defconfig  must succeed with
#      no Kconfig warning (an unknown or misspelled symbol is a warning);
#   2. every line of the defconfig must be in the resulting .config (a symbol
#      whose dependencies are unmet is dropped silently; this catches it);
#   3. make savedefconfig is diffed against the defconfig and shown (lines
#      only in ours restate defaults; informational).
# Then board/turing-pi2/post-image.sh runs genimage on placeholder boot files,
# which checks genimage.cfg and the per-slot cmdline.txt files (needs genimage).
#
# Get a Buildroot tree with e.g.
#   git clone https://gitlab.com/buildroot.org/buildroot.git
# Prints the Buildroot version it checked against.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") echo "error: name a Buildroot source tree" >&2; usage >&2; exit 2 ;;
esac
br=$(cd "$1" && pwd)
[[ -f $br/Makefile && -f $br/Config.in && -d $br/package ]] ||
    { echo "error: $br is not a Buildroot source tree (no Makefile, Config.in, package/)" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
ext=$repo/buildroot
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

version=$(make -s -C "$br" --no-print-directory print-version 2>/dev/null || sed -n 's/^export BR2_VERSION := //p' "$br/Makefile")
echo "==> Buildroot $version ($br)"
fail=0
for defconfig in "$ext"/configs/*_defconfig; do
    name=$(basename "$defconfig")
    out=$work/${name%_defconfig}
    echo "==> $name"
    if ! make -C "$br" BR2_EXTERNAL="$ext" O="$out" "$name" >"$out.log" 2>&1; then
        echo "error: make $name failed:" >&2
        cat "$out.log" >&2
        fail=1
        continue
    fi
    if grep -i 'warning' "$out.log"; then
        echo "error: Kconfig warnings loading $name (above)" >&2
        fail=1
    fi
    while IFS= read -r line; do
        [[ -z $line || ($line == \#* && $line != "# BR2_"*" is not set") ]] && continue
        if ! grep -qxF -- "$line" "$out/.config"; then
            echo "error: $name: '$line' did not survive into .config (unknown symbol or unmet dependency)" >&2
            fail=1
        fi
    done <"$defconfig"
    make -C "$br" O="$out" savedefconfig BR2_DEFCONFIG="$out/saved_defconfig" >/dev/null 2>&1
    if ! diff <(grep -E '^BR2_|^# BR2_.* is not set$' "$defconfig" | sort) <(grep . "$out/saved_defconfig" | sort) >"$out.diff"; then
        echo "    savedefconfig differs (< only in ours, > only in savedefconfig):"
        sed 's/^/    /' "$out.diff"
    else
        echo "    make savedefconfig gives back exactly these lines"
    fi
done

if command -v genimage >/dev/null; then
    echo "==> board/turing-pi2/post-image.sh with placeholder boot files (genimage $(genimage --version 2>/dev/null | head -n 1))"
    bin=$work/images
    mkdir -p "$bin/rpi-firmware/overlays" "$work/build"
    for f in bcm2711-rpi-cm4.dtb Image rpi-firmware/start4.elf rpi-firmware/fixup4.dat rpi-firmware/overlays/miniuart-bt.dtbo; do
        head -c 4096 /dev/urandom >"$bin/$f"
    done
    mkdir -p "$work/root/etc"
    echo placeholder >"$work/root/etc/hostname"
    mke2fs -q -t ext4 -d "$work/root" "$bin/rootfs.ext4" 8M >/dev/null 2>&1
    if BINARIES_DIR=$bin BUILD_DIR=$work/build "$repo/board/turing-pi2/post-image.sh" >"$work/post-image.log" 2>&1; then
        for img in "$bin"/gatewarden-tp2-cm4-*.img; do
            cmdline=$(mtype -i "$img@@$(sfdisk -d "$img" | awk -F'[=,]' '/start=/ {print $2 * 512; exit}')" ::cmdline.txt)
            echo "    $(basename "$img"): $(sfdisk -d "$img" | grep -c "start=") partitions, cmdline.txt: $cmdline"
        done
    else
        cat "$work/post-image.log" >&2
        echo "error: post-image.sh failed (above)" >&2
        fail=1
    fi
else
    echo "==> genimage not installed (apt-get install genimage): post-image.sh not checked"
fi
((fail == 0)) || { echo "FAILED" >&2; exit 1; }
echo "==> ok: every defconfig loads against Buildroot $version"
