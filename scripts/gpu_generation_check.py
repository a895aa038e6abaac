"""GPU check: does left-padded batched greedy generation give the answers that one prompt at a time
gives, on CUDA, for a rotary (Llama) and an absolute-position (GPT-2) model, in float32 and bfloat16?

Needs only torch and transformers (the GPU machine has no lm-eval): it generates as lm-eval's HFLM
does (left padding with an attention mask, greedy, stop at the newline) for the demo suite's
prompts, at batch size 64 and 1, and counts the answers that differ, with the time of each.

    python scripts/gpu_generation_check.py --out result.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from recycler.demo.skills import ALPHABET
from recycler.demo.tokenizer import build_char_tokenizer

DATA = Path(__file__).resolve().parents[1] / "eval_suites" / "demo" / "data"


def prompts() -> list[str]:
    rows = [json.loads(line) for file in sorted(DATA.glob("*.jsonl")) for line in file.read_text().splitlines()]
    return [row["prompt"] for row in rows][:512]


def model(arch: str, vocab: int, eos: int, attention: str) -> torch.nn.Module:
    torch.manual_seed(0)
    special = dict(bos_token_id=eos, eos_token_id=eos, pad_token_id=0, initializer_range=0.1)
    if arch == "gpt2":
        config = GPT2Config(vocab_size=vocab, n_positions=256, n_embd=512, n_layer=8, n_head=8, **special)
    else:
        config = LlamaConfig(vocab_size=vocab, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                             num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=256, **special)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attention).eval()


@torch.no_grad()
def generate(lm, tokenizer, texts: list[str], batch_size: int, device: str) -> tuple[list[str], float]:
    answers: list[str] = []
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # longest first, as lm-eval does
    for start in range(0, len(order), batch_size):
        chunk = [texts[i] for i in order[start:start + batch_size]]
        batch = tokenizer(chunk, return_tensors="pt", padding="longest").to(device)
        out = lm.generate(**batch, max_new_tokens=16, do_sample=False, pad_token_id=0)
        for row in out[:, batch["input_ids"].shape[1]:].tolist():
            answers.append(tokenizer.decode(row).split("\n")[0])
    sync()
    by_index = dict(zip(order, answers))
    return [by_index[i] for i in range(len(texts))], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="gpu_generation.json")
    parser.add_argument("--prompts", type=int, default=512)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a dry run of the script
    tokenizer = build_char_tokenizer(ALPHABET)
    tokenizer.padding_side = "left"
    texts = prompts()[: args.prompts]
    rows = []
    for arch in ("llama", "gpt2"):
        for dtype in (torch.float32, torch.bfloat16):
            for attention in ("sdpa", "eager"):
                lm = model(arch, len(tokenizer), tokenizer.eos_token_id, attention).to(device, dtype)
                generate(lm, tokenizer, texts[:64], 64, device)  # warm-up
                batched, batched_s = generate(lm, tokenizer, texts, 64, device)
                single, single_s = generate(lm, tokenizer, texts, 1, device)
                differ = sum(a != b for a, b in zip(batched, single))
                row = {"arch": arch, "dtype": str(dtype).removeprefix("torch."), "attention": attention,
                       "prompts": len(texts), "answers_differ": differ, "empty_answers": sum(not a for a in single),
                       "distinct_answers": len(set(single)), "batched_seconds": batched_s, "batch_one_seconds": single_s,
                       "speedup": single_s / batched_s}
                rows.append(row)
                print(json.dumps(row), flush=True)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    Path(args.out).write_text(json.dumps({"device": name, "torch": torch.__version__,
                                          "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
