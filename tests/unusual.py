"""Valid but unusual suites and pools for tests/test_unusual_suites.py: task folders exercising
lm-eval features one at a time (corpus metrics, several metrics of one task YAML, a group, trusted
`process_results` code, many-choice multiple choice, a limit larger than the data, generation with
`repeats`), pools of Gemma-, Phi- and Mistral-shaped tiny random models (tied embeddings, bfloat16,
sharded or not), and lm-eval's own `simple_evaluate` on an exported checkpoint as the reference.

Data files are named by absolute path: recycler resolves a relative `data_files` against the YAML's
folder, lm-eval against the working directory, and the reference must read the same files."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
import yaml

from recycler.demo.tiny import CHARS
from recycler.demo.tokenizer import build_char_tokenizer
from tests.suites import CHOICE_TASK_HEAD, write_tasks

EXAMPLES = 12  # examples per task: tiny data keeps each study a few seconds

_MC = CHOICE_TASK_HEAD + "metric_list:\n{metrics}"

_METRIC = "  - {{metric: {name}, aggregation: {aggregation}, higher_is_better: true}}\n"

# Several metrics of one task, `f1` and `mcc` among them (corpus metrics: lm-eval aggregates their
# per-example (gold, prediction) pairs). `pick2_mcc` is the same YAML under another name, so a suite
# can read a second metric of it (a suite lists each task once).
_PICK2_METRICS = "".join(_METRIC.format(name=m, aggregation=a) for m, a in
                         (("acc", "mean"), ("acc_norm", "mean"), ("f1", "f1"), ("mcc", "matthews_corrcoef")))

_GENERATION = """\
task: votes
dataset_path: json
dataset_kwargs:
  data_files:
    test: DATA/votes.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{prompt}}"
doc_to_target: "{{answer}}"
target_delimiter: ""
repeats: 3
generation_kwargs: {until: ["\\n"], max_gen_toks: 5, do_sample: false}
filter_list:
  - name: vote
    filter:
      - {function: regex, regex_pattern: "(\\\\d)"}
      - {function: majority_vote}
      - {function: take_first}
  - name: first
    filter:
      - {function: take_first}
metric_list:
  - {metric: exact_match, aggregation: mean, higher_is_better: true}
  - {metric: chrf, aggregation: chrf, higher_is_better: true}
"""

_CUSTOM = """\
task: custom
dataset_path: json
dataset_kwargs:
  data_files:
    test: DATA/custom.jsonl
test_split: test
output_type: loglikelihood
doc_to_text: "{{prompt}}"
doc_to_target: "{{answer}}"
target_delimiter: ""
process_results: !function utils.process_results
metric_list:
  - {metric: logprob, aggregation: mean, higher_is_better: true}
  - {metric: greedy, aggregation: mean, higher_is_better: true}
"""

_UTILS = '''\
"""Trusted task code: lm-eval imports it through `!function utils.process_results`."""


def process_results(doc, results):
    logprob, greedy = results[0]
    return {"logprob": float(logprob), "greedy": float(greedy)}
'''

_GROUP = """\
group: arith_group
task:
  - sums
  - carry
aggregate_metric_list:
  - {metric: acc, aggregation: mean, weight_by_size: true}
"""


def _rows(folder: Path, name: str, rows: list[dict[str, Any]]) -> None:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "data" / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def _sum_prompts(name: str, count: int = EXAMPLES) -> list[tuple[str, int]]:
    rng = random.Random(name)
    return [(f"{a}+{b}=", a + b) for a, b in ((rng.randint(0, 49), rng.randint(0, 49)) for _ in range(count))]


def write_corpus_tasks(folder: Path) -> Path:
    """sums, carry, pick (tests/suites.py), pick2 / pick2_mcc (two choices, acc, acc_norm, f1, mcc)
    and choose12 (twelve choices)."""
    write_tasks(folder, examples=EXAMPLES, absolute=True)
    rng = random.Random("pick2")
    pick2 = []
    for prompt, total in _sum_prompts("pick2"):
        label = rng.randint(0, 1)
        choices = [str(total + 1), str(total + 1)]
        choices[label] = str(total)
        pick2.append({"prompt": prompt, "choices": choices, "label": label})
    _rows(folder, "pick2", pick2)
    (folder / "pick2.yaml").write_text(_MC.format(name="pick2", data=folder / "data" / "pick2.jsonl", metrics=_PICK2_METRICS))
    (folder / "pick2_mcc.yaml").write_text("include: pick2.yaml\ntask: pick2_mcc\n")

    rng = random.Random("choose12")
    choose = []
    for prompt, total in _sum_prompts("choose12"):
        choices = [str(total + offset) for offset in range(-6, 6)]
        rng.shuffle(choices)
        choose.append({"prompt": prompt, "choices": choices, "label": choices.index(str(total))})
    _rows(folder, "choose12", choose)
    metrics = "".join(_METRIC.format(name=m, aggregation="mean") for m in ("acc", "acc_norm"))
    (folder / "choose12.yaml").write_text(_MC.format(name="choose12", data=folder / "data" / "choose12.jsonl", metrics=metrics))
    return folder


def write_code_tasks(folder: Path) -> Path:
    """votes and votes_chrf (generation, three repeats voted, exact_match and chrf) and custom (loglikelihood scored
    by trusted `process_results` code in utils.py), beside tests/suites.py's tasks and a group of two."""
    write_tasks(folder, examples=EXAMPLES, absolute=True)
    _rows(folder, "votes", [{"prompt": p, "answer": str(t % 10)} for p, t in _sum_prompts("votes")])
    (folder / "votes.yaml").write_text(_GENERATION.replace("DATA", str(folder / "data")))
    (folder / "votes_chrf.yaml").write_text("include: votes.yaml\ntask: votes_chrf\n")
    _rows(folder, "custom", [{"prompt": p, "answer": str(t)} for p, t in _sum_prompts("custom")])
    (folder / "custom.yaml").write_text(_CUSTOM.replace("DATA", str(folder / "data")))
    (folder / "utils.py").write_text(_UTILS)
    (folder / "arith_group.yaml").write_text(_GROUP)
    return folder


def write_suite_file(folder: Path, tasks: Path, held_in: list[dict], held_out: list[dict] = (), **settings) -> Path:
    path = folder / "suite.yaml"
    suite = {"name": "unusual", "task_dir": str(tasks), "batch_size": 8, "held_in": held_in, "held_out": list(held_out),
             **settings}
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def tiny_arch_config(arch: str, vocab_size: int, eos_id: int):
    """A tiny random config of another architecture, with tied embeddings."""
    from transformers import GemmaConfig, MistralConfig, PhiConfig

    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  max_position_embeddings=64, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=0,
                  initializer_range=0.1, tie_word_embeddings=True)
    if arch == "gemma":  # embeddings scaled by sqrt(width), RMSNorm as 1 + weight, GeLU-tanh MLP
        return GemmaConfig(num_key_value_heads=1, head_dim=16, **common)
    if arch == "phi":  # LayerNorm, partial rotary, an lm_head with a bias beside its tied weight
        return PhiConfig(num_key_value_heads=2, **common)
    if arch == "mistral":  # grouped-query attention with a sliding window
        return MistralConfig(num_key_value_heads=1, sliding_window=16, **common)
    raise ValueError(arch)


def write_arch_pool(root: Path, arch: str, count: int = 2, *, max_shard_size: str | None = None) -> Path:
    """A pool of `count` tiny random bfloat16 checkpoints of `arch`, saved by transformers (tied
    embeddings: no lm_head.weight on disk), with the tiny pool's character tokenizer."""
    from transformers import AutoModelForCausalLM

    tokenizer = build_char_tokenizer(CHARS)
    refs = []
    for i in range(count):
        torch.manual_seed(i + 1)
        model = AutoModelForCausalLM.from_config(tiny_arch_config(arch, len(tokenizer), tokenizer.eos_token_id))
        model.to(torch.bfloat16)
        folder = root / f"ckpt{i}"
        model.save_pretrained(folder, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
        tokenizer.save_pretrained(folder)
        refs.append({"name": f"c{i}", "path": f"ckpt{i}"})
    path = root / "pool.yaml"
    path.write_text(yaml.safe_dump({"name": f"tiny-{arch}", "checkpoints": refs}, sort_keys=False))
    return path


def lm_eval_scores(checkpoint: Path, suite_path: Path) -> tuple[dict[str, float], torch.dtype]:
    """Every task of the suite scored by lm-eval's own `simple_evaluate` on the checkpoint as any
    user loads it (its saved dtype), on the CPU at the suite's batch size: one call per (limit,
    num_fewshot); and the dtype the model was loaded in.

    The suite's batch size, not 1: where a CPU has no bfloat16 arithmetic (AVX2), how a bfloat16
    model's requests are batched changes the rounding of their loglikelihoods (a Phi pool's
    perplexity by 0.5% between 8 and 1), so only the same batches can be compared exactly. Batched
    against batch size 1 is checked on float32 pools (tests/test_evaluate.py, test_generation.py)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    suite = yaml.safe_load(suite_path.read_text())
    lm = HFLM(pretrained=str(checkpoint), dtype="auto", add_bos_token=False, batch_size=suite["batch_size"], device="cpu")
    manager = TaskManager(include_path=suite["task_dir"], include_defaults=False)
    calls: dict[tuple[Any, Any], list[dict]] = {}
    for task in suite["held_in"] + suite.get("held_out", []):
        calls.setdefault((task.get("limit", suite.get("limit")), task.get("num_fewshot")), []).append(task)
    scores = {}
    for (limit, fewshot), tasks in calls.items():
        out = simple_evaluate(model=lm, tasks=[t["task"] for t in tasks], task_manager=manager, limit=limit,
                              num_fewshot=fewshot, bootstrap_iters=0, fewshot_random_seed=suite.get("fewshot_seed", 1234))
        for task in tasks:
            metric, _, filter_key = task.get("metric", "acc").partition(",")
            scores[task["task"]] = out["results"][task["task"]][f"{metric},{filter_key or 'none'}"]
    return scores, lm.model.dtype
