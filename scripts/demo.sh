#!/usr/bin/env bash
# One command from a fresh machine: install into .venv, then generate a sample and run the whole
# pipeline on a local Ray with local disk as the store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export RAY_AUTH_MODE=disabled
exec .venv/bin/segments demo "$@"
