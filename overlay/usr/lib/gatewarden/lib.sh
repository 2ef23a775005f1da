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

# gw_config: the config gatewarden runs with (see /etc/init.d/S50gatewarden):
# the operator's /etc/gatewarden/gatewarden.toml, else the one S50gatewarden
# composed from the role's defaults in /run/gatewarden.
gw_config() {
    if [ -f /etc/gatewarden/gatewarden.toml ]; then
        echo /etc/gatewarden/gatewarden.toml
    else
        echo /run/gatewarden/gatewarden.toml
    fi
}

# gw_enforcing: succeeds unless the config says [enforce] enabled = false.
# A config that cannot be read counts as enforcing: then forwarding waits for
# a table that a fixed config brings, rather than running unprotected.
gw_enforcing() {
    _enabled=$(gatewarden config show -c "$(gw_config)" 2>/dev/null) || return 0
    _enabled=$(echo "$_enabled" | sed -n '/^\[enforce\]/,/^\[/ s/^enabled = //p')
    [ "$_enabled" != false ]
}

# gw_blocks_in_table: how many blocks gatewarden's nftables table holds; fails
# while the table is not in the kernel (gatewarden not started yet, or it
# could not install it).
gw_blocks_in_table() {
    _list=$(gatewarden blocks 2>/dev/null) || return 1
    echo "$_list" | sed -n 's/^\([0-9]*\) active block(s)$/\1/p'
}

# gw_forwarding ON|OFF: IPv4 and IPv6 forwarding between the interfaces.
gw_forwarding() {
    _v=0
    [ "$1" = on ] && _v=1
    echo $_v >/proc/sys/net/ipv4/ip_forward
    echo $_v >/proc/sys/net/ipv6/conf/all/forwarding 2>/dev/null
    return 0
}

# gw_forward_after_enforcement WAIT_S: turn forwarding on once gatewarden's
# table is in the kernel. The table is installed in one transaction with the
# blocks saved before a restart or reboot (enforce.state_file), so no packet
# is forwarded before they are back. Waits up to WAIT_S seconds and prints
# what happened for the caller's log line; after that a background job keeps
# waiting and turns forwarding on (and says so) when the table appears.
gw_forward_after_enforcement() {
    if ! gw_enforcing; then
        gw_forwarding on
        echo "(enforcement is off in $(gw_config))"
        return 0
    fi
    _deadline=$(($(cut -d. -f1 /proc/uptime) + $1))
    while :; do
        if _n=$(gw_blocks_in_table); then
            gw_forwarding on
            echo "(after enforcement ready: ${_n:-0} blocks in table inet gatewarden)"
            return 0
        fi
        [ "$(cut -d. -f1 /proc/uptime)" -ge "$_deadline" ] && break
        sleep 0.2
    done
    (until _n=$(gw_blocks_in_table); do sleep 1; done
        gw_forwarding on
        gw_log network "forwarding on: enforcement ready at last (${_n:-0} blocks in table inet gatewarden)") \
        </dev/null >/dev/null 2>&1 &
    echo "(held off: gatewarden's table inet gatewarden is not in the kernel after $1 s; see logread. Forwarding starts when it is)"
}
