# Shared by the init scripts and the supervisor: kernel command-line
# parameters and logging. Source it: . /usr/lib/gatewarden/lib.sh
# BusyBox ash; no bashisms.

GW_CMDLINE=${GW_CMDLINE:-/proc/cmdline}

# gw_param NAME [DEFAULT]: the value of the last `gatewarden.NAME=` on the
# kernel command line (later parameters override earlier ones, as in the
# kernel), else DEFAULT.
gw_param() {
    _name="gatewarden.$1="
    _val=${2-}
    for _w in $(cat "$GW_CMDLINE" 2>/dev/null); do
        case "$_w" in
            "$_name"*) _val=${_w#"$_name"} ;;
        esac
    done
    _val=${_val#\"}
    echo "${_val%\"}"
}

# gw_role: the role named by gatewarden.role= (empty when absent). The
# binary reads the same parameter itself; scripts need it to pick the
# network layout and the default config file.
gw_role() {
    gw_param role ""
}

# gw_log TAG MESSAGE...: one line to the console and to syslog.
gw_log() {
    _tag=$1
    shift
    # Seconds since the kernel started, like the kernel's own lines, so a boot reads as a timeline.
    _up=$(cut -d" " -f1 /proc/uptime 2>/dev/null)
    echo "[${_up:-?}] $_tag: $*" >/dev/console 2>/dev/null || echo "$_tag: $*" >&2
    logger -t "$_tag" -- "$*" 2>/dev/null || true
}
