#!/usr/bin/env bash
# Create .venv and install recycler into it (editable), torch pinned to the CPU wheel by constraints.txt.
# Usage: bash scripts/install.sh [EXTRAS]   e.g. bash scripts/install.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
target="."
[ -n "${1:-}" ] && target=".[$1]"
.venv/bin/pip install --quiet -c constraints.txt -e "$target" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python -c "import recycler, torch, optuna, ray, lm_eval" 
