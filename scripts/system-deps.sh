#!/usr/bin/env bash
# The lab's system tools: iptables (DNAT for Service addresses) and ip (iproute2:
# network namespaces, veth pairs, bridges). Installs what is missing when run as
# root on Debian; otherwise says what is missing and carries on (the lab then
# exits 2 and its tests skip, each with the reason).
set -euo pipefail

# Root's tools live in /usr/sbin, which a non-root PATH often lacks.
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

missing=()
have iptables || missing+=(iptables)
have ip || missing+=(iproute2)
have setpriv || missing+=(util-linux)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing ${missing[*]}; install them as root (apt-get install ${missing[*]})" \
        "to run the lab. Continuing." >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -q --no-install-recommends "${missing[@]}"; }
# A fresh machine has no package lists; stale lists make install fail: update then.
if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null || ! install; then
    apt-get update -q
    install
fi
