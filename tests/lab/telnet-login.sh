#!/bin/sh
# The login program of the traffic lab's telnet service (busybox telnetd -l,
# started by tests/lab/harness.rs in the WAN namespace): the prompts of a
# camera's busybox login, three tries per connection, every password refused
# after a one-second delay. It never runs a shell: the lab measures password
# guessing (hydra telnet://), not a break-in, and the lab's namespaces share
# the host's filesystem, so a real /bin/login would check the host's accounts.
tries=0
while [ "$tries" -lt 3 ]; do
    printf 'lab-camera login: '
    IFS= read -r user || exit 0
    stty -echo 2>/dev/null
    printf 'Password: '
    IFS= read -r pass || exit 0
    stty echo 2>/dev/null
    sleep 1
    printf '\r\nLogin incorrect\r\n'
    tries=$((tries + 1))
done
