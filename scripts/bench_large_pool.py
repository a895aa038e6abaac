"""Benchmark: a pool larger than memory divided by workers, streamed from the shared page cache.

Builds (once) a pool of Llama-shaped checkpoints of random weights, then measures, each against a
reference timed in the same run:
- a streamed candidate against the read floor (one torch pass summing zero-copy views of every
  memory-mapped tensor of the pool: the bytes a candidate must read);
- a streamed candidate against mergekit's `run_merge` of the same linear merge plus `from_pretrained`;
- a whole search with 2 workers on the pool, every baseline included (SLERP too): per worker, peak
  anonymous memory (what it allocated) and peak USS (that plus the pages of the mapped pool only it
  touched, which the kernel can reclaim), and the machine's used memory (total minus available, so
  the page cache is not counted), sampled twice a second.

    python scripts/bench_large_pool.py --checkpoints 24 --root /tmp/recycler-large --search --mergekit
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
import yaml
from safetensors.torch import save_file
from transformers import LlamaConfig

from recycler.demo.skills import ALPHABET
from recycler.demo.tokenizer import build_char_tokenizer
from recycler.merge import MemoryNeeds, Merger
from recycler.pool import load_pool
from recycler.recipes import LinearRecipe
from recycler.spec import load_spec
from recycler.suite import SUITES_DIR

CONFIG = dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=20,
              num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=64, tie_word_embeddings=False)


def shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    h, i = config.hidden_size, config.intermediate_size
    result = {"model.embed_tokens.weight": (config.vocab_size, h), "model.norm.weight": (h,), "lm_head.weight": (config.vocab_size, h)}
    for layer in range(config.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        for part in ("q_proj", "k_proj", "v_proj", "o_proj"):
            result[f"{prefix}self_attn.{part}.weight"] = (h, h)
        result[f"{prefix}mlp.gate_proj.weight"] = (i, h)
        result[f"{prefix}mlp.up_proj.weight"] = (i, h)
        result[f"{prefix}mlp.down_proj.weight"] = (h, i)
        result[f"{prefix}input_layernorm.weight"] = (h,)
        result[f"{prefix}post_attention_layernorm.weight"] = (h,)
    return result


def build_pool(root: Path, count: int, with_base: bool = False) -> Path:
    """`count` checkpoints of one random base plus a small perturbation each, bfloat16, as HF folders;
    with a base, one more such checkpoint is the pool's base (so TIES and DARE are among the baselines)."""
    config = LlamaConfig(**CONFIG, bos_token_id=1, eos_token_id=1, pad_token_id=0, architectures=["LlamaForCausalLM"])
    tokenizer = build_char_tokenizer(ALPHABET)
    refs = []
    for index in range(count + with_base):
        folder = root / f"c{index}"
        refs.append({"name": f"c{index}", "path": str(folder)})
        if (folder / "model.safetensors").is_file():
            config.save_pretrained(folder)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        base, own = torch.Generator().manual_seed(0), torch.Generator().manual_seed(index + 1)
        tensors = {}
        for name, shape in shapes(config).items():
            if name.endswith("norm.weight"):
                tensors[name] = torch.ones(shape, dtype=torch.bfloat16)
                continue
            weight = torch.randn(shape, generator=base).mul_(0.02)
            weight.add_(torch.randn(shape, generator=own), alpha=0.005)
            tensors[name] = weight.to(torch.bfloat16)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        print(f"built {folder}", flush=True)
    spec = {"name": "large", "checkpoints": refs[:count], **({"base": refs[count]} if with_base else {}),
            "suite": {"name": "small-demo", "task_dir": str(SUITES_DIR / "demo"),
                      "batch_size": 32, "limit": 10,
                      "held_in": [{"task": t} for t in ("add", "reverse", "upper")], "held_out": [{"task": "double"}]},
            "resources": {"workers": 2}}
    path = root / "pool.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def best_of(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_streaming(spec_path: Path, repeats: int) -> dict:
    pool = load_pool(load_spec(spec_path))
    rows = {name: pool.rows(name) for name in pool.tensor_names}
    pool_bytes = len(pool.members) * pool.model_bytes
    floor = best_of(lambda: [row.sum() for tensors in rows.values() for row in tensors], repeats)
    merger = Merger(pool, budget=MemoryNeeds.of(pool, torch.device("cpu")).streamed)
    uniform = LinearRecipe({n: 1.0 / len(pool.names) for n in pool.names})
    ours = best_of(lambda: merger.apply(uniform), repeats)
    return {"checkpoints": len(pool.members), "pool_GB": pool_bytes / 1e9, "floor_s": floor, "floor_GBps": pool_bytes / floor / 1e9,
            "streamed_s": ours, "streamed_GBps": pool_bytes / ours / 1e9, "streamed_of_floor": floor / ours}


def bench_mergekit(spec_path: Path, repeats: int) -> dict:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    from transformers import AutoModelForCausalLM

    pool = load_pool(load_spec(spec_path))
    recipe = LinearRecipe({n: 1.0 / len(pool.names) for n in pool.names})
    config = MergeConfiguration.model_validate(recipe.mergekit_config(pool))
    merger = Merger(pool, budget=MemoryNeeds.of(pool, torch.device("cpu")).streamed)
    ours = best_of(lambda: merger.apply(recipe), repeats)
    with tempfile.TemporaryDirectory() as out:
        def mergekit_candidate():
            run_merge(config, out, options=MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False, lazy_unpickle=True))
            AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)

        theirs = best_of(mergekit_candidate, 1)
    return {"streamed_s": ours, "mergekit_merge_and_load_s": theirs, "speedup": theirs / ours}


def anonymous_bytes(pid: int) -> int:
    """A process's anonymous memory (heap, tensors it allocated): what it holds privately, without
    the pages of memory-mapped files it touched, which USS counts too but the kernel can reclaim."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Anonymous line in /proc/{pid}/smaps_rollup")


def bench_search(spec_path: Path, trials: int) -> dict:
    from recycler.records import side_baselines
    from recycler.search import run_search

    peaks: dict[int, dict[str, float]] = {}  # per worker process: peak anonymous memory and USS
    used: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            for process in psutil.process_iter(["cmdline"]):
                if not any("ray::MergeWorker" in c for c in (process.info["cmdline"] or [])):
                    continue
                try:
                    anonymous, uss = anonymous_bytes(process.pid), process.memory_full_info().uss
                except (psutil.Error, OSError, RuntimeError):
                    continue
                peak = peaks.setdefault(process.pid, {"anonymous_GB": 0.0, "uss_GB": 0.0})
                peak["anonymous_GB"] = max(peak["anonymous_GB"], anonymous / 1e9)
                peak["uss_GB"] = max(peak["uss_GB"], uss / 1e9)
            memory = psutil.virtual_memory()
            used.append((memory.total - memory.available) / 1e9)

    spec = load_spec(spec_path)
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"trials": trials})})
    pool = load_pool(spec)
    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        study = run_search(spec, Path(folder) / "study", progress=False)
        complete = sum(t.state.name == "COMPLETE" for t in study.trials)
        side = {label: stored.error is None for label, stored in side_baselines(study).items()}
        baselines = {"in_search": sum(t.user_attrs.get("baseline") is not None for t in study.trials), "side_scored": side}
    done.set()
    model_gb, scratch_gb = pool.model_bytes / 1e9, MemoryNeeds.of(pool, torch.device("cpu")).scratch / 1e9
    worker_limit_gb = model_gb + scratch_gb + 1.5  # one model, the merge's scratch, and 1.5 GB for the rest of a worker
    return {"trials": trials, "complete": complete, "baselines": baselines, "seconds": time.perf_counter() - started,
            "model_GB": model_gb, "scratch_GB": scratch_gb, "workers": list(peaks.values()),
            "peak_worker_anonymous_GB": max((p["anonymous_GB"] for p in peaks.values()), default=0.0),
            "peak_worker_uss_GB": max((p["uss_GB"] for p in peaks.values()), default=0.0), "worker_limit_GB": worker_limit_gb,
            "peak_used_GB": max(used, default=0.0), "machine_limit_GB": 2 * worker_limit_gb + 2,
            "machine_total_GB": psutil.virtual_memory().total / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=int, default=24)
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "recycler-large")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mergekit", action="store_true", help="also time mergekit's merge and load of the same candidate")
    parser.add_argument("--search", type=int, default=0, metavar="TRIALS", help="also run a search of this many trials on 2 workers")
    parser.add_argument("--base", action="store_true", help="give the pool a base: TIES and DARE join the search's baselines")
    args = parser.parse_args()
    torch.set_num_threads(2)
    spec_path = build_pool(args.root, args.checkpoints, args.base)
    print(json.dumps({"streaming": bench_streaming(spec_path, args.repeats)}), flush=True)
    if args.mergekit:
        print(json.dumps({"mergekit": bench_mergekit(spec_path, args.repeats)}), flush=True)
    if args.search:
        print(json.dumps({"search": bench_search(spec_path, args.search)}), flush=True)


if __name__ == "__main__":
    main()
