#!/usr/bin/env bash
# Buildroot post-image script (BR2_ROOTFS_POST_IMAGE_SCRIPT): one dd-able
# image per Turing Pi 2 slot, identical except for cmdline.txt, whose
# gatewarden.role= names the slot's role (see README.md in this directory).
#
# Buildroot runs it with BINARIES_DIR and BUILD_DIR set. Output:
#   $BINARIES_DIR/gatewarden-tp2-cm4-slot<N>-<role>.img
set -euo pipefail
board=$(cd "$(dirname "$0")" && pwd)
: "${BINARIES_DIR:?run by Buildroot (BINARIES_DIR unset); see board/turing-pi2/README.md}"
: "${BUILD_DIR:?run by Buildroot (BUILD_DIR unset)}"
command -v genimage >/dev/null || { echo "error: genimage missing; enable BR2_PACKAGE_HOST_GENIMAGE" >&2; exit 1; }

# Buildroot names the ext4 image rootfs.ext2 with a rootfs.ext4 link.
[[ -e $BINARIES_DIR/rootfs.ext4 ]] || { echo "error: $BINARIES_DIR/rootfs.ext4 missing; enable BR2_TARGET_ROOTFS_EXT2_4" >&2; exit 1; }
install -m 0644 "$board/cm4/config.txt" "$BINARIES_DIR/rpi-firmware/config.txt"

empty_root=$(mktemp -d)
trap 'rm -rf "$empty_root"' EXIT
for slot_dir in "$board"/cm4/slot*/; do
    slot=$(basename "$slot_dir")
    role=$(tr ' ' '\n' <"$slot_dir/cmdline.txt" | sed -n 's/^gatewarden\.role=//p' | tail -n 1)
    [[ -n $role ]] || { echo "error: $slot_dir/cmdline.txt has no gatewarden.role=" >&2; exit 1; }
    install -m 0644 "$slot_dir/cmdline.txt" "$BINARIES_DIR/rpi-firmware/cmdline.txt"
    tmp=$BUILD_DIR/genimage.tmp
    rm -rf "$tmp"
    genimage --rootpath "$empty_root" --tmppath "$tmp" --inputpath "$BINARIES_DIR" \
        --outputpath "$BINARIES_DIR" --config "$board/genimage.cfg"
    mv "$BINARIES_DIR/sdcard.img" "$BINARIES_DIR/gatewarden-tp2-cm4-$slot-$role.img"
    echo "==> $BINARIES_DIR/gatewarden-tp2-cm4-$slot-$role.img"
done
