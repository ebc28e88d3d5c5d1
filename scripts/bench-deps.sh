#!/usr/bin/env bash
# Installs the baselines fedbench compares fedsync with: etcd (Debian package
# etcd-server) and NATS server with JetStream (Debian package nats-server).
# Idempotent: installs only what is missing. Needs root (or sudo) and apt-get.
# fedbench starts both itself, on loopback, when their binaries are on PATH; the
# packages' system services are not needed and are not started here.
set -euo pipefail

want=()
command -v etcd >/dev/null 2>&1 || want+=(etcd-server)
command -v nats-server >/dev/null 2>&1 || want+=(nats-server)

if [ ${#want[@]} -eq 0 ]; then
  echo "bench-deps: etcd $(etcd --version 2>/dev/null | head -1 | awk '{print $3}') and nats-server $(nats-server --version 2>/dev/null | awk '{print $2}') already installed"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "bench-deps: apt-get not found; install ${want[*]} (etcd 3.4+, nats-server 2.9+) with your package manager" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "bench-deps: run as root or install sudo" >&2; exit 1; }
  SUDO=sudo
fi

echo "bench-deps: installing ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
# Do not let the packages start their system services (fedbench runs its own
# instances on free loopback ports); policy-rc.d is restored afterwards.
policy=/usr/sbin/policy-rc.d
restore=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  restore=yes
fi
cleanup() { if [ -n "$restore" ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

$SUDO apt-get update -qq
$SUDO apt-get -y -qq install --no-install-recommends "${want[@]}"

command -v etcd >/dev/null && command -v nats-server >/dev/null || {
  echo "bench-deps: etcd or nats-server still missing after the install" >&2
  exit 1
}
echo "bench-deps: etcd $(etcd --version | head -1 | awk '{print $3}'), nats-server $(nats-server --version | awk '{print $2}')"
