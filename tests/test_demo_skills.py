import json
import random

import pytest

from recycler.demo.skills import (
    ALPHABET,
    CHAINS_HELD_OUT,
    CHAINS_SEEN,
    TASKS,
    TRAINING_TASKS,
    WORD_SKILLS,
    apply_chain,
    write_eval_data,
)
from recycler.demo.tokenizer import build_char_tokenizer

SINGLE = {"reverse": "r", "sort": "s", "upper": "u", "double": "d"}


def draws(task, count=200, seed=0):
    rng = random.Random(seed)
    return [task.example(rng) for _ in range(count)]


def word_of(prompt):
    return prompt.rstrip("=").rsplit(":", 1)[-1]


@pytest.mark.parametrize("name", [*TASKS, *TRAINING_TASKS])
def test_generators_are_deterministic_given_a_seed(name):
    task = {**TASKS, **TRAINING_TASKS}[name]
    assert draws(task, seed=7) == draws(task, seed=7)
    assert draws(task, seed=7) != draws(task, seed=8)


@pytest.mark.parametrize("name", [*TASKS, *TRAINING_TASKS])
def test_examples_are_prompt_equals_answer_in_the_alphabet(name):
    task = {**TASKS, **TRAINING_TASKS}[name]
    for prompt, answer in draws(task):
        assert prompt.endswith("=") and prompt.count("=") == 1
        assert answer and "\n" not in answer and "=" not in answer
        assert set(prompt + answer + "\n") <= set(ALPHABET)


def test_addition_answer_is_the_sum():
    for prompt, answer in draws(TASKS["add"]):
        a, b = prompt.rstrip("=").split("+")
        assert int(answer) == int(a) + int(b)


def test_count_answer_counts_the_letter():
    for prompt, answer in draws(TASKS["count"]):
        marker, letter, word = prompt.rstrip("=").split(":")
        assert marker == "c" and int(answer) == word.count(letter)
    assert {answer for _, answer in draws(TASKS["count"])} >= {"0", "1", "2"}


def test_single_word_skills():
    rules = {
        "reverse": lambda word: word[::-1],
        "sort": lambda word: "".join(sorted(word)),
        "upper": str.upper,
        "double": lambda word: "".join(c * 2 for c in word),
    }
    for name, rule in rules.items():
        for prompt, answer in draws(TASKS[name]):
            assert prompt == f"{SINGLE[name]}:{word_of(prompt)}="
            assert answer == rule(word_of(prompt)) == WORD_SKILLS[SINGLE[name]](word_of(prompt))


def test_held_out_tasks_are_compositions_of_held_in_skills():
    held_out = {name for name, task in TASKS.items() if task.held_out}
    assert held_out == {"upper_reverse", "double_reverse"}
    assert sum(not task.held_out for task in TASKS.values()) >= 4
    for prompt, answer in draws(TASKS["upper_reverse"]):
        assert prompt == f"u:r:{word_of(prompt)}=" and answer == word_of(prompt)[::-1].upper()
    for prompt, answer in draws(TASKS["double_reverse"]):
        assert prompt == f"d:r:{word_of(prompt)}=" and answer == "".join(c * 2 for c in word_of(prompt)[::-1])


def test_chains_apply_right_to_left():
    assert apply_chain("ur", "abc") == "CBA"
    assert apply_chain("rs", "cab") == "cba"
    assert apply_chain("sr", "cab") == "abc"


def test_held_out_chains_never_appear_in_training():
    assert not set(CHAINS_HELD_OUT) & set(CHAINS_SEEN)
    held_out_prefixes = {"".join(f"{m}:" for m in chain) for chain in CHAINS_HELD_OUT}
    for task in TRAINING_TASKS.values():
        assert not task.held_out
        for prompt, _ in draws(task, 500):
            assert not any(prompt.startswith(prefix) for prefix in held_out_prefixes)


def test_alphabet_tokenizes_one_token_per_character():
    tokenizer = build_char_tokenizer(ALPHABET)
    assert tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id) == "\n"
    ids = tokenizer("u:r:abc=CBA\n")["input_ids"]
    assert len(ids) == len("u:r:abc=CBA\n") and 0 not in ids


def test_write_eval_data(tmp_path):
    write_eval_data(tmp_path, examples_per_task=50, seed=3)
    assert sorted(p.stem for p in tmp_path.glob("*.jsonl")) == sorted(TASKS)
    for name in TASKS:
        rows = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 50 and all(set(row) == {"prompt", "answer"} for row in rows)
    first = (tmp_path / "add.jsonl").read_text()
    write_eval_data(tmp_path, examples_per_task=50, seed=3)
    assert (tmp_path / "add.jsonl").read_text() == first


def test_eval_data_is_mostly_unseen_in_training(tmp_path):
    write_eval_data(tmp_path)
    rng = random.Random("0:base")
    seen = {TRAINING_TASKS["reverse"].example(rng) for _ in range(2000)}
    rows = [json.loads(line) for line in (tmp_path / "reverse.jsonl").read_text().splitlines()]
    overlap = sum((row["prompt"], row["answer"]) in seen for row in rows)
    assert overlap < len(rows) // 2
