"""Small lm-eval task folders over local JSONL, for tests of suites and scoring."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

_DATA = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
doc_to_text: "{{{{prompt}}}}"
target_delimiter: ""
"""

LOGLIKELIHOOD_TASK = _DATA + """\
output_type: loglikelihood
doc_to_target: "{{{{answer}}}}{{{{'\\n'}}}}"
metric_list:
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
  - {{metric: perplexity, aggregation: perplexity, higher_is_better: false}}
"""

CHOICE_TASK_HEAD = _DATA + """\
output_type: multiple_choice
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
"""  # a multiple-choice task without its metric_list

CHOICE_TASK = CHOICE_TASK_HEAD + """\
metric_list:
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
  - {{metric: acc_norm, aggregation: mean, higher_is_better: true}}
"""


_GENERATION_TASK = """\
task: answer
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/answer.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{prompt}}"
doc_to_target: "{{answer}}"
target_delimiter: ""
generation_kwargs: {until: ["\\n"], max_gen_toks: 6, do_sample: false}
filter_list:
  - name: word
    filter:
      - {function: regex, regex_pattern: "(\\\\S+)"}
      - {function: take_first}
metric_list:
  - {metric: exact_match, aggregation: mean, higher_is_better: true}
"""


def add_generation_task(tasks):
    """`answer`, a generation task of 20 sums (metric `exact_match,word`), in a task folder."""
    rng = random.Random("answer")
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in ((rng.randint(0, 9), rng.randint(0, 9)) for _ in range(20))]
    (tasks / "data" / "answer.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tasks / "answer.yaml").write_text(_GENERATION_TASK)


def add_f1_task(tasks: Path, name: str, choices: int) -> None:
    """`name`: the `pick` task with lm-eval's corpus-level `f1` among its metrics, over the first
    `choices` choices (sklearn's binary f1, which lm-eval calls, raises on more than two classes)."""
    text = (tasks / "pick.yaml").read_text().replace("task: pick", f"task: {name}")
    text = text.replace("{{choices}}", f"{{{{choices[:{choices}]}}}}")
    (tasks / f"{name}.yaml").write_text(text + "  - {metric: f1, aggregation: f1, higher_is_better: true}\n")


def _sums(rng: random.Random) -> dict:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return {"prompt": f"{a}+{b}=", "answer": str(a + b)}


def _pick(rng: random.Random) -> dict:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    choices = [str(a + b), str(a + b + 1), str(abs(a - b))]
    return {"prompt": f"{a}+{b}=", "choices": choices, "label": 0}


def write_tasks(folder: Path, *, absolute: bool = False, examples: int = 40) -> Path:
    """Three tasks: `sums` and `carry` (loglikelihood, acc and perplexity) and `pick` (multiple choice)."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for name, template, make in (("sums", LOGLIKELIHOOD_TASK, _sums), ("carry", LOGLIKELIHOOD_TASK, _sums), ("pick", CHOICE_TASK, _pick)):
        rng = random.Random(name)
        data = folder / "data" / f"{name}.jsonl"
        data.write_text("".join(json.dumps(make(rng)) + "\n" for _ in range(examples)))
        ref = str(data) if absolute else f"data/{name}.jsonl"
        (folder / f"{name}.yaml").write_text(template.format(name=name, data=ref))
    return folder


def write_suite(folder: Path, **overrides) -> Path:
    """A suite file beside a task folder: sums and pick held in, carry held out."""
    write_tasks(folder / "tasks")
    suite = {
        "name": "arith",
        "task_dir": "tasks",
        "batch_size": 16,
        "held_in": [{"task": "sums", "metric": "acc"}, {"task": "pick", "metric": "acc_norm"}],
        "held_out": [{"task": "carry", "metric": "perplexity", "limit": 25}],
        **overrides,
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path



def hf_scorer(suite, model, tokenizer):
    """A scorer of a suite over one transformers model, through the `hf` engine."""
    from recycler.engines.hf import HFEngine
    from recycler.evaluate import Scorer

    return Scorer(suite, HFEngine(model, tokenizer, suite))
