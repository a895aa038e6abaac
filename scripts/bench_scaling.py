"""Benchmark: how a worker's trial time and peak memory grow with the number of checkpoints and
the model size, on the demo suite (800 loglikelihood requests) with random character-level GPT-2
pools. Each configuration runs in a fresh process so its peak RSS is its own. Usage:
    python scripts/bench_scaling.py --counts 2 4 8 16 --widths 128 512 --layers 4 8
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def measure(count: int, width: int, layers: int, trials: int, root: Path) -> dict:
    """Runs inside the child process."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from recycler.cli import quiet_libraries
    from recycler.demo.skills import ALPHABET
    from recycler.demo.tokenizer import build_char_tokenizer
    from recycler.recipes import LinearRecipe
    from recycler.spec import PoolSpec
    from recycler.workers import MergeWorker

    quiet_libraries()
    tokenizer = build_char_tokenizer(ALPHABET)
    refs = []
    for i in range(count):
        folder = root / f"w{width}-l{layers}" / f"c{i}"
        if not folder.exists():
            torch.manual_seed(i)
            config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=width, n_layer=layers,
                                n_head=max(1, width // 32), bos_token_id=tokenizer.eos_token_id,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=0)
            GPT2LMHeadModel(config).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        refs.append({"name": f"c{i}", "path": str(folder)})
    spec = PoolSpec.model_validate({"name": "scaling", "checkpoints": refs, "suite": "demo"})
    worker = MergeWorker(spec, threads=1)
    weights = {r["name"]: 1.0 / count for r in refs}
    worker.evaluate(LinearRecipe(weights).to_json())
    results = [worker.evaluate(LinearRecipe(weights).to_json()) for _ in range(trials)]
    parameters = sum(p.numel() for p in worker.engine.merger.model.parameters())
    return {
        "checkpoints": count, "width": width, "layers": layers, "parameters": parameters,
        "trial_s": statistics.median(r.costs.trial_seconds for r in results),
        "merge_s": statistics.median(r.costs.merge_seconds for r in results),
        "forward_s": statistics.median(r.costs.forward_seconds for r in results),
        "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "stacked_MB": getattr(worker.engine.merger.rows, "stacked_bytes", 0) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--layers", type=int, nargs="+", default=[4])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "recycler-scaling")
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.trials, args.root)))
        return
    for layers in args.layers:
        for width in args.widths:
            for count in args.counts:
                child = [sys.executable, __file__, "--child", str(count), str(width), str(layers),
                         "--trials", str(args.trials), "--root", str(args.root)]
                print(subprocess.run(child, capture_output=True, text=True, check=True).stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
