#!/usr/bin/env bash
# Install recycler with its test dependencies into .venv and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q "$@"
