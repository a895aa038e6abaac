"""A catalogue of valid but unusual suites and pools, each run end to end (issue 28, part 4): a study
of three trials (the two checkpoints alone, then their uniform average, a real merge), the last trial
exported, and every task's recorded score checked against lm-eval's own `simple_evaluate` on the
export (the suite's batch size, CPU, the export's saved dtype), within verify's tolerance.

One study covers several suite features where it can; each pool architecture gets its own study on
a plain suite. The tiny models are random, so scores sit near chance: the point is that the search
scores exactly what lm-eval scores, not what the scores are."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from recycler.demo.tiny import write_pool
from recycler.examples import read_prompts, read_results
from recycler.pool import load_pool
from recycler.spec import load_spec
from tests.unusual import (
    EXAMPLES,
    lm_eval_scores,
    write_arch_pool,
    write_code_tasks,
    write_corpus_tasks,
    write_suite_file,
)

TOLERANCE = 1e-6  # recycler verify's default; on the CPU the scores match exactly


def _corpus(root: Path) -> tuple[Path, Path]:
    """Corpus metrics held in (f1) and held out (mcc), two metrics of one task YAML (pick2 read as
    f1, its include pick2_mcc as mcc), multiple choice over twelve choices, a limit (50) larger than
    the task's data (12), and a suite-wide limit a task overrides."""
    tasks = write_corpus_tasks(root / "tasks")
    held_in = [{"task": "pick2", "metric": "f1"}, {"task": "choose12", "metric": "acc_norm"},
               {"task": "sums", "metric": "acc", "limit": 50}]
    held_out = [{"task": "pick2_mcc", "metric": "mcc"}, {"task": "carry", "metric": "perplexity"}]
    return write_pool(root, 2), write_suite_file(root, tasks, held_in, held_out, limit=10)


def _code(root: Path) -> tuple[Path, Path]:
    """Generation with three repeats voted (majority_vote) read through a filter, a corpus metric
    of a generation task held out (chrF over the `first` filter), and a loglikelihood task scored
    by trusted `process_results: !function utils.process_results` code (a continuous metric)."""
    tasks = write_code_tasks(root / "tasks")
    held_in = [{"task": "votes", "metric": "exact_match,vote"}, {"task": "custom", "metric": "logprob"}]
    held_out = [{"task": "votes_chrf", "metric": "chrf,first"}]
    return write_pool(root, 2, initializer_range=0.3), write_suite_file(root, tasks, held_in, held_out)


def _group(root: Path) -> tuple[Path, Path]:
    """An lm-eval group (arith_group: sums and carry, acc averaged by size) named as a suite task:
    its score lm-eval's for the group, its examples its members' one after another."""
    tasks = write_code_tasks(root / "tasks")
    return write_pool(root, 2), write_suite_file(root, tasks, [{"task": "arith_group", "metric": "acc"}],
                                                 [{"task": "pick", "metric": "acc"}])


def _architecture(arch: str, max_shard_size: str | None = None) -> Callable[[Path], tuple[Path, Path]]:
    """A bfloat16 pool of `arch` with tied embeddings (sharded when max_shard_size is given) on a
    plain suite: loglikelihood acc and perplexity, multiple choice acc_norm."""

    def make(root: Path) -> tuple[Path, Path]:
        pool = write_arch_pool(root, arch, max_shard_size=max_shard_size)
        for checkpoint in ("ckpt0", "ckpt1"):
            config = json.loads((root / checkpoint / "config.json").read_text())
            assert config.get("dtype", config.get("torch_dtype")) == "bfloat16" and config["tie_word_embeddings"]
            assert (root / checkpoint / "model.safetensors.index.json").is_file() == bool(max_shard_size)
        names = load_pool(load_spec(pool)).tensor_names
        assert "lm_head.weight" not in names and ("lm_head.bias" in names) == (arch == "phi")  # tied; Phi's head keeps its bias
        tasks = write_corpus_tasks(root / "tasks")
        held_in = [{"task": "sums", "metric": "acc"}, {"task": "pick", "metric": "acc_norm"}]
        return pool, write_suite_file(root, tasks, held_in, [{"task": "carry", "metric": "perplexity"}])

    return make


CASES = {
    "corpus-metrics-many-choices-limit": (_corpus, None),
    "repeats-process-results-chrf": (_code, None),
    "group": (_group, None),
    "gemma-bf16-tied": (_architecture("gemma"), None),
    "phi-bf16-tied-sharded": (_architecture("phi", max_shard_size="20KB"), "20KB"),
    "mistral-bf16-tied-sharded": (_architecture("mistral", max_shard_size="12KB"), None),
}
MEMBERS = {"arith_group": 2}  # lm-eval tasks a suite task scores, where not one


@pytest.mark.parametrize("case", CASES)
def test_unusual_suite_or_pool_runs_and_scores_as_lm_eval(tmp_path, local_ray, case):
    from recycler.export import export_trial
    from recycler.records import StoredTrial
    from recycler.search import run_search
    from recycler.study import load_study

    started = time.perf_counter()
    build, export_shard_size = CASES[case]
    spec_path, suite_path = build(tmp_path)
    spec = yaml.safe_load(spec_path.read_text())
    spec.update(suite=str(suite_path), resources={"workers": 1},
                search={"space": "simplex", "trials": 3, "sampler": "RandomSampler", "seed": 1})
    spec_path.write_text(yaml.safe_dump(spec))

    run_search(load_spec(spec_path), tmp_path / "study", progress=False)
    study, _ = load_study(tmp_path / "study")
    trials = [StoredTrial.of(t) for t in study.get_trials(deepcopy=False)]
    assert [t.complete for t in trials] == [True] * 3, [t.error for t in trials]
    last = trials[-1]
    assert len([w for w in last.recipe["weights"].values() if w > 0]) == 2  # the uniform average: a real merge
    suite = yaml.safe_load(suite_path.read_text())
    tasks = [t["task"] for t in suite["held_in"] + suite["held_out"]]
    assert set(last.scores) == set(tasks)
    limits = {t["task"]: t.get("limit", suite.get("limit")) or EXAMPLES for t in suite["held_in"] + suite["held_out"]}
    assert last.examples_scored == sum(min(limit, EXAMPLES) * MEMBERS.get(task, 1) for task, limit in limits.items())  # a limit past the data scores the data
    results, prompts = read_results(tmp_path / "study", last.number), read_prompts(tmp_path / "study")
    assert {task: len(r.scores) for task, r in results.items()} == {task: len(p) for task, p in prompts.items()}

    out = export_trial(tmp_path / "study", last.number, tmp_path / "export",
                       **({"max_shard_size": export_shard_size} if export_shard_size else {}))
    assert (out / "model.safetensors.index.json").is_file() == bool(export_shard_size)
    theirs, dtype = lm_eval_scores(out, suite_path)
    assert dtype == load_pool(load_spec(spec_path)).dtype  # lm-eval loads the export in the pool's dtype (bfloat16 or float32)
    for task in tasks:
        assert math.isfinite(theirs[task])
        assert abs(last.scores[task] - theirs[task]) <= TOLERANCE, (task, last.scores[task], theirs[task])
    print(f"{case}: {time.perf_counter() - started:.1f}s, {EXAMPLES} examples per task, scores {last.scores}")
