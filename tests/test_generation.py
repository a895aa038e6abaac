"""Generation tasks scored right: batched = batch size 1 = lm-eval's own simple_evaluate on the
checkpoint loaded from disk, for a rotary-position (Llama) and an absolute-position (GPT-2) model,
with lm-eval's filters, few-shot examples, chat templates, and one of lm-eval's shipped tasks over
local data.

The models are fixed-seed random ones initialized with a wide spread (initializer_range 0.3), so
their greedy answers vary with the prompt and its positions: a padding or position bug changes
them. Each test checks the answers are not all empty and some are right.
"""

import json
import random
import string

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig

from recycler.demo.tokenizer import build_char_tokenizer
from recycler.errors import RecyclerError
from recycler.suite import parse_suite
from tests.suites import hf_scorer

CHARS = string.ascii_letters + string.digits + " +=-:#<>|/.,?\n"
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")

GENERATION_TASK = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    train: {data}
    test: {data}
training_split: train
fewshot_split: train
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
fewshot_delimiter: "\\n"
repeats: {repeats}
generation_kwargs: {{until: ["\\n", "."], max_gen_toks: 6, do_sample: false}}
filter_list:
  - name: first_digit
    filter:
      - {{function: regex, regex_pattern: "(\\\\d)"}}
      - {{function: take_first}}
  - name: vote
    filter:
      - {{function: regex, regex_pattern: "(\\\\d)"}}
      - {{function: majority_vote}}
      - {{function: take_first}}
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true}}
"""


def write_model(folder, arch, *, chat_template=None, positions=512):
    torch.manual_seed(11)
    tokenizer = build_char_tokenizer(CHARS)
    special = dict(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=0,
                   initializer_range=0.3)
    if arch == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_positions=positions, n_embd=32, n_layer=2, n_head=2, **special)
    else:
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=positions, **special)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    return folder


def write_generation_tasks(folder, examples=40):
    """`digits` (one answer per prompt) and `digits3` (three greedy repeats, voted): prompts of
    varying length, so batches are left-padded."""
    rng = random.Random(5)
    data = folder / "digits.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": f"{rng.randint(0, 10 ** rng.randint(1, 6))}+{rng.randint(0, 9)}=", "answer": str(rng.randint(0, 9))}
            for _ in range(examples)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for name, repeats in (("digits", 1), ("digits3", 3)):
        (folder / f"{name}.yaml").write_text(GENERATION_TASK.format(name=name, data=data, repeats=repeats))
    return folder


def suite(task_dir, batch_size, **settings):
    held_in = [{"task": "digits", "metric": "exact_match,first_digit", **settings.pop("task_settings", {})},
               {"task": "digits3", "metric": "exact_match,vote"}]
    return parse_suite({"name": "gen", "task_dir": str(task_dir), "batch_size": batch_size, "held_in": held_in, **settings},
                       task_dir, "test suite")


def load(folder):
    return AutoModelForCausalLM.from_pretrained(str(folder)).eval(), AutoTokenizer.from_pretrained(str(folder))


def lm_eval_samples(checkpoint, task_dir, tasks, **settings):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = simple_evaluate(
        model="hf", model_args=f"pretrained={checkpoint},add_bos_token=False,dtype=float32", tasks=tasks,
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False), batch_size=1, device="cpu",
        bootstrap_iters=0, log_samples=True, **settings,
    )
    return out["results"], out["samples"]


def their_answers(samples, task, filter_name):
    """lm-eval's filtered answer per example (its samples hold one entry per example and filter)."""
    return [s["filtered_resps"][0] for s in sorted(samples[task], key=lambda s: s["doc_id"]) if s["filter"] == filter_name]


def our_prompts(scorer, task):
    return [instance.args[0] for instance in sorted(scorer.tasks[task].instances, key=lambda i: (i.doc_id, i.idx))]


def their_prompts(samples, task):
    first_filter = samples[task][0]["filter"]
    return [arguments[0] for s in sorted(samples[task], key=lambda s: s["doc_id"]) if s["filter"] == first_filter
            for arguments in s["arguments"]]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generation_batched_equals_batch_one_and_lm_eval(tmp_path, arch):
    checkpoint = write_model(tmp_path / "ckpt", arch)
    tasks = write_generation_tasks(tmp_path / "tasks")
    model, tokenizer = load(checkpoint)
    batched = hf_scorer(suite(tasks, 16), model, tokenizer).score()
    single = hf_scorer(suite(tasks, 1), model, tokenizer).score()
    assert batched.scores == single.scores and batched.examples == single.examples

    results, samples = lm_eval_samples(checkpoint, tasks, ["digits", "digits3"])
    assert batched.scores == {"digits": results["digits"]["exact_match,first_digit"],
                              "digits3": results["digits3"]["exact_match,vote"]}
    assert batched.examples["digits"].answers == their_answers(samples, "digits", "first_digit")
    assert batched.examples["digits3"].answers == their_answers(samples, "digits3", "vote")

    answers = batched.examples["digits"].answers
    assert sum(a != "[invalid]" for a in answers) >= len(answers) // 2 and len(set(answers)) >= 4  # not a degenerate model
    assert 0 < batched.scores["digits"] < 1
    assert sum(batched.examples["digits"].scores) / len(answers) == batched.scores["digits"]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_few_shot_and_chat_template_prompts_equal_lm_eval(tmp_path, arch):
    checkpoint = write_model(tmp_path / "ckpt", arch, chat_template=CHAT_TEMPLATE)
    tasks = write_generation_tasks(tmp_path / "tasks", examples=20)
    settings = dict(apply_chat_template=True, fewshot_as_multiturn=True, system_instruction="Answer with one digit.")
    scorer = hf_scorer(suite(tasks, 8, task_settings={"num_fewshot": 2}, **settings), *load(checkpoint))
    ours = scorer.score()

    results, samples = lm_eval_samples(checkpoint, tasks, ["digits"], num_fewshot=2, **settings)
    prompts = our_prompts(scorer, "digits")
    assert prompts == their_prompts(samples, "digits")
    assert prompts[0].startswith("<|system|>Answer with one digit.") and prompts[0].count("<|user|>") == 3
    assert ours.scores["digits"] == results["digits"]["exact_match,first_digit"]


def test_few_shot_without_chat_template_equals_lm_eval(tmp_path):
    checkpoint = write_model(tmp_path / "ckpt", "llama")
    tasks = write_generation_tasks(tmp_path / "tasks", examples=20)
    scorer = hf_scorer(suite(tasks, 8, task_settings={"num_fewshot": 3}), *load(checkpoint))
    ours = scorer.score()
    results, samples = lm_eval_samples(checkpoint, tasks, ["digits"], num_fewshot=3)
    assert our_prompts(scorer, "digits") == their_prompts(samples, "digits")
    assert our_prompts(scorer, "digits")[0].count("=") == 4  # three examples, then the question
    assert ours.scores["digits"] == results["digits"]["exact_match,first_digit"]


def test_shipped_lm_eval_task_over_local_data_equals_its_include(tmp_path):
    """gsm8k's own prompt, filters and metric over a local file in gsm8k's format, against lm-eval
    loading the same data through `include:` of its shipped YAML."""
    from lm_eval.tasks import TaskManager

    checkpoint = write_model(tmp_path / "ckpt", "llama")
    rng = random.Random(2)
    questions = [f"What is {rng.randint(1, 99)} plus {rng.randint(1, 99)}?" for _ in range(12)]
    data = tmp_path / "data"
    data.mkdir()

    def write(split, answers):
        rows = [{"question": q, "answer": f"Add them.\n#### {a}"} for q, a in zip(questions, answers)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    include = tmp_path / "lm_eval_tasks"
    include.mkdir()
    shipped = TaskManager().task_index["gsm8k"].yaml_path
    (include / "gsm8k_local.yaml").write_text(
        f"include: {shipped}\ntask: gsm8k_local\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    train: {data / 'train.jsonl'}\n    test: {data / 'test.jsonl'}\n")

    # first learn what the model answers, then make half of the test answers right (the few-shot
    # examples come from train, which stays as it is, so the prompts do not change)
    write("train", [str(i) for i in range(len(questions))])
    write("test", [str(i) for i in range(len(questions))])
    _, samples = lm_eval_samples(checkpoint, include, ["gsm8k_local"], num_fewshot=1)
    extracted = their_answers(samples, "gsm8k_local", "flexible-extract")
    write("test", [e if i % 2 == 0 and e != "[invalid]" else "123456" for i, e in enumerate(extracted)])
    results, _ = lm_eval_samples(checkpoint, include, ["gsm8k_local"], num_fewshot=1)

    ours = parse_suite({"name": "math", "batch_size": 4, "held_in": [
        {"task": "gsm8k", "metric": "exact_match,flexible-extract", "num_fewshot": 1,
         "data_files": {"train": "data/train.jsonl", "test": "data/test.jsonl"}}]}, tmp_path, "test suite")
    score = hf_scorer(ours, *load(checkpoint)).score().scores["gsm8k"]
    assert score == results["gsm8k_local"]["exact_match,flexible-extract"]
    assert score > 0


def test_bad_generation_suites_are_one_line_errors(tmp_path):
    checkpoint = write_model(tmp_path / "ckpt", "gpt2")
    tasks = write_generation_tasks(tmp_path / "tasks", examples=5)
    (tasks / "bad_filter.yaml").write_text((tasks / "digits.yaml").read_text().replace("task: digits", "task: bad_filter")
                                           .replace("function: majority_vote", "function: no_such_filter"))
    bad = parse_suite({"name": "bad", "task_dir": str(tasks), "held_in": [{"task": "bad_filter", "metric": "exact_match,vote"}]},
                      tasks, "bad suite")
    with pytest.raises(RecyclerError, match=r"task 'bad_filter': lm-eval cannot load it .*no_such_filter") as error:
        bad.build_tasks()
    assert "\n" not in str(error.value)

    chat = suite(tasks, 4, apply_chat_template=True)
    with pytest.raises(RecyclerError, match="apply_chat_template is set, but the tokenizer of .* has no chat template"):
        hf_scorer(chat, *load(checkpoint))
    with pytest.raises(RecyclerError, match="fewshot_as_multiturn: needs apply_chat_template"):
        suite(tasks, 4, fewshot_as_multiturn=True)
    shipped = {"name": "x", "held_in": [{"task": "gsm8k", "metric": "exact_match,strict-match", "data_files": "data.csv.gz"}]}
    with pytest.raises(RecyclerError, match="data_files must all be"):
        parse_suite(shipped, tmp_path, "suite").build_tasks()
    unknown = {"name": "x", "held_in": [{"task": "no_such_task_here", "data_files": "data.jsonl"}]}
    with pytest.raises(RecyclerError, match="not one of lm-eval's own tasks"):
        parse_suite(unknown, tmp_path, "suite").build_tasks()
