#!/usr/bin/env bash
# Install recycler as a user does and run a short job through the installed `recycler` command:
# a new virtual environment, `pip install` of the project (not editable, no extras, torch pinned by
# constraints.txt), then validate, search with the shipped `simplex` space and `demo` suite, front,
# export, verify, on a pool of tiny random checkpoints. A runtime dependency missing from
# pyproject.toml, or a shipped file missing from the package, fails here.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "pip install (no extras) into a new virtual environment"
# the project's files as git sees them (tracked, plus new ones not ignored), without build leftovers
mkdir "$work/src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work/src" 2>/dev/null) \
    || { echo "check_install: cannot copy the project's files from $repo" >&2; exit 1; }
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet -c "$repo/constraints.txt" "$work/src" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
bin="$work/venv/bin"
[ -x "$bin/recycler" ] || { echo "check_install: pip install did not install the recycler command" >&2; exit 1; }

cd "$work"  # away from the repository: only the installed package can be imported
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled TOKENIZERS_PARALLELISM=false

step "every shipped space and suite file, and the C kernel's source, is in the installed package"
"$bin/python" - "$work/src" <<'PY'
import sys
from pathlib import Path

import recycler.eval_suites
import recycler.search_spaces

source = Path(sys.argv[1])
missing = []
for package in (recycler.search_spaces, recycler.eval_suites):
    installed = Path(package.__file__).parent
    assert "site-packages" in installed.parts, f"{package.__name__} imported from {installed}, not the install"
    folder = source / package.__name__.split(".")[-1]
    shipped = [p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    missing += [f"{folder.name}/{p}" for p in shipped if not (installed / p).is_file()]
    print(f"{package.__name__}: {len(shipped)} files")
if missing:
    sys.exit(f"check_install: not in the installed package: {', '.join(missing)}")

from recycler import native_sum  # the C kernel's source ships in the package and builds from there

if "site-packages" not in native_sum.SOURCE.parts or native_sum.build() is None:
    sys.exit(f"check_install: the bfloat16 kernel does not build from the installed package ({native_sum.SOURCE})")
print(f"recycler.native_sum: built from {native_sum.SOURCE.name}")
PY

step "a pool of tiny random checkpoints"
"$bin/python" -m recycler.demo.tiny pool --count 3
"$bin/recycler" validate pool/pool.yaml

step "search: 8 trials, simplex space, demo suite"
"$bin/recycler" run pool/pool.yaml --study study --trials 8 --quiet

step "front, export, verify"
"$bin/recycler" front study --format json > front.json
trial="$("$bin/python" -c 'import json; print(next(t["trial"] for t in json.load(open("front.json"))["trials"] if t["on_front"]))')"
"$bin/recycler" export study --trial "$trial" --out export
"$bin/recycler" verify export
echo
echo "check_install: the installed recycler ran validate, run, front, export and verify"
