#!/usr/bin/env bash
# Assemble gatewarden appliance images from Debian arm64 packages, for QEMU
# and for testing the boot flow without Buildroot (which needs the internet).
#
# Usage: tools/make-image.sh [--out DIR] [--binary PATH] [--no-mosquitto]
#                            [--bundle TREE] [-h|--help]
#
#   --out DIR       where to write the images (default: target/images)
#   --binary PATH   the static aarch64 gatewarden to ship (default: build it
#                   with tools/cross-build.sh)
#   --no-mosquitto  leave out the MQTT broker and its shared libraries
#   --bundle TREE   provision one node: copy TREE (from `gatewarden pki bundle
#                   NODE --out TREE`: its certificate, key, broker address and,
#                   for a monitor, the TLS broker config) into the image. Without
#                   it the image is generic; a bundle can also be added at boot
#                   as a second initramfs archive (see tests/qemu.rs).
#
# Writes to DIR:
#   vmlinuz               Debian's cloud-arm64 kernel
#   initramfs.cpio.gz     the whole system: busybox-static, gatewarden,
#                         overlay/, nf_tables + virtio modules, mosquitto
#   gatewarden-qemu-aarch64.img
#                         dd-able disk: MBR, p1 boot vfat (vmlinuz,
#                         initramfs.cpio.gz, cmdline.txt), p2 ext4 root (the
#                         same tree)
#   rootfs/               the tree both are made from
#
# Boot the initramfs (role only on the kernel command line):
#   qemu-system-aarch64 -M virt -cpu cortex-a72 -m 512 -nographic \
#     -kernel DIR/vmlinuz -initrd DIR/initramfs.cpio.gz \
#     -append "console=ttyAMA0 gatewarden.role=monitor" \
#     -netdev user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:8080-:8080 \
#     -device virtio-net-pci,netdev=n0
# Boot the disk image: the same, plus
#     -drive file=DIR/gatewarden-qemu-aarch64.img,format=raw,if=virtio
#   and root=/dev/vda2 on the kernel command line.
#
# Downloads (.deb files) are cached in $GATEWARDEN_CACHE, default
# ${XDG_CACHE_HOME:-$HOME/.cache}/gatewarden; nothing is written into the
# repository except under --out. Needs: apt-get with arm64 enabled
# (dpkg --add-architecture arm64), dpkg-deb, kmod, cpio, dosfstools, mtools,
# e2fsprogs, fdisk, binutils-aarch64-linux-gnu, qemu-user-static. As root,
# missing ones are installed.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

repo=$(cd "$(dirname "$0")/.." && pwd)
out=$repo/target/images
binary=""
mosquitto=1
bundle=""
while (($#)); do
    case "$1" in
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        --no-mosquitto) mosquitto=0; shift ;;
        --bundle) bundle=${2:?--bundle needs a directory}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
cache=${GATEWARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gatewarden}
debs=$cache/debs
mkdir -p "$debs"
say() { echo "==> $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }
t0=$(date +%s)

# --- host tools ------------------------------------------------------------
need=()
for pair in dpkg-deb:dpkg depmod:kmod cpio:cpio mkfs.vfat:dosfstools mcopy:mtools mke2fs:e2fsprogs \
    sfdisk:fdisk aarch64-linux-gnu-readelf:binutils-aarch64-linux-gnu qemu-aarch64-static:qemu-user-static \
    gzip:gzip file:file; do
    PATH=$PATH:/usr/sbin:/sbin command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    [[ $(id -u) -eq 0 ]] || die "arm64 packages are not enabled. Run: sudo dpkg --add-architecture arm64 && sudo apt-get update"
    say "enabling arm64 packages (dpkg --add-architecture arm64)"
    dpkg --add-architecture arm64
    apt_updated=0
fi
if ((${#need[@]})) || [[ ${apt_updated-1} == 0 ]]; then
    [[ $(id -u) -eq 0 ]] || die "missing host tools; install them: sudo apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    if ((${#need[@]})); then
        say "installing ${need[*]}"
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
fi
export PATH=$PATH:/usr/sbin:/sbin
if ! apt-cache show busybox-static:arm64 >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || die "apt knows no arm64 packages yet. Run: sudo apt-get update"
    apt-get update -qq
fi

# --- downloads -------------------------------------------------------------
# fetch PKG...: make sure PKG_*_arm64.deb is in the cache (apt-get download).
fetch() {
    local missing=() p
    for p in "$@"; do
        compgen -G "$debs/${p}_*_arm64.deb" >/dev/null || missing+=("$p:arm64")
    done
    ((${#missing[@]})) || return 0
    say "downloading ${missing[*]}"
    # grep's own status says nothing (it is 1 when every line was filtered out):
    # apt-get's status and the files themselves decide.
    local rc=0
    (cd "$debs" && apt-get download -qq "${missing[@]}" 2>&1) >"$debs/.download.log" || rc=$?
    grep -v '^W: Download is performed unsandboxed' "$debs/.download.log" >&2 || true
    if ((rc)); then
        say "apt-get download failed (exit $rc); refreshing the package lists and trying once more"
        apt-get update -qq || true
        (cd "$debs" && apt-get download -qq "${missing[@]}") ||
            die "apt-get download ${missing[*]} failed. Check the network and run 'apt-get update'"
    fi
    for p in "$@"; do
        compgen -G "$debs/${p}_*_arm64.deb" >/dev/null || die "apt-get download left no ${p}_*_arm64.deb in $debs"
    done
}
# deb PKG: path of the cached .deb (newest if several).
deb() { ls -1 "$debs/${1}"_*_arm64.deb | sort -V | tail -n 1; }

kpkg=${GATEWARDEN_KERNEL_PKG:-$(apt-cache depends linux-image-cloud-arm64:arm64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ {sub(":arm64", "", $2); print $2; exit}')}
[[ -n $kpkg ]] || die "cannot find Debian's cloud-arm64 kernel package. Run 'apt-get update', or set GATEWARDEN_KERNEL_PKG=linux-image-<version>-cloud-arm64"
fetch "$kpkg" busybox-static
mosq_pkgs=()
if ((mosquitto)); then
    # mosquitto and every library package it depends on, recursively.
    mapfile -t mosq_pkgs < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances --no-pre-depends mosquitto:arm64 2>/dev/null |
        grep -E '^(mosquitto|lib[^ ]*):arm64$' | sed 's/:arm64$//' | sort -u)
    ((${#mosq_pkgs[@]})) || die "apt-cache knows no mosquitto:arm64. Run 'apt-get update', or pass --no-mosquitto"
    fetch "${mosq_pkgs[@]}"
fi

# --- kernel and modules ----------------------------------------------------
kdir=$cache/kernel/$kpkg
if [[ ! -f $kdir/.done ]]; then
    say "unpacking $kpkg"
    rm -rf "$kdir"
    mkdir -p "$kdir"
    dpkg-deb -x "$(deb "$kpkg")" "$kdir"
    kver=$(ls "$kdir/lib/modules")
    depmod -b "$kdir" "$kver"
    touch "$kdir/.done"
fi
kver=$(ls "$kdir/lib/modules")
[[ -f $kdir/boot/vmlinuz-$kver ]] || die "$kpkg has no /boot/vmlinuz-$kver; delete $kdir and retry"

# --- binary ----------------------------------------------------------------
if [[ -z $binary ]]; then
    binary=$("$repo/tools/cross-build.sh" --print-path)
fi
[[ -f $binary ]] || die "no gatewarden binary at $binary; run tools/cross-build.sh"
desc=$(file -b "$binary")
[[ $desc == *"ARM aarch64"* && ($desc == *"statically linked"* || $desc == *"static-pie linked"*) ]] ||
    die "$binary is not a static aarch64 executable ($desc); build it with tools/cross-build.sh"

# --- root filesystem -------------------------------------------------------
root=$out/rootfs
say "assembling $root"
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,dev,proc,sys,tmp,run,root,mnt,var/log,etc}
chmod 1777 "$root/tmp"
ln -s ../run "$root/var/run"

bb=$cache/busybox
rm -rf "$bb"
dpkg-deb -x "$(deb busybox-static)" "$bb"
install -m 0755 "$bb/bin/busybox" "$root/bin/busybox"
# Every applet at the path busybox itself names (run through qemu-user).
while read -r applet; do
    [[ -e $root/$applet || -L $root/$applet ]] && continue
    mkdir -p "$root/$(dirname "$applet")"
    rel=$(realpath -m --relative-to="$root/$(dirname "$applet")" "$root/bin/busybox")
    ln -s "$rel" "$root/$applet"
done < <(qemu-aarch64-static "$root/bin/busybox" --list-full)
[[ -L $root/sbin/init && -L $root/bin/sh ]] || die "busybox-static did not provide init and sh"

install -m 0755 "$binary" "$root/usr/bin/gatewarden"
cp -a "$repo/overlay/." "$root/"
install -m 0755 "$repo/tools/image/init" "$root/init"
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
mosquitto:x:100:101:mosquitto:/var/empty:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
tty:x:5:
mosquitto:x:101:
nogroup:x:65534:
EOF
# No password login: the console asks for one and none is set. Images for
# real use set it with Buildroot (BR2_TARGET_GENERIC_ROOT_PASSWD) or add keys.
printf 'root:*:19000:0:99999:7:::\nmosquitto:*:19000::::::\nnobody:*:19000::::::\n' >"$root/etc/shadow"
chmod 0600 "$root/etc/shadow"
mkdir -p "$root/var/empty"

# Every config the image ships must be accepted by the binary it ships.
for f in "$root"/etc/gatewarden/*.toml; do
    qemu-aarch64-static "$root/usr/bin/gatewarden" config check "$f" >/dev/null ||
        die "the shipped binary rejects $f (see above); fix overlay/etc/gatewarden/$(basename "$f")"
done
if [[ -n $bundle ]]; then
    [[ -f $bundle/etc/gatewarden/node.toml ]] ||
        die "--bundle $bundle has no etc/gatewarden/node.toml; make it with: gatewarden pki bundle NODE --broker HOST:PORT --out $bundle"
    cp -a "$bundle/." "$root/"
    say "provisioned: $(sed -n 's/^node_id = //p' "$root/etc/gatewarden/node.toml")"
fi

# Kernel modules: what overlay/etc/modules-load.d names, plus the block
# driver for the disk image and a few netfilter extras, with dependencies.
mods=(virtio_blk nft_reject_inet nft_fib_inet nf_log_syslog nft_quota nft_connlimit)
mapfile -t -O ${#mods[@]} mods < <(sed 's/#.*//; /^\s*$/d' "$repo"/overlay/etc/modules-load.d/*.conf)
for m in "${mods[@]}"; do
    deps=$(modprobe -d "$kdir" -S "$kver" --show-depends "$m" 2>/dev/null) || {
        grep -q "/$m\.ko" "$kdir/lib/modules/$kver/modules.builtin" ||
            die "kernel $kver has no module $m (named in overlay/etc/modules-load.d or make-image.sh)"
        continue
    }
    awk '$1 == "insmod" {print $2}' <<<"$deps" | while read -r ko; do
        rel=${ko#"$kdir"/}
        mkdir -p "$root/$(dirname "$rel")"
        cp "$ko" "$root/$rel"
    done
done
cp "$kdir/lib/modules/$kver"/modules.{builtin,builtin.modinfo,order} "$root/lib/modules/$kver/"
depmod -b "$root" "$kver"

# Mosquitto and exactly the shared libraries it needs (ELF DT_NEEDED closure).
if ((mosquitto)); then
    mq=$cache/mosquitto-tree
    rm -rf "$mq"
    mkdir -p "$mq"
    for p in "${mosq_pkgs[@]}"; do dpkg-deb -x "$(deb "$p")" "$mq"; done
    libdirs=(lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu lib usr/lib)
    copy_from_tree() { # copy_from_tree REL: file from the package tree, symlinks followed
        mkdir -p "$root/$(dirname "$1")"
        cp -L "$mq/$1" "$root/$1"
    }
    queue=(usr/sbin/mosquitto)
    declare -A seen=()
    interp=$(aarch64-linux-gnu-readelf -l "$mq/usr/sbin/mosquitto" | sed -n 's/.*Requesting program interpreter: \/\(.*\)]/\1/p')
    [[ -n $interp && -e $mq/$interp ]] || die "mosquitto's dynamic loader /$interp is not in the downloaded packages"
    copy_from_tree "$interp"
    while ((${#queue[@]})); do
        f=${queue[0]}
        queue=("${queue[@]:1}")
        [[ -n ${seen[$f]-} ]] && continue
        seen[$f]=1
        copy_from_tree "$f"
        for lib in $(aarch64-linux-gnu-readelf -d "$mq/$f" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
            found=""
            for d in "${libdirs[@]}"; do
                if [[ -e $mq/$d/$lib ]]; then found=$d/$lib; break; fi
            done
            [[ -n $found ]] || die "mosquitto needs $lib, which none of the downloaded packages has (${mosq_pkgs[*]}); pass --no-mosquitto or report this"
            queue+=("$found")
        done
    done
    say "mosquitto with ${#seen[@]} ELF files ($(du -sh "$root/usr/sbin/mosquitto" | cut -f1) binary)"
fi

# --- kernel + initramfs ------------------------------------------------------
say "initramfs.cpio.gz"
cp "$kdir/boot/vmlinuz-$kver" "$out/vmlinuz"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 -n >"$out/initramfs.cpio.gz"

# --- dd-able disk: MBR, boot vfat, ext4 root --------------------------------
say "gatewarden-qemu-aarch64.img"
work=$out/.disk
rm -rf "$work"
mkdir -p "$work"
cat >"$work/cmdline.txt" <<'EOF'
console=ttyAMA0 root=/dev/vda2 rootwait gatewarden.role=monitor
EOF
boot_mib=64
truncate -s ${boot_mib}M "$work/boot.vfat"
mkfs.vfat -n GW-BOOT "$work/boot.vfat" >/dev/null
mcopy -i "$work/boot.vfat" "$out/vmlinuz" "$out/initramfs.cpio.gz" "$work/cmdline.txt" ::
root_mib=$(($(du -sm "$root" | cut -f1) * 13 / 10 + 32))
mke2fs -q -t ext4 -L gw-root -d "$root" -E root_owner=0:0 "$work/root.ext4" "${root_mib}M" >/dev/null 2>&1 ||
    die "mke2fs -d failed; run it by hand to see why: mke2fs -t ext4 -d $root $work/root.ext4 ${root_mib}M"
img=$out/gatewarden-qemu-aarch64.img
rm -f "$img"
truncate -s $((1 + boot_mib + root_mib))M "$img"
sfdisk -q "$img" <<EOF
label: dos
start=1MiB, size=${boot_mib}MiB, type=c, bootable
start=$((1 + boot_mib))MiB, size=${root_mib}MiB, type=83
EOF
dd if="$work/boot.vfat" of="$img" bs=1M seek=1 conv=notrunc status=none
dd if="$work/root.ext4" of="$img" bs=1M seek=$((1 + boot_mib)) conv=notrunc status=none
rm -rf "$work"

say "done in $(($(date +%s) - t0))s:"
for f in vmlinuz initramfs.cpio.gz gatewarden-qemu-aarch64.img; do
    printf '    %-30s %10d bytes\n' "$f" "$(stat -c %s "$out/$f")" >&2
done
printf '    %-30s %10s\n' "rootfs/ (unpacked)" "$(du -sh "$root" | cut -f1)" >&2
