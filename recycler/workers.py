"""The worker: one evaluation engine holding one model, the pool where its memory budget puts it,
and one suite's requests, kept for a whole search.

Run as a Ray actor by the search; a plain object in tests and benchmarks.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from recycler.engine import engine_class
from recycler.evaluate import Scorer
from recycler.pool import load_pool
from recycler.recipes import recipe_from_json
from recycler.spec import PoolSpec
from recycler.suite import load_suite


class MergeWorker:
    """Loads a candidate into its engine in place and scores it; nothing is reloaded between candidates."""

    def __init__(self, spec: PoolSpec, device: str = "cpu", threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        suite = load_suite(spec.suite)
        self.engine = engine_class(spec.resources.engine).for_pool(load_pool(spec), suite, spec.resources,
                                                                   torch.device(device))
        self.scorer = Scorer(suite, self.engine)

    def evaluate(self, recipe: dict[str, Any], examples: dict[str, list[int]] | None = None) -> dict[str, Any]:
        """Scores of the merge (a recipe's JSON) by task, each example's result by task (the metric's
        value, and the filtered answer of a generation task), the seconds spent merging, in forward
        passes, and in all, and the tokens the forward passes ran. `examples` scores those examples
        only (a screening stage)."""
        started = time.perf_counter()
        bad_tensor = self.engine.load(recipe_from_json(recipe))
        merged = time.perf_counter()
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
