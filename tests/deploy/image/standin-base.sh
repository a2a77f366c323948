#!/usr/bin/env bash
# Build a stand-in for python:3.11-slim-bookworm from Debian's own packages, for hosts that can
# reach Debian's archive but no container registry:
#
#   tests/deploy/image/standin-base.sh ENGINE TAG
#
# debootstrap's minbase of bookworm with Debian's python3.11 (3.11.2), venv, CA certificates and
# `python` on the PATH, imported as TAG with the environment the official image sets. The host's
# locally added CA certificates (where update-ca-certificates reads them) are trusted inside too,
# so pip works behind a TLS-intercepting proxy. The image is labelled, so the harness can tell it
# from the real one later. Needs root (debootstrap).
set -euo pipefail

engine=${1:?usage: $0 ENGINE TAG}
tag=${2:?usage: $0 ENGINE TAG}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

command -v debootstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
}
packages=python3,python3-venv,python3.11-venv,python-is-python3,ca-certificates,netbase,tzdata
debootstrap --variant=minbase --include="$packages" bookworm "$root" >"$root.log" 2>&1 ||
    { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"

shopt -s nullglob
extra=(/usr/local/share/ca-certificates/*.crt)
if ((${#extra[@]})); then
    cp "${extra[@]}" "$root/usr/local/share/ca-certificates/"
    # Quiet: it warns about the bundle it writes, which is not a certificate to add.
    chroot "$root" update-ca-certificates >/dev/null 2>&1 ||
        { echo "$0: update-ca-certificates failed in the stand-in" >&2; exit 1; }
fi
# Nothing of the package manager's caches or lists is needed in a base image.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

tar -C "$root" -c . | "$engine" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'LABEL org.vit-service.stand-in=debootstrap-bookworm' \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
