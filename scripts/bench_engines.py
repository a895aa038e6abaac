"""Benchmark: the `vllm` evaluation engine against the `hf` engine, on the demo pool, on this CPU.

Two suites: the demo's skills asked as generation tasks (every skill a `generate_until` task, as in
bench_generation.py, 100 examples each) and the loglikelihood `demo` suite. Two pools: the demo
pool (GPT-2s of 0.45M parameters; the figures in BENCHMARKS §10 were measured on an earlier, 0.8M
build), and two random GPT-2s of about 100M parameters (width 1024, 8 layers,
the demo's alphabet; 40 examples per task), where a model's compute starts to count. For each pool,
suite and engine, one worker's engine is built (2 torch threads), and the same random simplex
merges are loaded and scored as trials (load + score; the first trial is a warm-up); reported: the
median trial time, the two engines' scores and answers compared, the worker's private memory (USS)
after the trials, and for vLLM the time of a candidate's load (merge + in-place weight update)
against building a fresh engine from an export of the same merge. Each engine runs in a process of
its own, one after the other, in one run of this script (in the vLLM environment):

    .venv-vllm/bin/python scripts/bench_engines.py [--pool recycler-demo/pool] [--trials 3] [--out scripts/bench_data/engines.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITES = ("generation", "loglikelihood")
ENGINES = ("hf", "vllm")
LARGER = {"width": 1024, "layers": 8, "examples": 40}


def larger_pool(folder: Path) -> Path:
    """Two random ~100M-parameter GPT-2s on the demo's alphabet (a wide initialization: varied answers)."""
    from recycler.demo.skills import ALPHABET
    from recycler.demo.tiny import write_pool

    return write_pool(folder, 2, chars=ALPHABET, width=LARGER["width"], layers=LARGER["layers"],
                      initializer_range=0.3, positions=64)


def _recipes(names: list[str], count: int) -> list[dict]:
    from recycler.recipes import LinearRecipe

    rng = random.Random(0)
    recipes = []
    for _ in range(count):
        draws = [rng.expovariate(1.0) for _ in names]
        recipes.append(LinearRecipe({n: d / sum(draws) for n, d in zip(names, draws)}).to_json())
    return recipes


def measure(engine: str, suite_name: str, pool_yaml: Path, trials: int, folder: Path, limit: int | None) -> dict:
    """One engine on one suite, in this process: trial times, scores, answers, memory."""
    import psutil
    import torch
    import yaml

    from bench_generation import generation_suite  # noqa: the sibling benchmark's suite
    from recycler.cli import quiet_libraries
    from recycler.engine import engine_class
    from recycler.evaluate import Scorer
    from recycler.pool import load_pool
    from recycler.recipes import recipe_from_json
    from recycler.spec import load_spec
    from recycler.suite import load_suite, parse_suite

    quiet_libraries()
    torch.set_num_threads(2)
    data = yaml.safe_load(pool_yaml.read_text())
    data["resources"] = {"engine": engine}
    spec_path = pool_yaml.with_name(f".bench-{engine}.yaml")
    spec_path.write_text(yaml.safe_dump(data))
    spec = load_spec(spec_path)
    spec_path.unlink()
    suite = generation_suite(folder, 64) if suite_name == "generation" else load_suite("demo")
    if limit is not None:
        suite = parse_suite({**suite.spec.model_dump(mode="json"), "limit": limit}, folder, f"{suite_name} suite")
    pool = load_pool(spec)
    started = time.perf_counter()
    worker_engine = engine_class(engine).for_pool(pool, suite, spec.resources, torch.device("cpu"))
    scorer = Scorer(suite, worker_engine)
    start_seconds = time.perf_counter() - started
    times, loads, results = [], [], []
    for recipe in _recipes(pool.names, trials + 1):
        started = time.perf_counter()
        worker_engine.load(recipe_from_json(recipe))
        loaded = time.perf_counter()
        result = scorer.score()
        times.append(time.perf_counter() - started)
        loads.append(loaded - started)
        results.append({"scores": result.scores,
                        "answers": {t: e.answers for t, e in result.examples.items() if e.answers is not None},
                        "forward_tokens": result.costs.forward_tokens, "forward_seconds": result.costs.forward_seconds})
    row = {"engine": engine, "suite": suite_name, "engine_start_seconds": start_seconds,
           "forward_seconds": statistics.median(r["forward_seconds"] for r in results[1:]),
           "trial_seconds": statistics.median(times[1:]), "load_seconds": statistics.median(loads[1:]),
           "uss_MB": psutil.Process().memory_full_info().uss / 2**20, "results": results[1:]}
    if engine == "vllm":
        from recycler.export import export_merge
        from recycler.merge import Merger

        del scorer, worker_engine  # vLLM holds one engine per process
        import gc

        gc.collect()
        exported = export_merge(Merger(pool), recipe_from_json(_recipes(pool.names, 1)[0]), folder / "export")
        started = time.perf_counter()
        engine_class("vllm").for_checkpoint(exported, suite, spec.resources)
        row["fresh_engine_seconds"] = time.perf_counter() - started
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="recycler-demo/pool")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--out", default="scripts/bench_data/engines.json")
    parser.add_argument("--child", nargs=4, metavar=("ENGINE", "SUITE", "POOL_YAML", "LIMIT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, suite, pool_yaml, limit = args.child
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(measure(engine, suite, Path(pool_yaml), args.trials, Path(folder),
                                     int(limit) if limit != "all" else None)))
        return
    rows = {}
    with tempfile.TemporaryDirectory() as larger:
        pools = {"demo pool (0.8M)": (Path(args.pool).resolve() / "pool.yaml", "all"),
                 "random GPT-2 (100M)": (larger_pool(Path(larger)), str(LARGER["examples"]))}
        for pool, (pool_yaml, limit) in pools.items():
            for suite in SUITES:
                for engine in ENGINES:
                    out = subprocess.run([sys.executable, __file__, "--trials", str(args.trials),
                                          "--child", engine, suite, str(pool_yaml), limit],
                                         capture_output=True, text=True, check=True).stdout
                    rows[(pool, suite, engine)] = {"pool": pool, **json.loads(out.strip().splitlines()[-1])}
    summary = []
    for pool, suite in sorted({(p, s) for p, s, _ in rows}):
        hf, vllm = rows[(pool, suite, "hf")], rows[(pool, suite, "vllm")]
        same_scores = [a["scores"] == b["scores"] for a, b in zip(hf["results"], vllm["results"])]
        same_answers = [a["answers"] == b["answers"] for a, b in zip(hf["results"], vllm["results"])]
        line = {"pool": pool, "suite": suite, "hf_trial_seconds": hf["trial_seconds"], "vllm_trial_seconds": vllm["trial_seconds"],
                "hf_forward_seconds": hf["forward_seconds"], "vllm_forward_seconds": vllm["forward_seconds"],
                "vllm_throughput_over_hf": hf["trial_seconds"] / vllm["trial_seconds"],
                "identical_scores": all(same_scores), "identical_answers": all(same_answers),
                "hf_uss_MB": hf["uss_MB"], "vllm_uss_MB": vllm["uss_MB"],
                "vllm_load_seconds": vllm["load_seconds"], "vllm_fresh_engine_seconds": vllm["fresh_engine_seconds"],
                "load_over_fresh_engine": vllm["load_seconds"] / vllm["fresh_engine_seconds"],
                "hf_engine_start_seconds": hf["engine_start_seconds"], "vllm_engine_start_seconds": vllm["engine_start_seconds"]}
        summary.append(line)
        print(json.dumps(line))
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": [rows[k] for k in sorted(rows)]}, indent=1) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
