#!/usr/bin/env bash
# Install recycler into .venv and run the demo: build the demo pool (cached), search it, print
# the front, export its most balanced member, write the HTML report. Arguments go to `recycler demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled TOKENIZERS_PARALLELISM=false
exec .venv/bin/recycler demo "$@"
