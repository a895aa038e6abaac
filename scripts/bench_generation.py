"""Benchmark: a generation suite scored batched against batch size 1, on the demo pool.

Every demo skill (held-in and held-out) asked as a `generate_until` task (greedy until the newline
that ends each answer, a regex keeping the answer's characters, exact match): the suite a user of
instruction suites would write. For each of three demo checkpoints, the scorer's time per
candidate (the median of 3 passes after a warm-up, requests built and tokenized once, as a worker
does) at `batch_size` 64 against batch size 1 in the same run, and the scores and every
extracted answer compared. The reference is batch size 1 through the same scorer, which is
lm-eval's own HFLM path one request at a time.

    python scripts/bench_generation.py [--pool recycler-demo/pool] [--out scripts/bench_data/generation.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from recycler.cli import quiet_libraries
from recycler.engines.hf import HFEngine
from recycler.evaluate import Scorer
from recycler.suite import SUITES_DIR, parse_suite

TASK = """\
task: {name}_gen
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
generation_kwargs: {{until: ["\\n"], max_gen_toks: 16, do_sample: false}}
filter_list:
  - name: answer
    filter:
      - {{function: regex, regex_pattern: "([0-9A-Za-z]+)"}}
      - {{function: take_first}}
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true}}
"""
CHECKPOINTS = ("double_add", "arith", "upper_count")


def generation_suite(folder: Path, batch_size: int):
    names = sorted(p.stem for p in (SUITES_DIR / "demo" / "data").glob("*.jsonl"))
    for name in names:
        (folder / f"{name}_gen.yaml").write_text(TASK.format(name=name, data=SUITES_DIR / "demo" / "data" / f"{name}.jsonl"))
    tasks = [{"task": f"{name}_gen", "metric": "exact_match,answer"} for name in names]
    return parse_suite({"name": "demo_generation", "task_dir": str(folder), "batch_size": batch_size, "limit": 100,
                        "held_in": tasks}, folder, "generation suite")


def _scorer(suite, model, tokenizer) -> Scorer:
    return Scorer(suite, HFEngine(model, tokenizer, suite))


def timed(scorer: Scorer, passes: int = 3):
    scorer.score()  # warm-up: the first pass also tokenizes
    times, result = [], None
    for _ in range(passes):
        started = time.perf_counter()
        result = scorer.score()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="recycler-demo/pool")
    parser.add_argument("--out", default="scripts/bench_data/generation.json")
    args = parser.parse_args()
    quiet_libraries()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in CHECKPOINTS:
            path = Path(args.pool) / "checkpoints" / name
            model, tokenizer = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
            batched_s, batched = timed(_scorer(generation_suite(Path(folder), 64), model, tokenizer))
            single_s, single = timed(_scorer(generation_suite(Path(folder), 1), model, tokenizer))
            same = batched.scores == single.scores and batched.examples == single.examples
            answers = sum(len(e.answers) for e in batched.examples.values())
            rows.append({"checkpoint": name, "batched_seconds": batched_s, "batch_one_seconds": single_s,
                         "speedup": single_s / batched_s, "identical_scores_and_answers": same, "answers": answers,
                         "mean_score": statistics.mean(batched.scores.values())})
            print(f"{name}: batch 64 {batched_s:.2f} s, batch 1 {single_s:.2f} s, {single_s / batched_s:.1f}x, "
                  f"identical: {same}, {answers} answers, mean exact match {rows[-1]['mean_score']:.3f}")
    Path(args.out).write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
