#!/usr/bin/env bash
# Sets up everything onebyone needs in ./.venv (idempotent).
#   bash scripts/setup.sh          the package and its runtime dependencies
#   bash scripts/setup.sh --test   plus the test tools and Chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
want_browser=0
if [ "${1:-}" = "--test" ]; then
    extras="[test]"
    want_browser=1
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# constraints.txt pins torch to the CPU build for this kind of machine.
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".${extras}"

if [ "$want_browser" = 1 ] && [ ! -x /usr/bin/chromium ]; then
    echo "installing Debian's chromium for the browser tests"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
