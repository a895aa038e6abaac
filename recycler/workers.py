"""The worker: one evaluation engine holding one model, the pool where its memory budget puts it,
and one suite's requests, kept for a whole search.

Run as a Ray actor by the search; a plain object in tests and benchmarks.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch

from recycler.engine import engine_class
from recycler.evaluate import Scorer
from recycler.pool import load_pool
from recycler.recipes import recipe_from_json
from recycler.results import CandidateResult
from recycler.spec import PoolSpec
from recycler.suite import load_suite


def worker_device(spec: PoolSpec) -> torch.device:
    """Where a worker holds its model: a GPU when the spec gives workers GPUs, else the CPU."""
    return torch.device("cuda" if spec.resources.gpus_per_worker > 0 else "cpu")


class MergeWorker:
    """Loads a candidate into its engine in place and scores it; nothing is reloaded between candidates."""

    def __init__(self, spec: PoolSpec, device: str = "cpu", threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        suite = load_suite(spec.suite)
        self.engine = engine_class(spec.resources.engine).for_pool(load_pool(spec), suite, spec.resources,
                                                                   torch.device(device))
        self.scorer = Scorer(suite, self.engine)

    def evaluate(self, recipe: dict[str, Any], examples: dict[str, list[int]] | None = None) -> CandidateResult:
        """The merge's (a recipe's JSON) scores and per-example results by task, and its costs, the
        merge's seconds among them; `examples` scores those examples only (a screening stage)."""
        started = time.perf_counter()
        bad_tensor = self.engine.load(recipe_from_json(recipe))
        merged = time.perf_counter()
        if bad_tensor is not None:
            return CandidateResult.failed(f"the merge has NaN or inf in tensor '{bad_tensor}'")
        result = self.scorer.score(examples)
        costs = replace(result.costs, merge_seconds=merged - started, trial_seconds=time.perf_counter() - started)
        return replace(result, costs=costs)

    def ready(self) -> bool:
        return True
