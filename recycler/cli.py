"""The `recycler` command. Bad input ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from recycler.errors import RecyclerError

EXIT_BAD_INPUT = 2


def _parse_weights(items: list[str]) -> dict[str, float]:
    weights: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            weights[name] = float(value)
        except ValueError:
            raise RecyclerError(f"--weight {item!r}: expected NAME=NUMBER") from None
    return weights


def _cmd_validate(args: argparse.Namespace) -> None:
    from recycler.pool import load_pool
    from recycler.spec import load_spec

    pool = load_pool(load_spec(args.spec))
    print(f"pool: {len(pool.checkpoints)} checkpoints{' + base ' + pool.base.name if pool.base else ''}, "
          f"{len(pool.tensor_names)} tensors, {pool.parameter_count:,} parameters, {pool.dtype}")
    print(f"fingerprint: {pool.fingerprint()}")


def _cmd_merge(args: argparse.Namespace) -> None:
    from recycler.export import check_export_target, export_merge
    from recycler.merge import MergeRecipe, ResidentMerger
    from recycler.pool import load_pool
    from recycler.spec import load_spec

    recipe = MergeRecipe(_parse_weights(args.weight), relative=args.relative)
    check_export_target(Path(args.out).resolve(), args.force)
    pool = load_pool(load_spec(args.spec))
    recipe.coefficients(pool)
    out = export_merge(ResidentMerger(pool), recipe, args.out, max_shard_size=args.max_shard_size, overwrite=args.force)
    print(f"exported {recipe.method} merge to {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recycler", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check a pool spec and its checkpoints; print the fingerprint")
    validate.add_argument("spec", help="pool spec YAML")
    validate.set_defaults(handler=_cmd_validate)

    merge = commands.add_parser("merge", help="export one merge with the weights given")
    merge.add_argument("spec", help="pool spec YAML")
    merge.add_argument("--weight", action="append", default=[], metavar="NAME=W", help="a checkpoint's weight (repeat)")
    merge.add_argument("--relative", action="store_true", help="task arithmetic: weights apply to θᵢ − θ_base")
    merge.add_argument("--out", required=True, help="folder to write the HF checkpoint to")
    merge.add_argument("--max-shard-size", default="2GB", help="largest safetensors shard (default 2GB)")
    merge.add_argument("--force", action="store_true", help="replace a non-empty --out")
    merge.set_defaults(handler=_cmd_merge)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except RecyclerError as error:
        print(f"recycler: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("recycler: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
