#!/usr/bin/env bash
# One command from a fresh machine: install everything into .venv, then run the whole test suite and print
# its 20 slowest tests. Arguments go to pytest: `bash scripts/test.sh -m "not slow"` is the inner loop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export RAY_AUTH_MODE=disabled RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.2 SEGMENTS_PROGRESS=0
exec .venv/bin/python -m pytest --durations=20 "$@"
