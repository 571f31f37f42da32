#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian/Ubuntu machine (run as root or with sudo).
# Real SIP peers come from Debian: SIPp (sip-tester), sipsak, Kamailio, baresip (baresip-core), tshark;
# the DNS tests' server is dnsmasq (dnsmasq-base); the realtime tests' database is PostgreSQL; the
# cluster tests' coordinators are etcd (etcd-server) and Redis; the
# dashboard is tested in Debian's chromium, driven by Playwright (never `playwright install`); valgrind
# (callgrind) counts the daemon's instructions in bench/bench_instructions.py.
# Python packages go into the current Python, or into ./.venv when that Python is
# "externally managed" (PEP 668, Debian's own python3); scripts/test.sh uses ./.venv if present.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    sip-tester sipsak kamailio kamailio-tls-modules kamailio-websocket-modules chromium baresip-core dnsmasq-base tshark iproute2 iptables conntrack iputils-ping sqlite3 openssl ca-certificates postgresql etcd-server redis-server valgrind \
    >/dev/null
PY=python3
if python3 -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
    $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv .venv
    PY=.venv/bin/python3
fi
$PY -m pip install -q --upgrade pip
$PY -m pip install -q -e '.[test]'
for b in sipp sipsak kamailio baresip dnsmasq tshark chromium etcd redis-server valgrind; do
    command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || { echo "install-test-deps: $b missing after apt-get" >&2; exit 1; }
done
# PostgreSQL for tests/realtime/ and tests/store/ (the PostgreSQL store): Debian keeps initdb and pg_ctl in /usr/lib/postgresql/*/bin
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "install-test-deps: postgresql (initdb) missing after apt-get" >&2; exit 1; }
