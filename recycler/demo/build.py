"""Build the demo pool: pretrain a tiny character-level GPT-2 on synthetic skills, then branch it.

The branches share the base as a lab's training runs do (different data mixtures, learning
rates and step counts, an early snapshot, over-specialized runs at a high learning rate), which is what makes their
linear merges meaningful. The build is seeded and cached under the hash of its recipe.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from tqdm import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from recycler.demo import skills
from recycler.demo.skills import ALPHABET, TRAINING_TASKS
from recycler.demo.tokenizer import build_char_tokenizer

IGNORE = -100


@dataclass(frozen=True)
class Branch:
    """One training run continued from the base: its data mixture (task -> weight), lr and length."""

    name: str
    mixture: dict[str, float]
    lr: float
    steps: int


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the pool; its hash, with the data generators' source, names the cached build."""

    layers: int = 4
    width: int = 96
    heads: int = 4
    context: int = 32
    batch_size: int = 64
    seed: int = 0
    base_mixture: dict[str, float] = field(default_factory=dict)
    base_lr: float = 3e-3
    base_steps: int = 900
    early: str = "early"
    early_step: int = 225
    branches: tuple[Branch, ...] = ()

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True) + inspect.getsource(skills)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


SINGLE_SKILLS = ("add", "reverse", "sort", "upper", "double", "count")

# No branch trains on every skill, nor on chains: the held-out chains compose skills that different
# checkpoints hold (upper and double, double and sort), so they test whether merges generalize.
DEMO_RECIPE = Recipe(
    base_mixture={**{name: 1.0 for name in SINGLE_SKILLS}, "chains": 1.5},
    branches=(
        Branch("arith", {"add": 1.0, "count": 1.0}, lr=1e-3, steps=150),
        Branch("order", {"reverse": 1.0, "sort": 1.0}, lr=1e-3, steps=100),
        Branch("upper_count", {"upper": 1.0, "count": 1.0}, lr=1e-3, steps=100),
        Branch("double_add", {"double": 1.0, "add": 1.0}, lr=1e-3, steps=100),
        Branch("add", {"add": 1.0}, lr=2e-3, steps=150),
        Branch("sort_count", {"sort": 1.0, "count": 1.0}, lr=5e-4, steps=100),
        Branch("reverse_hot", {"reverse": 1.0}, lr=2e-3, steps=100),
    ),
)


def gpt2_config(recipe: Recipe, tokenizer: PreTrainedTokenizerFast) -> GPT2Config:
    eos = tokenizer.eos_token_id
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=recipe.context,
        n_embd=recipe.width,
        n_layer=recipe.layers,
        n_head=recipe.heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )


def batches(
    mixture: dict[str, float], batch_size: int, rng: random.Random, vocab: dict[str, int]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless right-padded batches of `prompt=answer\\n`, labelled only on the answer and its newline."""
    names, weights = list(mixture), list(mixture.values())
    while True:
        rows = []
        for name in rng.choices(names, weights, k=batch_size):
            prompt, answer = TRAINING_TASKS[name].example(rng)
            ids = [vocab[c] for c in prompt + answer + "\n"]
            rows.append((ids, [IGNORE] * len(prompt) + ids[len(prompt) :]))
        width = max(len(ids) for ids, _ in rows)
        yield (
            torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in rows]),
            torch.tensor([labels + [IGNORE] * (width - len(labels)) for _, labels in rows]),
        )


def warmup_cosine(steps: int, warmup: float = 0.1) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up, then cosine decay to a tenth, as most real runs do."""
    ramp = max(1, int(steps * warmup))

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - ramp) / max(1, steps - ramp)))

    return factor


def train(
    model: GPT2LMHeadModel,
    mixture: dict[str, float],
    lr: float,
    steps: int,
    *,
    batch_size: int,
    vocab: dict[str, int],
    rng: random.Random,
    label: str,
    on_step: Callable[[int], None] = lambda step: None,
) -> None:
    """AdamW on the mixture, with a progress bar named `label`; `on_step(k)` runs after k steps,
    so a run can be snapshotted mid-way."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps))
    data = batches(mixture, batch_size, rng, vocab)
    with tqdm(total=steps, desc=label, unit="step", dynamic_ncols=True, mininterval=1.0) as bar:
        for step in range(1, steps + 1):
            input_ids, labels = next(data)
            loss = model(input_ids=input_ids, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            on_step(step)
            bar.update(1)
            if step % 25 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)


def save(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def pool_spec(recipe: Recipe) -> dict[str, object]:
    names = [recipe.early] + [branch.name for branch in recipe.branches]
    return {
        "name": "demo",
        "checkpoints": [{"name": name, "path": f"checkpoints/{name}"} for name in names],
        "base": {"name": "base", "path": "base"},
        "suite": "demo",
    }


def build_into(folder: Path, recipe: Recipe) -> None:
    """Train and save every checkpoint of the pool, and its spec, into folder."""
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(recipe.seed)
    tokenizer = build_char_tokenizer(ALPHABET)
    vocab = tokenizer.get_vocab()
    model = GPT2LMHeadModel(gpt2_config(recipe, tokenizer))

    def snapshot_early(step: int) -> None:
        if step == recipe.early_step:
            save(model, tokenizer, folder / "checkpoints" / recipe.early)

    runs = 1 + len(recipe.branches)
    print(f"building the demo pool: pretraining the base for {recipe.base_steps} steps, then "
          f"{len(recipe.branches)} checkpoints branched from it", flush=True)
    started = time.perf_counter()
    rng = random.Random(f"{recipe.seed}:base")
    train(model, recipe.base_mixture, recipe.base_lr, recipe.base_steps, batch_size=recipe.batch_size, vocab=vocab,
          rng=rng, label=f"[1/{runs}] base", on_step=snapshot_early)
    save(model, tokenizer, folder / "base")
    print(f"base: {recipe.base_steps} steps ({recipe.early} at step {recipe.early_step}) "
          f"in {time.perf_counter() - started:.0f}s", flush=True)
    base_state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for run, branch in enumerate(recipe.branches, start=2):
        started = time.perf_counter()
        model.load_state_dict(base_state)
        rng = random.Random(f"{recipe.seed}:{branch.name}")
        train(model, branch.mixture, branch.lr, branch.steps, batch_size=recipe.batch_size, vocab=vocab, rng=rng,
              label=f"[{run}/{runs}] {branch.name}")
        save(model, tokenizer, folder / "checkpoints" / branch.name)
        print(f"{branch.name}: {branch.steps} steps at lr {branch.lr:g} in {time.perf_counter() - started:.0f}s",
              flush=True)
    (folder / "pool.yaml").write_text(yaml.safe_dump(pool_spec(recipe), sort_keys=False))
    (folder / "build.json").write_text(json.dumps({"recipe": recipe.digest()}) + "\n")


def cached_digest(out: Path) -> str | None:
    try:
        return json.loads((out / "build.json").read_text())["recipe"]
    except (OSError, ValueError, KeyError):
        return None


def build_demo_pool(out: Path, force: bool = False, recipe: Recipe = DEMO_RECIPE) -> Path:
    """Build the pool into out (built aside, then renamed into place) unless it is already there; returns pool.yaml."""
    out = Path(out)
    if not force and cached_digest(out) == recipe.digest():
        print(f"reusing the demo pool in {out} (recipe {recipe.digest()})")
        return out / "pool.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    started = time.perf_counter()
    try:
        build_into(staging, recipe)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        retired = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(retired)
        shutil.rmtree(retired)
    staging.rename(out)
    print(f"built the demo pool in {out} in {time.perf_counter() - started:.0f}s")
    return out / "pool.yaml"
