#!/usr/bin/env bash
# Installs the command-line tools the test suite uses beyond Python packages, when missing:
#   promtool  (Debian package `prometheus`): checks and unit-tests deploy/prometheus, lints /metrics.
# Idempotent and quick when everything is there; needs root (or sudo) and apt-get only when something
# is missing. The Prometheus server that comes with the package is never started.
set -euo pipefail

log() { printf '[install-tools] %s\n' "$*" >&2; }

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "promtool missing and no apt-get here: install Prometheus' promtool by hand (deploy tests will skip)"
    exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        log "promtool missing and not root: run 'apt-get install -y prometheus' as root (deploy tests will skip)"
        exit 0
    fi
fi

# Keep the package's service from starting (policy-rc.d exit 101 = "action forbidden").
policy=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    added_policy=1
fi
cleanup() {
    if [[ $added_policy -eq 1 ]]; then
        $SUDO rm -f "$policy"
    fi
}
trap cleanup EXIT

log "installing promtool (Debian package prometheus)"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends prometheus >/dev/null; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y --no-install-recommends prometheus >/dev/null
fi
command -v promtool >/dev/null
log "$(promtool --version 2>&1 | head -n 1)"
