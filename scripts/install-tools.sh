#!/usr/bin/env bash
# Installs the command-line tools the test suite uses beyond Python packages, when missing:
#   helm      (built from the Go module proxy into var/tools/bin, where tests/deploy/test_helm.py looks first):
#             lints and renders deploy/helm/churnsignal. Needs the Go toolchain; the first build takes a few
#             minutes, later runs find it there and do nothing.
#   promtool  (Debian package `prometheus`): checks and unit-tests deploy/prometheus, lints /metrics.
#   amtool    (Debian package `prometheus-alertmanager`): checks deploy/alertmanager/alertmanager.yml.
#   chromium and chromedriver (Debian packages `chromium`, `chromium-driver`): the browser test of the
#             web pages (tests/service/ui), which drives /usr/bin/chromium through /usr/bin/chromedriver and never
#             downloads a browser or a driver.
# Idempotent and quick when everything is there; needs root (or sudo) and apt-get only when a Debian
# package is missing. The Prometheus and Alertmanager servers that come with the packages are never started.
set -euo pipefail

log() { printf '[install-tools] %s\n' "$*" >&2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_BIN="$ROOT/var/tools/bin"
HELM_VERSION=v3.22.0
# The Kubernetes version `helm template` and `helm lint` assume by default: the official build derives it
# from the k8s.io/client-go version in Helm's go.mod (v0.37 -> 1.37); a plain `go install` would leave 1.20.
HELM_KUBE_MINOR=37

install_helm() {
    local helm="$TOOLS_BIN/helm"
    if [[ -x $helm ]] && [[ $("$helm" version --template '{{.Version}}' 2>/dev/null) == "$HELM_VERSION" ]]; then
        return 0
    fi
    local go
    go=$(command -v go || true)
    if [[ -z $go && -x /usr/local/go/bin/go ]]; then
        go=/usr/local/go/bin/go
    fi
    if [[ -z $go ]]; then
        log "helm missing and no Go toolchain: install Go, or put helm $HELM_VERSION in $TOOLS_BIN" \
            "(the Helm tests will skip)"
        return 0
    fi
    log "building helm $HELM_VERSION into $TOOLS_BIN from the Go module proxy (a few minutes the first time)"
    mkdir -p "$TOOLS_BIN"
    local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    local package
    for package in pkg/chartutil pkg/lint/rules; do
        ldflags+=" -X helm.sh/helm/v3/$package.k8sVersionMajor=1 -X helm.sh/helm/v3/$package.k8sVersionMinor=$HELM_KUBE_MINOR"
    done
    GOBIN="$TOOLS_BIN" GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
        "$go" install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    log "helm $("$helm" version --template '{{.Version}}') in $TOOLS_BIN"
}

install_helm

packages=()
if ! command -v promtool >/dev/null 2>&1; then
    packages+=(prometheus)
fi
if ! command -v amtool >/dev/null 2>&1; then
    packages+=(prometheus-alertmanager)
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
command -v amtool >/dev/null
log "$(amtool --version 2>&1 | head -n 1)"
test -x /usr/bin/chromium && test -x /usr/bin/chromedriver
log "$(/usr/bin/chromium --version 2>/dev/null | head -n 1); $(/usr/bin/chromedriver --version 2>/dev/null | head -n 1)"
