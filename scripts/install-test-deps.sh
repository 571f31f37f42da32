#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian/Ubuntu machine (run as root or with sudo).
# Real SIP peers come from Debian: SIPp (sip-tester), sipsak, Kamailio, tshark.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    sip-tester sipsak kamailio tshark iproute2 sqlite3 >/dev/null
python3 -m pip install -q --upgrade pip
python3 -m pip install -q -e '.[test]'
