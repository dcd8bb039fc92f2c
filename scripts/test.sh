#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh --test) and runs the whole test suite: lint, types, pytest.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k conv1x1
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
# pytest exits 5 when it collected no test: that is a failure here, not a pass.
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
    echo "pytest collected no tests: failing" >&2
fi
exit "$rc"
