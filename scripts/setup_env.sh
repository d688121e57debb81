#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its test extras; sourced by test.sh / demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The online store's tests run a real redis-server on 127.0.0.1 (Debian's package).
if ! command -v redis-server >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null 2>&1 \
    || echo "warning: could not install redis-server (apt-get); the serving tests need it" >&2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -vE "is ignored|^\s*$" || true
