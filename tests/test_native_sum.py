"""The C kernel for bfloat16 sums on a CPU gives torch's bits, and a machine without it merges the same."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recycler import native_sum, residency
from recycler.native_sum import BLOCK_WORDS, MIN_WORDS_PER_THREAD, weighted_sum_bf16
from recycler.residency import weighted_sum_into


def torch_sum(coefficients: torch.Tensor, rows: list[torch.Tensor]) -> torch.Tensor:
    """The reference: torch's own float32 arithmetic in the kernel's order, rounded by torch."""
    total = rows[0].float() * coefficients[0]
    for coefficient, row in zip(coefficients[1:], rows[1:]):
        total = total + row.float() * coefficient
    return total.to(torch.bfloat16)


def bf16_rows(count: int, length: int, seed: int) -> list[torch.Tensor]:
    """Rows starting one element into their buffers (2-byte aligned, as safetensors may place them),
    with an infinity, a NaN and a denormal among them."""
    generator = torch.Generator().manual_seed(seed)
    rows = [torch.randn(length + 1, generator=generator).to(torch.bfloat16)[1:] for _ in range(count)]
    rows[0][length // 2] = float("inf")
    rows[-1][length // 3] = float("nan")
    rows[-1][length - 1] = 1e-40
    return rows


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.view(torch.int16), b.view(torch.int16))


# lengths: one element; odd and short; more than two threads' shares of several blocks each, plus one
@pytest.mark.parametrize("length", [1, 7, 2 * BLOCK_WORDS * 3 + 1])
@pytest.mark.parametrize("count", [1, 3, 4, 5, 9, 24])
def test_the_c_kernel_gives_torchs_bits(count, length):
    rows = bf16_rows(count, length, seed=count * 7 + length)
    coefficients = torch.randn(count, generator=torch.Generator().manual_seed(count))
    out = torch.empty(length, dtype=torch.bfloat16)
    assert weighted_sum_bf16(out, coefficients, rows)
    assert native_sum._kernel is not None, "the C kernel was not built on this machine"
    assert same_bits(out, torch_sum(coefficients, rows))


def test_the_c_kernel_gives_torchs_bits_at_the_edges():
    """Signed zeros, a zero coefficient times inf (NaN), sums past float32's range (inf), subnormal
    sums of several rows, rows at 4-byte-aligned addresses."""
    length = 2 * BLOCK_WORDS + 5
    rows = [torch.zeros(length, dtype=torch.bfloat16) for _ in range(5)]
    rows[0][:8] = torch.tensor([-0.0, 0.0, float("inf"), -float("inf"), 3e38, -3e38, 1e-39, -1e-39])
    rows[1][:8] = torch.tensor([-0.0, -0.0, 1.0, 1.0, 3e38, 3e38, 1e-39, 2e-39])
    rows[2][-3:] = torch.tensor([float("inf"), -0.0, 1e-40])
    coefficients = torch.tensor([0.0, 3e38, -1.5, 0.5, -0.0])
    for scale in (coefficients, torch.tensor([1.0, 1.0, 1.0, 1e-3, 2.0])):
        out = torch.empty(length, dtype=torch.bfloat16)
        assert weighted_sum_bf16(out, scale, rows)
        assert same_bits(out, torch_sum(scale, rows))


def test_a_nan_gets_the_bits_of_torchs_scalar_conversion_where_torch_uses_it():
    """Without vector instructions (ATEN_CPU_CAPABILITY=default) torch writes a NaN as 0x7fc0, not
    0xffff; the kernel follows the torch it runs beside."""
    probe = f"""
import torch, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_native_sum import bf16_rows, same_bits, torch_sum
from recycler.native_sum import torch_nan_bits, weighted_sum_bf16
rows = bf16_rows(3, 101, seed=7)
out = torch.empty_like(rows[0])
assert weighted_sum_bf16(out, torch.tensor([0.5, 0.25, 2.0]), rows)
print(hex(torch_nan_bits()), same_bits(out, torch_sum(torch.tensor([0.5, 0.25, 2.0]), rows)))
"""
    environment = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environment, timeout=120)
    assert run.stdout.split() == ["0x7fc0", "True"], run.stdout + run.stderr


def test_the_c_kernel_splits_work_between_threads_without_changing_bits():
    rows = bf16_rows(6, 4 * MIN_WORDS_PER_THREAD * 2 + 3, seed=1)
    coefficients = torch.rand(6, generator=torch.Generator().manual_seed(2))
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            out = torch.empty_like(rows[0])
            assert weighted_sum_bf16(out, coefficients, rows)
            results.append(out)
    finally:
        torch.set_num_threads(threads)
    assert all(same_bits(r, torch_sum(coefficients, rows)) for r in results)


def test_other_dtypes_and_devices_are_left_to_torch():
    rows = [torch.ones(8), torch.ones(8)]
    assert not weighted_sum_bf16(torch.empty(8), torch.tensor([0.5, 0.5]), rows)
    rows16 = [r.to(torch.bfloat16) for r in rows]
    assert not weighted_sum_bf16(torch.empty(8, dtype=torch.bfloat16), torch.tensor([0.5, 0.5], dtype=torch.float64), rows16)
    assert not weighted_sum_bf16(torch.empty(8, dtype=torch.bfloat16), torch.tensor([0.5]), rows16)  # one coefficient, two rows
    strided = torch.ones(16, dtype=torch.bfloat16)[::2]
    assert not weighted_sum_bf16(torch.empty(8, dtype=torch.bfloat16), torch.tensor([0.5, 0.5]), [strided, rows16[1]])


def test_a_machine_without_a_compiler_warns_once_and_merges_the_same_bits(monkeypatch):
    with pytest.warns(UserWarning, match="no C compiler found"):
        assert native_sum.build("/nonexistent/cc") is None
    with pytest.warns(UserWarning, match="failed on weighted_sum_bf16.c"):
        assert native_sum.build("false") is None  # a compiler that fails
    assert native_sum.build("cc -Wall") is not None  # a compiler with arguments, as CC may give one
    rows = bf16_rows(5, (1 << 20) + 1, seed=3)
    coefficients = torch.randn(5, generator=torch.Generator().manual_seed(4))
    expected = torch_sum(coefficients, rows)
    monkeypatch.setattr(native_sum, "_kernel", None)  # as `build` leaves a machine without one
    monkeypatch.setattr(native_sum, "_built", True)
    monkeypatch.setattr(residency, "_compile_failed", False)
    compiled = torch.empty_like(rows[0])
    weighted_sum_into(compiled, coefficients, rows)  # torch.compile's kernel
    monkeypatch.setattr(residency, "_compile_failed", True)
    eager = torch.empty_like(rows[0])
    weighted_sum_into(eager, coefficients, rows)  # torch's eager chunks
    assert same_bits(compiled, expected) and same_bits(eager, expected)


def test_a_forked_child_sums_with_threads_of_its_own():
    """A child forked after a sum inherits the thread pool without its threads; work handed to them
    would never run. The child makes its own."""
    rows = bf16_rows(4, 4 * MIN_WORDS_PER_THREAD * 2, seed=5)
    coefficients = torch.rand(4, generator=torch.Generator().manual_seed(6))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = torch.empty_like(rows[0]).share_memory_()
        assert weighted_sum_bf16(out, coefficients, rows)  # the parent's pool now exists
        out.zero_()
        child = multiprocessing.get_context("fork").Process(target=weighted_sum_bf16, args=(out, coefficients, rows))
        child.start()
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    finally:
        torch.set_num_threads(threads)
    assert child.exitcode == 0, "the forked child did not finish its sum"
    assert same_bits(out, torch_sum(coefficients, rows))
