#!/usr/bin/env bash
# Build the static aarch64 gatewarden binary that every appliance image ships.
#
# Usage: tools/cross-build.sh [--print-path] [--debian] [-h|--help]
#
#   (default)      rustup target aarch64-unknown-linux-musl, linked and with C
#                  code (ring) compiled by gcc-aarch64-linux-gnu.
#   --debian       Debian's toolchain instead of rustup (rustc-web, cargo-web,
#                  libstd-rust-web-dev:arm64, libc6-dev-arm64-cross), target
#                  aarch64-unknown-linux-gnu with +crt-static. Chosen
#                  automatically when rustup cannot add the musl target.
#   --print-path   print only the binary's path on stdout (progress on stderr).
#
# The result is checked with `file`: it must be a statically linked ARM aarch64
# executable, or the script fails. Its size is printed.
#
# Environment: CARGO_TARGET_DIR is honoured (default: target/ in the repo).
# As root, missing Debian packages are installed; otherwise the script names them.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

print_path=0
mode=auto
for arg in "$@"; do
    case "$arg" in
        --print-path) print_path=1 ;;
        --debian) mode=debian ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown argument $arg" >&2; usage >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
say() { echo "==> $*" >&2; }

install_pkgs() {
    local missing=()
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "error: missing Debian packages: ${missing[*]}. Install them: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ring (TLS for the node bus) compiles C: it needs the aarch64 libc headers too.
install_pkgs gcc-aarch64-linux-gnu libc6-dev-arm64-cross file

if [[ $mode == auto ]]; then
    if command -v rustup >/dev/null &&
        { rustup target list --installed | grep -qx aarch64-unknown-linux-musl ||
            rustup target add aarch64-unknown-linux-musl >&2; }; then
        mode=rustup
    else
        say "rustup cannot provide aarch64-unknown-linux-musl; falling back to Debian's rustc-web"
        mode=debian
    fi
fi

target_dir=${CARGO_TARGET_DIR:-$PWD/target}
start=$(date +%s)
# The appliance binary is built for size: whole-program LTO, one codegen unit,
# opt-level "s" (thin LTO/opt 3: 14.6 MB; this: 8.9 MB stripped with the
# TFLite runtime in). opt-level "z" makes it 8.1 MB but costs 54 % more
# instructions per packet (docs/PERFORMANCE.md "The workspace split"), too
# much for the packet path, so only the crates off it get "z". The settings
# live in tools/size-profile.toml (a Cargo config file), which the Buildroot
# package reads too, so the image ships the same binary. The three
# CARGO_PROFILE_RELEASE_{LTO,CODEGEN_UNITS,OPT_LEVEL} variables, when set,
# win over its lines, e.g. CARGO_PROFILE_RELEASE_OPT_LEVEL=z for the smallest
# binary.
cargo_config=(--config tools/size-profile.toml)
for key in LTO CODEGEN_UNITS OPT_LEVEL; do
    var=CARGO_PROFILE_RELEASE_$key
    [[ -n ${!var:-} ]] || continue
    # A --config value is TOML: quote strings, leave numbers and booleans bare.
    value=${!var}
    [[ $value =~ ^([0-9]+|true|false)$ ]] || value="\"$value\""
    name=${key,,}
    cargo_config+=(--config "profile.release.${name//_/-}=$value")
done
if [[ $mode == rustup ]]; then
    target=aarch64-unknown-linux-musl
    say "cargo build --release --target $target (rustup toolchain, gcc-aarch64-linux-gnu as linker)"
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
        CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
        AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar \
        cargo build "${cargo_config[@]}" --release --locked --target "$target" --bin gatewarden >&2
else
    target=aarch64-unknown-linux-gnu
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        [[ $(id -u) -eq 0 ]] || { echo "error: run 'sudo dpkg --add-architecture arm64 && sudo apt-get update' first" >&2; exit 1; }
        dpkg --add-architecture arm64
    fi
    install_pkgs rustc-web cargo-web libstd-rust-web-dev:arm64 libc6-dev-arm64-cross
    say "cargo build --release --target $target (Debian rustc-web, +crt-static)"
    RUSTC=/usr/bin/rustc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
        CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
        /usr/bin/cargo build "${cargo_config[@]}" --release --locked --target "$target" --bin gatewarden >&2
fi
elapsed=$(($(date +%s) - start))

bin="$target_dir/$target/release/gatewarden"
[[ -x $bin ]] || { echo "error: cargo finished but $bin is missing" >&2; exit 1; }
desc=$(file -b "$bin")
if [[ $desc != *"ARM aarch64"* || $desc != *"statically linked"* && $desc != *"static-pie linked"* ]]; then
    echo "error: $bin is not a statically linked ARM aarch64 executable: $desc" >&2
    exit 1
fi
# The release profile strips; make sure of it for the size report.
if [[ $desc == *"not stripped"* ]]; then
    aarch64-linux-gnu-strip "$bin"
fi
size=$(stat -c %s "$bin")
say "$bin"
say "  $(file -b "$bin")"
say "  stripped size: $size bytes ($(((size + 524288) / 1048576)) MiB), build took ${elapsed}s"
if ((print_path)); then
    echo "$bin"
fi
