"""Synthetic skills for the demo pool, each written as `prompt=answer` with a short task marker.

Held-in tasks are the single skills the checkpoints are trained on. Held-out tasks chain two
word skills (`u:d:abc=AABBCC` is upper-case of doubling) on words training never chains them on:
training shows those chains only on words starting with a-e, and other chains (`CHAINS_SEEN`)
on any word, so a model scores on the held-out words only if it composes the two skills
rather than recalls examples, and loses them as it forgets how to chain.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LETTERS = "abcdefghij"
MIN_WORD, MAX_WORD = 3, 6

WORD_SKILLS: dict[str, Callable[[str], str]] = {
    "r": lambda word: word[::-1],
    "s": lambda word: "".join(sorted(word)),
    "u": str.upper,
    "d": lambda word: "".join(c + c for c in word),
}

CHAINS_HELD_OUT = ("ud", "ds")
CHAINS_SEEN = ("ur", "ru", "rd", "dr", "du", "us", "su", "rs", "sd")
SIBLING_FIRST, HELD_OUT_FIRST = "abcde", "fghij"

MARKERS = "rsudc:+="
ALPHABET = "".join(sorted(set("0123456789\n" + MARKERS + LETTERS + LETTERS.upper())))


@dataclass(frozen=True)
class Task:
    """One skill: `example(rng)` returns (prompt ending in "=", answer without the final newline)."""

    name: str
    example: Callable[[random.Random], tuple[str, str]]
    held_out: bool = False


def random_word(rng: random.Random, first_letters: str = LETTERS) -> str:
    """A word over a-j; `first_letters` splits words between training and held-out evaluation."""
    length = rng.randint(MIN_WORD, MAX_WORD)
    return rng.choice(first_letters) + "".join(rng.choice(LETTERS) for _ in range(length - 1))


def apply_chain(markers: str, word: str) -> str:
    """Apply word skills right to left, like function composition: "ur" is upper(reverse(word))."""
    for marker in reversed(markers):
        word = WORD_SKILLS[marker](word)
    return word


def chain_prompt(markers: str, word: str) -> str:
    return "".join(f"{m}:" for m in markers) + f"{word}="


def _chain_example(markers: str, first_letters: str = LETTERS) -> Callable[[random.Random], tuple[str, str]]:
    def example(rng: random.Random) -> tuple[str, str]:
        word = random_word(rng, first_letters)
        return chain_prompt(markers, word), apply_chain(markers, word)

    return example


def _addition(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(10, 99), rng.randint(1, 9)
    return f"{a}+{b}=", str(a + b)


def _count(rng: random.Random) -> tuple[str, str]:
    """Count the letters of a word."""
    word = random_word(rng)
    return f"c:{word}=", str(len(word))


def _training_chains(rng: random.Random) -> tuple[str, str]:
    markers = rng.choice(CHAINS_SEEN + CHAINS_HELD_OUT)
    return _chain_example(markers, SIBLING_FIRST if markers in CHAINS_HELD_OUT else LETTERS)(rng)


_SINGLE_NAMES = {"r": "reverse", "s": "sort", "u": "upper", "d": "double"}
_HELD_OUT_NAMES = {"ud": "upper_double", "ds": "double_sort"}

TASKS: dict[str, Task] = {
    "add": Task("add", _addition),
    **{name: Task(name, _chain_example(marker)) for marker, name in _SINGLE_NAMES.items()},
    "count": Task("count", _count),
    **{
        name: Task(name, _chain_example(markers, HELD_OUT_FIRST), held_out=True)
        for markers, name in _HELD_OUT_NAMES.items()
    },
}

TRAINING_TASKS: dict[str, Task] = {
    **{name: task for name, task in TASKS.items() if not task.held_out},
    "chains": Task("chains", _training_chains),
}


def write_eval_data(folder: Path, examples_per_task: int = 100, seed: int = 1234) -> None:
    """Write `<task>.jsonl` per task; each task draws from its own seeded stream, apart from training's."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, task in TASKS.items():
        rng = random.Random(f"eval:{seed}:{name}")
        examples = (task.example(rng) for _ in range(examples_per_task))
        lines = [json.dumps({"prompt": prompt, "answer": answer}) for prompt, answer in examples]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
