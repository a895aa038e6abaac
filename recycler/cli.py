"""The `recycler` command. Bad input ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

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
    from recycler.workers import worker_device
    from recycler.errors import format_bytes
    from recycler.merge import MemoryNeeds
    from recycler.pool import load_pool
    from recycler.spec import load_spec

    spec = load_spec(args.spec)
    pool = load_pool(spec)
    pool.check_finite()
    print(f"pool: {len(pool.checkpoints)} checkpoints{' + base ' + pool.base.name if pool.base else ''}, "
          f"{len(pool.tensor_names)} tensors, {pool.parameter_count:,} parameters, {pool.dtype}")
    device = worker_device(spec)
    needs = MemoryNeeds.of(pool, device)
    print(f"a {device.type} worker needs {format_bytes(needs.streamed)} with the pool streamed from the page cache, "
          f"{format_bytes(needs.resident)} with it stacked (resources.memory_per_worker: {spec.resources.memory_per_worker})")
    print(f"fingerprint: {pool.fingerprint()}")


def _cmd_merge(args: argparse.Namespace) -> None:
    from recycler.export import check_export_target, export_merge
    from recycler.merge import Merger
    from recycler.pool import load_pool
    from recycler.recipes import LinearRecipe
    from recycler.spec import load_spec

    recipe = LinearRecipe(_parse_weights(args.weight), relative=args.relative)
    check_export_target(Path(args.out).resolve(), args.force)
    pool = load_pool(load_spec(args.spec))
    recipe.check(pool)
    pool.check_finite()
    out = export_merge(Merger(pool), recipe, args.out, max_shard_size=args.max_shard_size, overwrite=args.force)
    print(f"exported {recipe.method} merge to {out}")


def _cmd_run(args: argparse.Namespace) -> None:
    from recycler.search import run_search
    from recycler.spec import load_spec

    spec = load_spec(args.spec)
    if args.trials is not None:
        spec = spec.model_copy(update={"search": spec.search.model_copy(update={"trials": args.trials})})
    folder = Path(args.study or Path("studies") / spec.name)
    address = args.address or os.environ.get("RAY_ADDRESS")
    run_search(spec, folder, storage=args.storage, address=address, progress=not args.quiet)
    _print_front(folder, "table")
    print(f"study: {folder}")


def _print_front(folder: Path, fmt: str, include_all: bool = False, *, where: list[str] = (), preference: str | None = None,
                 limit: int | None = None, wide: bool = False, examples: int | None = None, beside: str | None = None) -> None:
    import json

    from recycler.compare import examples_text, with_examples
    from recycler.front import front_document, front_records, front_table
    from recycler.selection import narrow, select
    from recycler.study import load_study

    if examples is not None and fmt == "csv":
        raise RecyclerError("--examples: with --format table or json (a CSV holds one table)")
    study, info = load_study(folder)
    records = narrow(front_records(study, info, include_all=include_all), info, where=where, preference=preference,
                     limit=limit, front_only=not include_all)
    records = with_examples(folder, records, info, examples, beside)
    if fmt == "json":
        print(json.dumps(front_document(info, records), indent=2))
    elif fmt == "csv":
        print(front_table(records, info, wide=True).to_csv(index=False), end="")
    elif not records:
        print(_no_trials_yet(study, folder))
    else:
        if (where or preference is not None or limit is not None) and not select(
                records, info, where=where, preference=preference, limit=limit, front_only=not include_all):
            print(f"no {'trial' if include_all else 'front member'} meets {' '.join(where) or 'the selection'}; the "
                  "baselines are listed for reference")
        print(front_table(records, info, wide=wide).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        for record in records:
            if "examples" in record:
                print(examples_text(record))


def _no_trials_yet(study: Any, folder: Path) -> str:
    """A sentence for a study with no completed trial: how many it has, by state, and why the last
    one failed."""
    from collections import Counter

    from recycler.records import stored_trials

    trials = stored_trials(study)
    states = Counter(trial.state.name.lower() for trial in trials)
    held = ", ".join(f"{count} {state}" for state, count in sorted(states.items())) or "no trials"
    errors = [trial.error for trial in trials if trial.error is not None]
    last = f"; the last failure: {errors[-1]}" if errors else ""
    return f"{folder}: no trial has completed yet ({held}; run `recycler run` on its spec to go on){last}"


def _cmd_front(args: argparse.Namespace) -> None:
    _print_front(Path(args.study), args.format, args.all, where=args.where, preference=args.rank, limit=args.limit,
                 wide=args.wide, examples=args.examples, beside=args.beside)


def _cmd_export(args: argparse.Namespace) -> None:
    from recycler.export import check_export_target, export_trial

    check_export_target(Path(args.out).resolve(), args.force)
    which = args.trial if args.baseline is None else args.baseline
    if args.pick is not None:
        which = _picked_trial(Path(args.study), args.pick, args.where)
    elif args.where:
        raise RecyclerError("--where: only with --pick, which chooses among the front members that meet it")
    out = export_trial(Path(args.study), which, Path(args.out), max_shard_size=args.max_shard_size, overwrite=args.force)
    print(f"exported {'trial' if args.baseline is None else 'baseline'} {which} to {out}")


def _picked_trial(folder: Path, preference: str, where: list[str]) -> int:
    """The best front member by the preference among those meeting every constraint."""
    from recycler.front import front_records
    from recycler.selection import select
    from recycler.study import load_study

    study, info = load_study(folder)
    chosen = select(front_records(study, info), info, where=where, preference=preference, limit=1)
    if not chosen:
        raise RecyclerError(f"{folder}: no front member meets {' and '.join(where)}")
    return chosen[0]["trial"]


def _cmd_report(args: argparse.Namespace) -> None:
    from recycler.report import write_report

    out = write_report(Path(args.study), Path(args.out) if args.out else None, where=args.where, preference=args.rank,
                       limit=args.limit)
    print(f"report: {out}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from recycler.demo.run import run_demo

    run_demo(Path(args.dir), trials=args.trials, workers=args.workers)


def _cmd_verify(args: argparse.Namespace) -> None:
    from recycler.verify import verify_export

    result = verify_export(Path(args.dir), tolerance=args.tolerance, scores=not args.files_only)
    print(f"{args.dir}: {result.files} files match the manifest")
    for task, (recorded, measured) in result.scores.items():
        print(f"  {task}: trial {recorded:.6g}, now {measured:.6g}")


def _cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from recycler.service import ServiceConfig, create_app
    from recycler.service.security import load_token

    data = Path(args.data).expanduser()
    token_file = Path(args.token_file or data / "token")
    token, created = load_token(token_file)
    if created:
        print(f"API token (shown once; stored in {token_file}, mode 0600): {token}")
        print(f"page: http://{args.host}:{args.port}/#token={token}")
    roots = [Path(r) for r in args.allow_root] or [Path.cwd()]
    address = args.address or os.environ.get("RAY_ADDRESS")
    config = ServiceConfig(data=data, roots=roots, token=token, trust_task_code=[Path(r) for r in args.trust_task_code],
                           address=address, storage=args.storage,
                           max_body_bytes=args.max_body_bytes)
    app = create_app(config)
    trusted = f"; task code trusted under {', '.join(args.trust_task_code)}" if args.trust_task_code else ""
    print(f"recycler serve: http://{args.host}:{args.port}/ (data {data}; allowed roots {', '.join(map(str, roots))}{trusted})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def _cmd_token(args: argparse.Namespace) -> None:
    from recycler.service.app import TOKENS_FILE
    from recycler.service.tokens import DEFAULT_NAME, Tokens

    tokens = Tokens(Path(args.data).expanduser() / TOKENS_FILE)
    if args.token_command == "add":
        print(tokens.add(args.name, args.scope))
        print(f"token '{args.name}' (scope {args.scope}) added; shown once, only its hash is kept", file=sys.stderr)
    elif args.token_command == "revoke":
        tokens.revoke(args.name)
        print(f"token '{args.name}' revoked")
    else:
        print(f"{'name':<24} {'scope':<7} created")
        print(f"{DEFAULT_NAME:<24} {'export':<7} (the service's own token: --token-file or RECYCLER_TOKEN)")
        for entry in tokens.entries():
            print(f"{entry.name:<24} {entry.scope:<7} {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(entry.created))}")


def _selection_arguments(parser: argparse.ArgumentParser, *, ranking: bool = True) -> None:
    """The front's narrowing options, the same for `front`, `report` and (--where alone) `export`."""
    parser.add_argument("--where", action="append", default=[], metavar="TASK>=X",
                        help="keep front members whose score meets this, e.g. 'reverse>=0.9' (repeat for several)")
    if ranking:
        parser.add_argument("--rank", metavar="PREFERENCE",
                            help="order the front: 'balanced' (best worst objective) or OBJECTIVE=WEIGHT,...")
        parser.add_argument("--limit", type=int, metavar="N", help="at most N front members")


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

    run = commands.add_parser("run", help="search the pool's merges for the Pareto front (resumes a stopped study)")
    run.add_argument("spec", help="pool spec YAML")
    run.add_argument("--study", help="study folder (default studies/NAME)")
    run.add_argument("--trials", type=int, help="override search.trials")
    run.add_argument("--storage", help="Optuna RDB URL to share a study across machines (default: a journal file in the study folder)")
    run.add_argument("--address", help="Ray cluster address to join (default: RAY_ADDRESS, else a local Ray)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=_cmd_run)

    front = commands.add_parser("front", help="print a study's Pareto front beside its baselines")
    front.add_argument("study", help="study folder")
    front.add_argument("--format", choices=["table", "json", "csv"], default="table")
    front.add_argument("--all", action="store_true", help="every completed trial, not just the front and baselines")
    _selection_arguments(front)
    front.add_argument("--wide", action="store_true", help="every checkpoint's weight and the method's settings, not the top three weights")
    front.add_argument("--examples", type=int, metavar="N",
                       help="each merge shown with up to N answers per generation task beside a baseline's, those that differ first")
    front.add_argument("--beside", metavar="BASELINE",
                       help="the baseline the examples are read against (default: the most balanced baseline that kept them)")
    front.set_defaults(handler=_cmd_front)

    export = commands.add_parser("export", help="export one trial (or baseline) of a study as an HF checkpoint")
    export.add_argument("study", help="study folder")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int)
    which.add_argument("--baseline", help="a baseline scored beside the search, by name (e.g. ties)")
    which.add_argument("--pick", metavar="PREFERENCE", help="the best front member: 'balanced' or OBJECTIVE=WEIGHT,... (with --where)")
    _selection_arguments(export, ranking=False)
    export.add_argument("--out", required=True)
    export.add_argument("--max-shard-size", default="2GB")
    export.add_argument("--force", action="store_true", help="replace a non-empty --out")
    export.set_defaults(handler=_cmd_export)

    report = commands.add_parser("report", help="write a study's self-contained HTML report")
    report.add_argument("study", help="study folder")
    report.add_argument("--out", help="HTML file (default STUDY/report.html)")
    _selection_arguments(report)
    report.set_defaults(handler=_cmd_report)

    verify = commands.add_parser("verify", help="check an export's files against its manifest and re-score it")
    verify.add_argument("dir", help="export folder")
    verify.add_argument("--tolerance", type=float, default=1e-6, help="largest score difference accepted (default 1e-6)")
    verify.add_argument("--files-only", action="store_true", help="check the files, do not re-score")
    verify.set_defaults(handler=_cmd_verify)

    serve = commands.add_parser("serve", help="the HTTP API and web page: queue studies, watch their fronts, export trials")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--data", default="recycler-service", help="folder for the queue, the studies and the token (default ./recycler-service)")
    serve.add_argument("--allow-root", action="append", default=[], metavar="DIR",
                       help="folder under which checkpoints, suites and exports may lie (repeat; default: the current folder)")
    serve.add_argument("--token-file", help="bearer token file (default DATA/token, created 0600 on first start); RECYCLER_TOKEN overrides")
    serve.add_argument("--address", help="Ray cluster address to join (default: RAY_ADDRESS, else a local Ray)")
    serve.add_argument("--storage", metavar="URL", help="database URL for the studies' trials (as `recycler run "
                       "--storage`); the page then also lists the studies `recycler run` keeps there from other machines")
    serve.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    serve.add_argument("--trust-task-code", action="append", default=[], metavar="DIR",
                       help="a folder (under an --allow-root) whose lm-eval task YAMLs may load Python: !function, class, "
                            "HF evaluate metrics (repeat; default: none)")
    serve.set_defaults(handler=_cmd_serve)
    token = serve.add_subparsers(dest="serve_command").add_parser(
        "token", help="named API tokens with scopes: read (studies, fronts), submit (also submit and cancel), export (also exports, audit)")
    data_option = argparse.ArgumentParser(add_help=False)
    data_option.add_argument("--data", default=argparse.SUPPRESS, help="the service's data folder (as for serve)")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    add = token_commands.add_parser("add", parents=[data_option], help="create a token and print it once")
    add.add_argument("name")
    add.add_argument("--scope", required=True, help="read, submit or export")
    token_commands.add_parser("list", parents=[data_option], help="names, scopes and creation times (never the tokens)")
    token_commands.add_parser("revoke", parents=[data_option], help="stop a token working, at once").add_argument("name")
    token.set_defaults(handler=_cmd_token)

    demo = commands.add_parser("demo", help="build the demo pool if missing, search it, print the front, export, report")
    demo.add_argument("--dir", default="recycler-demo", help="where the pool, study, export and report go")
    demo.add_argument("--trials", type=int, default=60)
    demo.add_argument("--workers", type=int, default=2)
    demo.set_defaults(handler=_cmd_demo)
    return parser


def quiet_libraries() -> None:
    """Keep the libraries' progress bars and advisories off stderr, where the user reads our errors."""
    import logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import datasets
    import optuna
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # e.g. its retries of a lost database: recycler says it once
    for name in ("lm_eval", "lm-eval", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
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
