"""Build (or reuse) the demo pool, then print how its checkpoints trade skills against each other.

The pool lands where `recycler demo` looks for it (recycler-demo/pool/), so either reuses the other's build.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recycler.cli import quiet_libraries
from recycler.demo.build import build_demo_pool
from recycler.demo.tradeoffs import print_tradeoff_table

REPO_ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "recycler-demo" / "pool", help="pool folder")
    parser.add_argument("--force", action="store_true", help="rebuild even if a pool of the same recipe is there")
    args = parser.parse_args()
    quiet_libraries()
    print_tradeoff_table(build_demo_pool(args.out, force=args.force))


if __name__ == "__main__":
    main()
