"""Benchmark: writing a candidate merge into the resident model, against the memory-bandwidth floor
and against mergekit's merge-to-disk-then-load.

Every figure is a ratio to a reference measured in the same run, since absolute times drift on a
shared machine. Usage:
    python scripts/bench_materialize.py --layers 12 --width 768 --counts 2 4 8 16 --dtypes float32 bfloat16
    python scripts/bench_materialize.py --mergekit --counts 4 --dtypes float32
    python scripts/bench_materialize.py --methods --counts 4 --dtypes float32
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from recycler.merge import MemoryNeeds, Merger
from recycler.pool import load_pool
from recycler.recipes import LinearRecipe
from recycler.spec import PoolSpec


def write_pool(root: Path, count: int, dtype: torch.dtype, layers: int, width: int, base: bool = False) -> PoolSpec:
    from recycler.demo.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer("abcdefghij0123456789\n")
    config = GPT2Config(n_layer=layers, n_embd=width, n_head=max(1, width // 64), vocab_size=50257, n_positions=1024)
    refs = []
    for i in range(count + base):
        folder = root / f"c{i}"
        if not folder.exists():
            torch.manual_seed(i)
            model = GPT2LMHeadModel(config).to(dtype)
            model.save_pretrained(folder, max_shard_size="20GB")
            tokenizer.save_pretrained(folder)
            del model
        refs.append({"name": f"c{i}", "path": str(folder)})
    if base:  # the last folder serves as the base
        return PoolSpec.model_validate({"name": "bench", "checkpoints": refs[:-1], "base": {"name": "base", "path": refs[-1]["path"]}})
    return PoolSpec.model_validate({"name": "bench", "checkpoints": refs})


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_engine(spec: PoolSpec, repeats: int) -> dict:
    pool = load_pool(spec)
    merger = Merger(pool, budget=MemoryNeeds.of(pool, torch.device("cpu")).resident)
    n = len(spec.checkpoints)
    weights = {c.name: 1.0 / n for c in spec.checkpoints}
    ours = timed(lambda: merger.apply(LinearRecipe(weights)), repeats)
    stacks = list(merger.rows.stacks.values())
    # Reference: torch reading the same stacked bytes once (a contiguous full sum): the read
    # bandwidth floor. The engine moves these bytes plus one write of the merged model.
    reference = timed(lambda: [s.sum() for s in stacks], repeats)
    # Second reference: a copy of the same bytes (reads them once, writes them once).
    copies = [torch.empty_like(s) for s in stacks]
    copy = timed(lambda: [c.copy_(s) for c, s in zip(copies, stacks)], repeats)
    element = stacks[0].element_size()
    parameters = sum(s.shape[1] for s in stacks)
    moved = sum(s.numel() for s in stacks) * element + parameters * element
    return {
        "checkpoints": n, "dtype": str(stacks[0].dtype).removeprefix("torch."),
        "parameters": parameters, "bytes_moved": moved,
        "engine_s": ours, "engine_GBps": moved / ours / 1e9,
        "reference_s": reference, "reference_GBps": (moved - parameters * element) / reference / 1e9,
        "ratio_to_reference": (moved / ours) / ((moved - parameters * element) / reference),
        "copy_s": copy, "copy_GBps": 2 * (moved - parameters * element) / copy / 1e9,
        "ratio_to_copy": (moved / ours) / (2 * (moved - parameters * element) / copy),
    }


def bench_mergekit(spec: PoolSpec, root: Path, repeats: int) -> dict:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    pool = load_pool(spec)
    n = len(spec.checkpoints)
    recipe = LinearRecipe({c.name: 1.0 / n for c in spec.checkpoints})
    config = MergeConfiguration.model_validate(recipe.mergekit_config(pool))
    out = root / "mergekit-out"

    def mergekit_candidate():
        run_merge(config, str(out), options=MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False))
        GPT2LMHeadModel.from_pretrained(str(out))

    merger = Merger(pool)
    ours = timed(lambda: merger.apply(recipe), repeats)
    theirs = timed(mergekit_candidate, repeats)
    return {"checkpoints": n, "engine_s": ours, "mergekit_merge_and_load_s": theirs, "speedup": theirs / ours}


def bench_methods(spec: PoolSpec, repeats: int) -> list[dict]:
    """Seconds per candidate for each merge method, as a ratio to the fused linear sum over the same stacks."""
    from recycler.baselines import baseline_recipes
    from recycler.recipes import LayerwiseRecipe

    merger = Merger(load_pool(spec))
    names = [c.name for c in spec.checkpoints]
    recipes = {label: r for label, r in baseline_recipes(names, has_base=True).items() if label not in names}
    uniform = dict(recipes["uniform"].weights)
    blocks = -(-merger.model.config.num_hidden_layers // 2)
    recipes["layerwise"] = LayerwiseRecipe(tuple(uniform for _ in range(blocks)), uniform, block_size=2)
    reference = timed(lambda: merger.apply(recipes["uniform"]), repeats)
    rows = []
    for label, recipe in recipes.items():
        seconds = reference if label == "uniform" else timed(lambda: merger.apply(recipe), repeats)
        rows.append({"checkpoints": len(names), "method": recipe.method, "baseline": label,
                     "seconds": seconds, "ratio_to_linear": seconds / reference})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--counts", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mergekit", action="store_true", help="compare with mergekit's run_merge + load instead")
    parser.add_argument("--methods", action="store_true", help="time every merge method against the linear sum (pool with a base)")
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "recycler-bench")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}))
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for count in args.counts:
            spec = write_pool(args.root / f"{args.layers}x{args.width}-{dtype_name}", count, dtype, args.layers, args.width, base=args.methods)
            if args.methods:
                results = bench_methods(spec, args.repeats)
            else:
                results = [bench_mergekit(spec, args.root, args.repeats) if args.mergekit else bench_engine(spec, args.repeats)]
            for result in results:
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}), flush=True)
            gc.collect()


if __name__ == "__main__":
    main()
