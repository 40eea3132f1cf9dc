#!/usr/bin/env bash
# Build a Debian bookworm base image from Debian's packages alone, for machines that reach no
# container registry (air-gapped servers): debootstrap a minimal root file system, then
# `docker import` it. Python 3.11, nginx (the gateway) and curl (healthchecks) come included,
# so no image built on top of it needs the network.
#
# Usage: compose/base/bootstrap.sh [IMAGE [EXTRA_PACKAGES]]
#   IMAGE defaults to onebox/base:bookworm and is kept if present; EXTRA_PACKAGES (comma-separated
#   Debian packages) go in too: the worker's base adds docker-compose, which it deploys with.
set -euo pipefail

image="${1:-onebox/base:bookworm}"
suite="${DEBIAN_SUITE:-bookworm}"
packages="python3,python3-venv,ca-certificates,nginx,curl,tini${2:+,$2}"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image is present"
  exit 0
fi

mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  # The mirror this machine's apt already uses (deb822 or one-line sources).
  mirror=$(grep -hoE '(URIs:|^deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
    | awk '{print $2}' | head -n 1 || true)
  mirror="${mirror:-http://deb.debian.org/debian}"
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: debootstrap is not installed; run: sudo apt-get install debootstrap" >&2
    exit 1
  fi
  # Each step checked on its own (set -e skips a failure left of &&); apt waits for a lock
  # another install holds (`make browser` at the same time) instead of failing.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq debootstrap >/dev/null
fi

rootfs=$(mktemp -d /tmp/onebox-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap $suite from $mirror (about a minute)"
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -20 "$rootfs.log" >&2
  exit 1
}
rm -f "$rootfs.log"
# The image needs no package lists or downloaded .deb files: nothing installs later.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "onebox base: debootstrap $suite minbase + $packages" \
  - "$image" >/dev/null
echo "built base image $image"
