"""Build (or reuse) the demo pool, then print how its checkpoints trade skills against each other."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers.utils import logging  # noqa: E402

from recycler.demo.build import build_demo_pool  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "demo_pool", help="pool folder (default: demo_pool/)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a pool of the same recipe is there")
    args = parser.parse_args()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    pool_yaml = build_demo_pool(args.out, force=args.force)
    try:
        from recycler.evaluate import print_tradeoff_table
    except ImportError:
        print(f"{pool_yaml}: no scorer installed, skipping the trade-off table")
        return
    print_tradeoff_table(pool_yaml)


if __name__ == "__main__":
    main()
