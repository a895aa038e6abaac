"""Tiny random checkpoints written as HF folders: a pool in seconds, for the tests and for checking
an install end to end (`python -m recycler.demo.tiny OUT` writes one scored on the `demo` suite)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers
import yaml
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from recycler.demo.skills import ALPHABET
from recycler.demo.tokenizer import build_char_tokenizer

CHARS = "0123456789+=-abcdefghij \n"


def tiny_config(arch: str, vocab_size: int, eos_id: int, width: int = 16, layers: int = 2,
                initializer_range: float = 0.02, positions: int = 32):
    special = {"bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": 0, "initializer_range": initializer_range}
    if arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_positions=positions, n_embd=width, n_layer=layers, n_head=2, tie_word_embeddings=True,
            **special,
        )
    if arch == "llama":
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=positions, tie_word_embeddings=False,
            **special,
        )
    raise ValueError(arch)


def write_checkpoint(
    folder: Path,
    *,
    arch: str = "gpt2",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    max_shard_size: str | None = None,
    chars: str = CHARS,
    width: int = 16,
    layers: int = 2,
    initializer_range: float = 0.02,
    positions: int = 32,
) -> Path:
    """A randomly initialized tiny causal LM with a character tokenizer, saved as safetensors (a
    wider `initializer_range` gives a less uniform model: varied greedy answers)."""
    torch.manual_seed(seed)
    tokenizer = build_char_tokenizer(chars)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tokenizer), tokenizer.eos_token_id, width, layers,
                                                                 initializer_range, positions))
    model.to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    tokenizer.save_pretrained(folder)
    return folder


def write_pool(root: Path, count: int = 3, *, base: bool = False, name: str = "tiny", **kwargs) -> Path:
    """A pool spec with `count` checkpoints (and a base when asked) under root; returns the spec path."""
    refs = []
    for i in range(count):
        write_checkpoint(root / f"ckpt{i}", seed=i + 1, **kwargs)
        refs.append({"name": f"c{i}", "path": f"ckpt{i}"})
    spec = {"name": name, "checkpoints": refs}
    if base:
        write_checkpoint(root / "base", seed=100, **kwargs)
        spec["base"] = {"name": "base", "path": "base"}
    path = root / "pool.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a pool of tiny random checkpoints scored on the demo suite.")
    parser.add_argument("out", type=Path, help="folder to write the checkpoints and pool.yaml into")
    parser.add_argument("--count", type=int, default=3, help="checkpoints in the pool")
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    print(write_pool(args.out, args.count, base=True, chars=ALPHABET))


if __name__ == "__main__":
    main()
