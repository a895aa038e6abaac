"""The worker: one resident model, the pool where its memory budget puts it, one suite's requests,
kept for a whole search.

Run as a Ray actor by the search; a plain object in tests and in `recycler verify`-style checks.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from recycler.evaluate import Scorer
from recycler.merge import Merger
from recycler.pool import load_pool
from recycler.recipes import recipe_from_json
from recycler.spec import PoolSpec
from recycler.suite import load_suite


class MergeWorker:
    """Materializes a candidate in place and scores it; nothing is reloaded between candidates."""

    def __init__(self, spec: PoolSpec, device: str = "cpu", threads: int | None = None) -> None:
        from transformers import AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        pool = load_pool(spec)
        self.merger = Merger(pool, device=device, budget=spec.resources.memory_budget,
                             workers_sharing=spec.resources.workers)
        tokenizer = AutoTokenizer.from_pretrained(str(pool.reference.path))
        self.scorer = Scorer(load_suite(spec.suite), self.merger.model, tokenizer)

    def evaluate(self, recipe: dict[str, Any], examples: dict[str, list[int]] | None = None) -> dict[str, Any]:
        """Scores of the merge (a recipe's JSON) by task, each example's result by task (the metric's
        value, and the filtered answer of a generation task), the seconds spent merging, in forward
        passes, and in all, and the tokens the forward passes ran. `examples` scores those examples
        only (a screening stage)."""
        started = time.perf_counter()
        self.merger.apply(recipe_from_json(recipe))
        if self.merger.device.type == "cuda":
            torch.cuda.synchronize()
        merged = time.perf_counter()
        bad_tensor = self.merger.nonfinite_tensor()
        if bad_tensor is not None:
            return {"error": f"the merge has NaN or inf in tensor '{bad_tensor}'"}
        result = self.scorer.score(examples)
        return {
            "scores": result.scores,
            "examples": {task: examples.to_json() for task, examples in result.examples.items()},
            "merge_seconds": merged - started,
            "forward_seconds": result.forward_seconds,
            "trial_seconds": time.perf_counter() - started,
            "forward_tokens": result.forward_tokens,
        }

    def ready(self) -> bool:
        return True
