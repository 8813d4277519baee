#!/usr/bin/env bash
# Installs the command-line tools the test suite uses beyond Python packages, when missing:
#   promtool  (Debian package `prometheus`): checks and unit-tests deploy/prometheus, lints /metrics.
#   chromium and chromedriver (Debian packages `chromium`, `chromium-driver`): the browser test of the
#             web pages (tests/service/ui), which drives /usr/bin/chromium through /usr/bin/chromedriver and never
#             downloads a browser or a driver.
# Idempotent and quick when everything is there; needs root (or sudo) and apt-get only when something
# is missing. The Prometheus server that comes with the package is never started.
set -euo pipefail

log() { printf '[install-tools] %s\n' "$*" >&2; }

packages=()
if ! command -v promtool >/dev/null 2>&1; then
    packages+=(prometheus)
fi
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    packages+=(chromium chromium-driver)
fi
if [[ ${#packages[@]} -eq 0 ]]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "missing: ${packages[*]} and no apt-get here: install them by hand (the tests that need them will skip)"
    exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        log "missing: ${packages[*]} and not root: run 'apt-get install -y --no-install-recommends ${packages[*]}'" \
            "as root (the tests that need them will skip)"
        exit 0
    fi
fi

# Keep the packages' services from starting (policy-rc.d exit 101 = "action forbidden").
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

log "installing ${packages[*]} (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null
fi
command -v promtool >/dev/null
log "$(promtool --version 2>&1 | head -n 1)"
test -x /usr/bin/chromium && test -x /usr/bin/chromedriver
log "$(/usr/bin/chromium --version 2>/dev/null | head -n 1); $(/usr/bin/chromedriver --version 2>/dev/null | head -n 1)"
