#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its test extras; sourced by test.sh / demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -vE "is ignored|^\s*$" || true
