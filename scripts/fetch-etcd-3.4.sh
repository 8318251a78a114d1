#!/usr/bin/env bash
# etcd 3.4.23 from Debian (etcd-server, etcd-client), unpacked into .cache without
# installing a package or a service:
#   .cache/etcd-3.4.23/usr/bin/etcd     .cache/etcd-3.4.23/usr/bin/etcdctl
# Idempotent: does nothing when the binaries are there and report the version.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=3.4.23
DEBS=.cache/debs
DEST=.cache/etcd-$VERSION
ETCD=$DEST/usr/bin/etcd
ETCDCTL=$DEST/usr/bin/etcdctl

# Capture first, then match: `etcd --version | grep -q` under pipefail fails whenever
# grep exits before etcd has written everything (etcd dies of SIGPIPE).
reports_version() {
    local out
    [ -x "$ETCD" ] && out=$("$ETCD" --version 2>/dev/null) && grep -qx "etcd Version: $VERSION" <<<"$out"
}

if reports_version && [ -x "$ETCDCTL" ]; then
    exit 0
fi

command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 || {
    echo "fetch-etcd-3.4: needs apt-get and dpkg (Debian); etcd $VERSION comes from Debian's etcd-server" >&2
    exit 1
}

debs_present() {
    compgen -G "$DEBS/etcd-server_${VERSION}*.deb" >/dev/null &&
        compgen -G "$DEBS/etcd-client_${VERSION}*.deb" >/dev/null
}
download() {
    # As root, apt would hand the download to its sandbox user, who cannot write here.
    local sandbox=()
    [ "$(id -u)" -eq 0 ] && sandbox=(-o APT::Sandbox::User=root)
    (cd "$DEBS" && apt-get download -q "${sandbox[@]}" "etcd-server=${VERSION}*" "etcd-client=${VERSION}*")
}

mkdir -p "$DEBS"
if ! debs_present; then
    if ! download; then
        [ "$(id -u)" -eq 0 ] || {
            echo "fetch-etcd-3.4: apt-get download failed; as root run 'apt-get update' and retry" >&2
            exit 1
        }
        apt-get update -q
        download
    fi
fi

rm -rf "$DEST" "$DEST.partial"
mkdir -p "$DEST.partial"
for deb in "$DEBS"/etcd-server_"$VERSION"*.deb "$DEBS"/etcd-client_"$VERSION"*.deb; do
    dpkg -x "$deb" "$DEST.partial"
done
mv "$DEST.partial" "$DEST"

if ! reports_version; then
    echo "fetch-etcd-3.4: $ETCD does not report etcd Version: $VERSION:" >&2
    "$ETCD" --version >&2 || true
    exit 1
fi
echo "etcd $VERSION unpacked: $ETCD"
