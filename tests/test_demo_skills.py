import json
import random

import pytest

from recycler.demo.skills import (
    ALPHABET,
    CHAINS_HELD_OUT,
    CHAINS_SEEN,
    HELD_OUT_FIRST,
    MAX_WORD,
    MIN_WORD,
    SIBLING_FIRST,
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


def test_count_answer_counts_the_letters():
    for prompt, answer in draws(TASKS["count"]):
        marker, word = prompt.rstrip("=").split(":")
        assert marker == "c" and int(answer) == len(word)
    assert {answer for _, answer in draws(TASKS["count"])} == {str(n) for n in range(MIN_WORD, MAX_WORD + 1)}


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
    assert held_out == {"upper_double", "double_sort"}
    assert sum(not task.held_out for task in TASKS.values()) >= 4
    for prompt, answer in draws(TASKS["upper_double"]):
        assert prompt == f"u:d:{word_of(prompt)}=" and answer == "".join(c * 2 for c in word_of(prompt)).upper()
    for prompt, answer in draws(TASKS["double_sort"]):
        assert prompt == f"d:s:{word_of(prompt)}=" and answer == "".join(c * 2 for c in sorted(word_of(prompt)))


def test_chains_apply_right_to_left():
    assert apply_chain("ur", "abc") == "CBA"
    assert apply_chain("rs", "cab") == "cba"
    assert apply_chain("sr", "cab") == "abc"


def test_training_chains_held_out_skills_only_on_other_words():
    assert not set(CHAINS_HELD_OUT) & set(CHAINS_SEEN)
    assert not set(SIBLING_FIRST) & set(HELD_OUT_FIRST)
    held_out_prefixes = tuple("".join(f"{m}:" for m in chain) for chain in CHAINS_HELD_OUT)
    chained = [prompt for prompt, _ in draws(TRAINING_TASKS["chains"], 2000) if prompt.startswith(held_out_prefixes)]
    assert chained and all(word_of(prompt)[0] in SIBLING_FIRST for prompt in chained)
    for task in TASKS.values():
        if task.held_out:
            assert all(word_of(prompt)[0] in HELD_OUT_FIRST for prompt, _ in draws(task))
    assert not any(task.held_out for task in TRAINING_TASKS.values())


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


def test_eval_data_comes_from_its_own_stream(tmp_path):
    write_eval_data(tmp_path, seed=0)
    rows = [json.loads(line) for line in (tmp_path / "reverse.jsonl").read_text().splitlines()]
    training_draws = set(draws(TASKS["reverse"], 2000, seed=0))
    overlap = sum((row["prompt"], row["answer"]) in training_draws for row in rows)
    assert overlap < len(rows) // 4
