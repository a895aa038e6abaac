"""The `hf` engine: one transformers model resident on the worker's device, candidates written
into its parameters in place (`recycler.merge.Merger`), scored through lm-eval's HFLM."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from lm_eval.models.huggingface import HFLM

from recycler.engine import EvaluationEngine, ForwardCount
from recycler.merge import Merger
from recycler.pool import Pool
from recycler.recipes import MergeRecipe
from recycler.spec import Resources
from recycler.suite import Suite


class _TokenizeOnceHFLM(HFLM):
    """lm-eval's HFLM, remembering each request's tokenization: a search scores the same requests
    for every candidate, and tokenizing them again was a sixth of a trial on the demo pool.
    Loglikelihood requests are tokenized in `_encode_pair`; generation requests in `tok_encode`
    (to sort them by length) and `tok_batch_encode` (each batch, padded on the left)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pairs: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        self._encoded: dict[tuple[Any, ...], list[int]] = {}
        self._batches: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        key = (context, continuation)
        if key not in self._pairs:
            self._pairs[key] = super()._encode_pair(context, continuation)
        return self._pairs[key]

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs: Any) -> list[int]:
        key = (string, add_special_tokens, left_truncate_len, tuple(sorted(kwargs.items())))
        if key not in self._encoded:
            self._encoded[key] = super().tok_encode(string, add_special_tokens, left_truncate_len, **kwargs)
        return self._encoded[key]

    def tok_batch_encode(self, strings: list[str], padding_side: str = "left", left_truncate_len: int | None = None,
                         truncation: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        key = (tuple(strings), padding_side, left_truncate_len, truncation)
        if key not in self._batches:
            self._batches[key] = super().tok_batch_encode(strings, padding_side, left_truncate_len, truncation)
        return self._batches[key]


class _ForwardMeter:
    """Counts the wall time spent inside the model's forward passes, and the token positions they
    ran (padding included: it is computed too), via module hooks."""

    def __init__(self, model: torch.nn.Module, count: ForwardCount) -> None:
        self.count = count
        self._started = 0.0
        self._cuda = next(model.parameters()).is_cuda
        model.register_forward_pre_hook(self._start, with_kwargs=True)
        model.register_forward_hook(self._stop)

    def _sync(self) -> None:
        if self._cuda:
            torch.cuda.synchronize()

    def _start(self, _module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # lm-eval passes the token ids positionally; generate() as input_ids, one new token per step
        ids = args[0] if args else kwargs.get("input_ids")
        if isinstance(ids, torch.Tensor):
            self.count.tokens += ids.numel()
        self._sync()
        self._started = time.perf_counter()

    def _stop(self, *_: Any) -> None:
        self._sync()
        self.count.seconds += time.perf_counter() - self._started


class HFEngine(EvaluationEngine):
    """lm-eval's HFLM over one resident transformers model."""

    name = "hf"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, suite: Suite, merger: Merger | None = None) -> None:
        lm = _TokenizeOnceHFLM(pretrained=model, tokenizer=tokenizer, add_bos_token=False,
                               batch_size=suite.spec.batch_size, device=str(next(model.parameters()).device))
        count = ForwardCount()
        _ForwardMeter(model, count)
        super().__init__(lm, count)
        self.merger = merger

    def load(self, recipe: MergeRecipe) -> str | None:
        if self.merger is None:
            raise TypeError("this engine holds one checkpoint, not a pool's merges")
        self.merger.apply(recipe)
        if self.merger.device.type == "cuda":
            torch.cuda.synchronize()
        return self.merger.nonfinite_tensor()

    @classmethod
    def for_pool(cls, pool: Pool, suite: Suite, resources: Resources, device: torch.device) -> HFEngine:
        from transformers import AutoTokenizer

        merger = Merger(pool, device=device, budget=resources.memory_budget, workers_sharing=resources.workers)
        return cls(merger.model, AutoTokenizer.from_pretrained(str(pool.reference.path)), suite, merger)

    @classmethod
    def for_checkpoint(cls, folder: Path, suite: Suite, resources: Resources) -> HFEngine:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="auto").eval()
        return cls(model, AutoTokenizer.from_pretrained(str(folder)), suite)


ENGINE = HFEngine
