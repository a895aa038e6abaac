"""Where the pool lives: stacked on the worker's device, or streamed from the shared page cache.

Both must give the same merge, a worker's memory must not grow from one candidate to the next,
and workers on one machine must share one copy of the pool."""

import contextvars
import logging
import warnings

import psutil
import pytest
import torch
import yaml

from recycler.demo.tiny import write_pool
from recycler.merge import MemoryNeeds, Merger, floating_tensors, stack_bytes, stacked_tensors
from recycler.pool import load_pool
from recycler.recipes import (
    LayerwiseRecipe,
    LinearRecipe,
    SlerpRecipe,
    TaskVectorRecipe,
)
from recycler import residency
from recycler.residency import COMPILE_MIN_ELEMENTS, HybridRows, ResidentRows, StreamedRows, weighted_sum_into
from recycler.spec import load_spec
from tests.suites import write_suite

RECIPES = {
    "linear": LinearRecipe({"c0": 0.7, "c1": -0.2, "c2": 0.5}),
    "one checkpoint": LinearRecipe({"c1": 1.0}),
    "task arithmetic": LinearRecipe({"c0": 0.5, "c2": 0.25}, relative=True),
    "layer-wise": LayerwiseRecipe(blocks=({"c0": 0.6, "c1": 0.4}, {"c2": 1.0}), other={"c0": 0.2, "c1": 0.3, "c2": 0.5}),
    "slerp": SlerpRecipe("c0", "c2", 0.3),
    "ties": TaskVectorRecipe({"c0": 1.0, "c1": 0.5, "c2": 1.0}, "magnitude", consensus=True, density=0.2),
    "dare_ties": TaskVectorRecipe({"c0": 1.0, "c1": 1.0, "c2": 0.5}, "random", consensus=True, density=0.3, seed=2),
    "dare_linear": TaskVectorRecipe({"c0": 1.0, "c1": 1.0, "c2": 1.0}, "random", consensus=False, density=0.5),
}


@pytest.fixture(scope="module", params=[torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def pool(request, tmp_path_factory):
    """Three checkpoints and a base whose MLP tensors are summed by the compiled kernel, the others eagerly."""
    root = tmp_path_factory.mktemp(str(request.param).removeprefix("torch."))
    pool = load_pool(load_spec(write_pool(root, 3, base=True, dtype=request.param, width=512)))
    assert pool.largest_tensor >= COMPILE_MIN_ELEMENTS
    return pool


def test_budget_decides_residency(pool):
    needs = MemoryNeeds.of(pool, torch.device("cpu"))
    assert isinstance(Merger(pool, budget=needs.resident).rows, ResidentRows)
    assert isinstance(Merger(pool, budget=needs.resident - 1).rows, StreamedRows)  # the CPU: all or none
    assert isinstance(Merger(pool, budget=needs.streamed).rows, StreamedRows)
    on_gpu = MemoryNeeds.of(pool, torch.device("cuda"))  # a GPU stacks what its budget holds, smallest first
    floating = sorted(stack_bytes(pool, name) for name in floating_tensors(pool))
    assert len(stacked_tensors(pool, torch.device("cuda"), on_gpu.resident)) == len(floating)
    assert len(stacked_tensors(pool, torch.device("cuda"), on_gpu.resident - 1)) == len(floating) - 1
    assert len(stacked_tensors(pool, torch.device("cuda"), on_gpu.streamed + sum(floating[:3]))) == 3
    assert stacked_tensors(pool, torch.device("cuda"), on_gpu.streamed) == []


def half_of_the_tensors(pool) -> list[str]:
    """The smaller half of the pool's tensors, to stack while the rest are streamed."""
    names = sorted(floating_tensors(pool), key=lambda name: stack_bytes(pool, name))
    return names[: len(names) // 2]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.filterwarnings("error:recycler. the fused merge kernel is unavailable")
def test_streamed_and_hybrid_equal_resident_bit_for_bit(pool, recipe):
    needs = MemoryNeeds.of(pool, torch.device("cpu"))
    resident = Merger(pool, budget=needs.resident).apply(RECIPES[recipe]).state_dict()
    streamed = Merger(pool, budget=needs.streamed).apply(RECIPES[recipe]).state_dict()
    hybrid_merger = Merger(pool, budget=needs.streamed, stacked=half_of_the_tensors(pool))
    assert isinstance(hybrid_merger.rows, HybridRows) and hybrid_merger.rows.stacked.shapes and hybrid_merger.rows.streamed.shapes
    hybrid = hybrid_merger.apply(RECIPES[recipe]).state_dict()
    assert resident.keys() == streamed.keys() == hybrid.keys()
    for name in resident:
        assert torch.equal(resident[name], streamed[name]), name
        assert torch.equal(resident[name], hybrid[name]), name


def test_the_kernel_stays_compiled_for_every_number_of_rows(monkeypatch):
    """Candidates read 1 to all of a pool's rows, and the compiled kernel is specialized to that
    number: past torch.compile's default 8 variants it would run uncompiled over whole tensors (float32
    copies of them, unbudgeted), logging only a warning. Ten counts must all stay compiled. (Float32
    rows: on a CPU, bfloat16 ones go to the C kernel instead.)"""
    monkeypatch.setattr(residency, "_compile_failed", False)  # whatever an earlier test left
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randn(COMPILE_MIN_ELEMENTS, generator=generator) for _ in range(10)]
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    dynamo_log = logging.getLogger("torch._dynamo")  # torch's own loggers do not propagate to the root
    dynamo_log.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            for count in range(1, len(rows) + 1):
                out = torch.empty(COMPILE_MIN_ELEMENTS)
                coefficients = torch.rand(count, generator=generator)
                weighted_sum_into(out, coefficients, rows[:count])
                expected = sum(c * r.double() for c, r in zip(coefficients.double(), rows[:count]))
                torch.testing.assert_close(out.double(), expected, rtol=2 ** -7, atol=1e-6)
    finally:
        dynamo_log.removeHandler(handler)
    assert not [r.getMessage() for r in records if "recompile_limit" in r.getMessage()]
    assert not [str(w.message) for w in warned if "merging eagerly" in str(w.message)]
    assert not residency._compile_failed


def test_the_kernel_leaves_nothing_behind_per_call(monkeypatch):
    """Each compiled call runs under torch settings (the number of variants); a settings patch made
    per call would leave a context variable behind each time, growing a worker for good."""
    monkeypatch.setattr(residency, "_compile_failed", False)
    out, rows = torch.empty(COMPILE_MIN_ELEMENTS), [torch.ones(COMPILE_MIN_ELEMENTS) for _ in range(2)]
    coefficients = torch.tensor([0.25, 0.5])
    weighted_sum_into(out, coefficients, rows)
    before = len(contextvars.copy_context())
    for _ in range(50):
        weighted_sum_into(out, coefficients, rows)
    assert len(contextvars.copy_context()) == before
    assert torch.equal(out, torch.full_like(out, 0.75)) and not residency._compile_failed


def test_a_streaming_merger_does_not_grow_from_one_candidate_to_the_next(tmp_path):
    pool = load_pool(load_spec(write_pool(tmp_path, 4, width=256, layers=4)))
    merger = Merger(pool, budget=MemoryNeeds.of(pool, torch.device("cpu")).streamed)
    assert isinstance(merger.rows, StreamedRows)
    process = psutil.Process()
    weights = torch.rand(40, 4, generator=torch.Generator().manual_seed(0)).tolist()
    for w in weights[:5]:
        merger.apply(LinearRecipe(dict(zip(pool.names, w))))
    settled = process.memory_full_info().uss
    for w in weights[5:]:
        merger.apply(LinearRecipe(dict(zip(pool.names, w))))
    grown = process.memory_full_info().uss - settled
    assert grown < pool.model_bytes / 4, f"{grown} bytes more after 35 candidates (one model is {pool.model_bytes})"


def _worker_uss() -> list[int]:
    workers = [p for p in psutil.process_iter(["cmdline"]) if any("ray::MergeWorker" in part for part in (p.info["cmdline"] or []))]
    return [p.memory_full_info().uss for p in workers]


def test_two_workers_on_one_machine_share_one_copy_of_the_pool(tmp_path, local_ray):
    """Sixteen checkpoints of 39 MB: a worker's own memory (about 0.4 GB of libraries and one model)
    is less than the pool, so two copies of the pool would show."""
    import ray

    from recycler.workers import MergeWorker

    spec_path = write_pool(tmp_path, 16, width=448, layers=4)
    write_suite(tmp_path / "suite")
    spec = yaml.safe_load(spec_path.read_text())
    spec.update(suite="suite/suite.yaml", resources={"workers": 2, "memory_per_worker": "auto"})
    spec_path.write_text(yaml.safe_dump(spec))
    spec = load_spec(spec_path)
    pool = load_pool(spec)
    pool_bytes = len(pool.members) * pool.model_bytes
    streaming = spec.model_copy(update={"resources": spec.resources.model_copy(
        update={"memory_per_worker": MemoryNeeds.of(pool, torch.device("cpu")).streamed})})
    workers = [ray.remote(MergeWorker).options(num_cpus=1).remote(streaming, "cpu", 1) for _ in range(2)]
    try:
        uniform = LinearRecipe({name: 1 / len(pool.names) for name in pool.names}).to_json()
        for result in ray.get([w.evaluate.remote(uniform) for w in workers]):
            assert result.error is None and result.scores, result
        private = _worker_uss()
        assert len(private) == 2
        assert sum(private) < 2 * pool_bytes, f"workers hold {private} bytes privately; the pool is {pool_bytes}"
    finally:
        for worker in workers:
            ray.kill(worker)
