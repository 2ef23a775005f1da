#!/usr/bin/env bash
# Buildroot post-build script for gatewarden images (BR2_ROOTFS_POST_BUILD_SCRIPT).
# Buildroot calls it as: post-build.sh TARGET_DIR
#
# The overlay (../../overlay) brings gatewarden's own init scripts; this
# removes the package-provided ones that would do the same job differently.
set -euo pipefail
if [[ $# -lt 1 || ! -d $1 ]]; then
    echo "usage: $0 TARGET_DIR   (Buildroot runs this after building the target tree)" >&2
    exit 2
fi
target=$1

# Our S01logging replaces BusyBox's syslogd/klogd scripts; S20network replaces
# ifupdown's S40network; S40mosquitto starts the broker on the monitor only,
# under the supervisor, instead of on every node.
for s in S01syslogd S02klogd S40network S50mosquitto; do
    rm -f "$target/etc/init.d/$s"
done

for f in gatewarden-supervise; do
    [[ -x $target/usr/sbin/$f ]] || { echo "error: $target/usr/sbin/$f missing or not executable; is BR2_ROOTFS_OVERLAY set to the repository's overlay/?" >&2; exit 1; }
done
[[ -x $target/usr/bin/gatewarden ]] || { echo "error: $target/usr/bin/gatewarden missing; enable BR2_PACKAGE_GATEWARDEN" >&2; exit 1; }

# enforce.state_file (the blocks that must survive a reboot), the policy store
# and the monitor's data live under /var/lib/gatewarden: on the ext4 root,
# never on a tmpfs behind a symlink.
for d in var var/lib; do
    [[ ! -L $target/$d ]] || { echo "error: $target/$d is a symlink ($(readlink "$target/$d")); /var/lib/gatewarden must be on the root filesystem so blocks survive a reboot" >&2; exit 1; }
done

# Record what this image is.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$(dirname "$0")/../../Cargo.toml" | head -n 1)
printf 'gatewarden %s built %s\n' "$version" "$(date -u +%Y-%m-%dT%H:%MZ)" >"$target/etc/gatewarden-release"
