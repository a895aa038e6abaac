"""Benchmark: screening's rules against full evaluation and against the oracle ceiling.

Per suite (scripts/screening_suites.py) and seed, on the demo pool (default sampler, 2 Ray workers):
1. full evaluation: a study that scores every candidate in full (`--full-trials`, 100); its
   candidates keep their per-example results, so the rules can be replayed on them.
2. the ceiling, replayed on full evaluation's own candidates in trial order: the share of examples
   an oracle that knew every full score could save by dropping what the front before it dominates,
   exactly ("dominance") and with every front member credited one standard error of its full score
   ("within 1 SE").
3. each rule (`--rules`) replayed on the same candidates: examples it spends, candidates it drops,
   wrong drops (a dropped candidate on the final front of full evaluation's candidates) and
   meaningful wrong drops (a dropped candidate whose full scores put it more than one standard error
   beyond every kept trial on some objective), and the hypervolume of what it keeps ÷ full's.
4. online (`--online RULE ...`): one study per rule and seed run until it scored 1.05× full's
   examples; examples (and forward tokens) to reach full's 100-trial hypervolume ÷ full's, and the
   hypervolume at full's examples ÷ full's, each beside the ceiling. Every dropped candidate is then
   scored in full (in-process) to count its wrong and meaningful wrong drops.
Studies are kept under --root and reused when run again (a finished study is only re-read).

    python scripts/bench_screening_rules.py --suites two six two500 layerwise generation --seeds 0 1 2 \
        [--online credit stages] [--out scripts/bench_data/screening_rules.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_screening import curve, run_study
from screening_suites import SUITES, suite_spec

from recycler.files import write_text_atomic
from recycler.spec import load_spec

DATA = Path(__file__).resolve().parent / "bench_data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=Path, default=Path("recycler-demo/pool/pool.yaml"))
    parser.add_argument("--root", type=Path, default=Path("recycler-demo/screening-rules"))
    parser.add_argument("--suites", nargs="+", default=list(SUITES), choices=SUITES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--full-trials", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DATA / "screening_rules.json")
    args = parser.parse_args()

    import optuna
    import ray

    from recycler.cli import quiet_libraries

    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    pool_spec = load_spec(args.pool)
    results: dict = {"suites": {}}
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for name in args.suites:
            spec = suite_spec(pool_spec, name, args.root)
            suite = results["suites"][name] = {}
            for seed in args.seeds:
                folder = args.root / name / f"full-s{seed}"
                seconds = run_study(spec, folder, args.full_trials, seed, args.workers, None)
                full = curve(folder)
                suite[str(seed)] = {"full": {"seconds": seconds, "trials": full["trials"], "front": full["front"],
                                             "examples": full["examples"][-1], "hypervolume": full["hypervolume"][-1]}}
                print(f"{name} seed {seed} full: {full['trials']} trials, front {full['front']}, "
                      f"hv {full['hypervolume'][-1]:.4g} ({seconds:.0f}s)", flush=True)
                write_text_atomic(args.out, json.dumps(results, indent=1))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
