"""Where a pool's tensors live while candidates are merged, and the one arithmetic over them.

A tensor's rows are its sources: the checkpoints in pool order, then the base. They either sit
stacked on the worker's device (`ResidentRows`, when the stacks fit the worker's memory budget) or
are read where they lie (`StreamedRows`): the memory-mapped safetensors files, which every worker on
a machine shares through the page cache, so no worker holds a copy of the pool. A budget between
the two stacks the tensors it holds and streams the rest (`HybridRows`). On a GPU, streamed chunks
go through two pinned host buffers: one chunk's copy to the device overlaps the previous chunk's sum.

Every residency feeds the same rows to the same kernel, `weighted_sum_into`, so they give the same
bits. This module needs torch alone (and `recycler.native_sum`, which needs torch alone): it is what
runs on a GPU machine without the rest of recycler.
"""

from __future__ import annotations

import math
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from recycler.native_sum import weighted_sum_bf16

# A tensor's rows as CPU tensors, read lazily (memory-mapped views of the pool's files).
RowSource = Callable[[str], list[torch.Tensor]]

# On a CPU, bfloat16 rows are summed by a small C kernel (`recycler.native_sum`) where one can be
# built. Otherwise tensors this large, and every tensor on a GPU, are summed by one compiled kernel
# (torch.compile fuses the conversion to float32, the products and the sum into a single pass over
# the rows); smaller ones on a CPU, where compiling costs more than it saves, and every tensor if
# compilation is unavailable, by the same arithmetic in eager chunks. All three give the same bits.
COMPILE_MIN_ELEMENTS = 1 << 20
EAGER_CHUNK = 1 << 16
STREAM_CHUNK = 1 << 24  # elements per row moved to a GPU at a time
EAGER_SCRATCH_BYTES = 2 * EAGER_CHUNK * 8  # the eager sum's float32 accumulator and product; a cosine's float64 pieces


def _weighted_sum(out: torch.Tensor, coefficients: torch.Tensor, rows: list[torch.Tensor]) -> None:
    accumulator = rows[0].to(coefficients.dtype) * coefficients[0]
    for i in range(1, len(rows)):
        accumulator = accumulator + rows[i].to(coefficients.dtype) * coefficients[i]
    out.copy_(accumulator)


_compiled_sum: Callable[..., None] | None = None
_compile_failed = False

# The compiled kernel takes its rows as separate tensors (memory-mapped views of different files), so
# it is specialized to their number: one variant per count of rows a candidate reads (1 to the pool's
# rows), plus a few for dtypes. torch.compile's default limit of 8 variants per function would
# otherwise send every further count to the uncompiled function over whole tensors, with float32
# copies of the largest tensor that no memory budget counts; past this limit it raises instead, and
# the merge goes on in eager chunks. (Both settings live in torch._dynamo.config, where torch's
# documentation on recompilation points; torch.compile takes neither as an argument.) The patch is
# made once: each new one leaves a context variable behind in the thread for good.
KERNEL_VARIANTS = 160
_KERNEL_CONFIG = torch._dynamo.config.patch(recompile_limit=KERNEL_VARIANTS, fail_on_recompile_limit_hit=True)


def weighted_sum_into(out: torch.Tensor, coefficients: torch.Tensor, rows: Sequence[torch.Tensor]) -> None:
    """out = Σ coefficients[i] · rows[i], accumulated in the coefficients' dtype (float32, float64 for
    a float64 pool) and cast to out's dtype.

    `rows` are flat tensors of out's size on out's device (views, never copied); `coefficients` a
    tensor there too, so new values do not recompile the kernel."""
    global _compiled_sum, _compile_failed
    rows = list(rows)
    if weighted_sum_bf16(out, coefficients, rows):  # a bfloat16 sum on the CPU: the C kernel, same bits
        return
    if (out.numel() >= COMPILE_MIN_ELEMENTS or out.is_cuda) and not _compile_failed:
        try:
            if _compiled_sum is None:
                _compiled_sum = torch.compile(_weighted_sum, dynamic=True)
            with _KERNEL_CONFIG:
                _compiled_sum(out, coefficients, rows)
            return
        except Exception as error:  # no C++ compiler, no Triton, an unsupported device, past the limit: same math, eagerly
            _compile_failed = True
            warnings.warn(f"recycler: the fused merge kernel is unavailable, merging eagerly ({type(error).__name__})", stacklevel=2)
    for start in range(0, out.numel(), EAGER_CHUNK):
        end = min(start + EAGER_CHUNK, out.numel())
        _weighted_sum(out[start:end], coefficients, [row[start:end] for row in rows])


# Coefficients already moved to the device in one call, by value: the rows they use and the vector.
_Seen = dict[tuple[float, ...], tuple[list[int], torch.Tensor]]


@dataclass(frozen=True)
class WeightedSum:
    """One tensor of a linear candidate: `out` = Σ coefficients[i] · row i."""

    name: str
    coefficients: Sequence[float]
    out: torch.Tensor


class Rows(ABC):
    """A pool's floating-point tensors, row by row, on one device, with the weighted sum over them."""

    def __init__(self, shapes: dict[str, torch.Size], row_count: int, dtype: torch.dtype, device: torch.device) -> None:
        self.shapes = shapes
        self.row_count = row_count
        self.dtype = dtype
        self.device = device
        self._cosines: dict[tuple[str, int, int], float] = {}

    @abstractmethod
    def rows(self, name: str) -> list[torch.Tensor]:
        """Every row of tensor `name`, flat, in the pool's dtype: views, not copies."""

    def _rows_to_read(self, s: WeightedSum, seen: _Seen) -> tuple[list[int], torch.Tensor]:
        """The rows with a non-zero coefficient and those coefficients on the device (made once per
        distinct coefficients in `seen`); a sum with none is written as zeros here."""
        key = tuple(s.coefficients)
        if key not in seen:
            used = [i for i, c in enumerate(key) if c != 0.0]
            wide = torch.float64 if self.dtype == torch.float64 else torch.float32
            seen[key] = used, torch.tensor([key[i] for i in used], dtype=wide, device=self.device)
        if not seen[key][0]:
            s.out.zero_()
        return seen[key]

    def weighted_sums(self, sums: Sequence[WeightedSum]) -> None:
        """Write each sum into its `out`. Rows with a zero coefficient are not read."""
        seen: _Seen = {}
        for s in sums:
            used, vector = self._rows_to_read(s, seen)
            if used:
                rows = self.rows(s.name)
                weighted_sum_into(s.out.view(-1), vector, [rows[i] for i in used])

    def float32_row(self, name: str, index: int) -> torch.Tensor:
        """Row `index` of a tensor as a fresh flat float32 tensor on the device, for recipes that are
        not weighted sums (TIES, DARE); the caller may change it."""
        return self.rows(name)[index].to(self.device, torch.float32, copy=True)

    def cosine(self, name: str, i: int, j: int, eps: float) -> float:
        """Cosine between rows i and j of a tensor (norms below eps count as 1), computed once per
        pair in float64, EAGER_CHUNK elements at a time: whole float64 copies of two rows of the
        largest tensor would take far more than a worker's scratch."""
        key = (name, i, j)
        if key not in self._cosines:
            rows = self.rows(name)
            sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # a·b, a·a, b·b
            chunk = EAGER_CHUNK if self.device.type == "cpu" else STREAM_CHUNK // 8  # within the staging buffers' size
            for start in range(0, rows[i].numel(), chunk):
                a, b = (rows[r][start:start + chunk].to(self.device, torch.float64) for r in (i, j))
                sums += torch.stack([a @ b, a @ a, b @ b])
            dot, norm_a, norm_b = float(sums[0]), math.sqrt(float(sums[1])), math.sqrt(float(sums[2]))
            self._cosines[key] = min(1.0, max(-1.0, dot / ((norm_a if norm_a > eps else 1.0) * (norm_b if norm_b > eps else 1.0))))
        return self._cosines[key]


class ResidentRows(Rows):
    """Each tensor's rows stacked (rows, numel) on the device, read once from the source."""

    def __init__(self, source: RowSource, shapes: dict[str, torch.Size], row_count: int, dtype: torch.dtype,
                 device: torch.device, on_row: Callable[[str, int, torch.Tensor], None] = lambda name, i, row: None) -> None:
        """`on_row(name, i, row)` sees each row once as it is stacked (the engine checks it is finite)."""
        super().__init__(shapes, row_count, dtype, device)
        self.stacks: dict[str, torch.Tensor] = {}
        for name, shape in shapes.items():
            stack = torch.empty((row_count, shape.numel()), dtype=dtype, device=device)
            for i, row in enumerate(source(name)):
                stack[i].copy_(row.reshape(-1))
                on_row(name, i, stack[i])
            self.stacks[name] = stack

    @property
    def stacked_bytes(self) -> int:
        return sum(s.numel() * s.element_size() for s in self.stacks.values())

    def rows(self, name: str) -> list[torch.Tensor]:
        return list(self.stacks[name].unbind(0))


class StreamedRows(Rows):
    """Rows read from the source (memory-mapped files) as each candidate is merged.

    Nothing here grows with the pool: a CPU worker sums the shared page cache directly; a GPU
    worker copies each chunk's rows into one of two pinned host buffers, then to the device on a
    copy stream, while the previous chunk is summed.
    """

    def __init__(self, source: RowSource, shapes: dict[str, torch.Size], row_count: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        super().__init__(shapes, row_count, dtype, device)
        self.source = source
        self._views: dict[str, list[torch.Tensor]] = {}
        if device.type == "cuda":
            self._chunk = min(STREAM_CHUNK, max(s.numel() for s in shapes.values()))
            # flat buffers: a piece of n rows of L elements is their first n * L, contiguous, so both
            # copies stay single contiguous copies (a [:n, :L] slice of a 2-D buffer is not, and
            # PyTorch stages a non-contiguous host-to-device copy through pageable memory)
            self._pinned = [torch.empty(row_count * self._chunk, dtype=dtype, pin_memory=True) for _ in range(2)]
            self._staged = [torch.empty(row_count * self._chunk, dtype=dtype, device=device) for _ in range(2)]
            self._copy_stream = torch.cuda.Stream(device)
            # one thread per row: a single memory copy from the page cache is far slower than the bus
            self._copiers = ThreadPoolExecutor(max_workers=max(1, min(row_count, os.cpu_count() or 1)))

    @staticmethod
    def staging_bytes(row_count: int, dtype: torch.dtype, device: torch.device) -> int:
        """Device memory for the two staged chunks of a GPU worker (pinned host memory holds as much again)."""
        return 2 * row_count * STREAM_CHUNK * dtype.itemsize if device.type == "cuda" else 0

    def rows(self, name: str) -> list[torch.Tensor]:
        """Views of the mapped files, kept: they cost page-table entries, not memory."""
        if name not in self._views:
            self._views[name] = [row.reshape(-1) for row in self.source(name)]
        return self._views[name]

    def weighted_sums(self, sums: Sequence[WeightedSum]) -> None:
        if self.device.type != "cuda":
            super().weighted_sums(sums)  # the page cache is the CPU's resident copy
            return
        pieces = []
        chunk, seen = self._chunk, {}
        for s in sums:
            used, vector = self._rows_to_read(s, seen)
            if used:
                numel = s.out.numel()
                pieces += [(s, used, vector, start, min(start + chunk, numel)) for start in range(0, numel, chunk)]
        self._pipeline(pieces)

    def _pipeline(self, pieces: list[tuple[WeightedSum, list[int], torch.Tensor, int, int]]) -> None:
        compute = torch.cuda.current_stream(self.device)
        copied = [torch.cuda.Event() for _ in range(2)]
        summed = [torch.cuda.Event() for _ in range(2)]

        def stage(k: int) -> None:
            s, used, _, start, end = pieces[k]
            slot, rows = k % 2, self.rows(s.name)
            host = self._pinned[slot][: len(used) * (end - start)].view(len(used), end - start)
            copied[slot].synchronize()  # this pinned buffer's last copy to the device is done
            list(self._copiers.map(lambda r: host[r].copy_(rows[used[r]][start:end]), range(len(used))))
            with torch.cuda.stream(self._copy_stream):
                self._copy_stream.wait_event(summed[slot])  # the device buffer's last chunk was summed
                self._staged[slot][: host.numel()].view_as(host).copy_(host, non_blocking=True)
                copied[slot].record(self._copy_stream)

        if pieces:
            stage(0)
        for k, (s, used, vector, start, end) in enumerate(pieces):
            slot = k % 2
            compute.wait_event(copied[slot])
            staged = self._staged[slot][: len(used) * (end - start)].view(len(used), end - start)
            weighted_sum_into(s.out.view(-1)[start:end], vector, list(staged))
            summed[slot].record(compute)
            if k + 1 < len(pieces):
                stage(k + 1)


class HybridRows(Rows):
    """Some tensors' rows stacked on the device (those the memory budget holds), the others streamed:
    each sum is done where its tensor's rows are, so every candidate moves only the streamed bytes."""

    def __init__(self, stacked: ResidentRows, streamed: StreamedRows) -> None:
        super().__init__({**stacked.shapes, **streamed.shapes}, stacked.row_count, stacked.dtype, stacked.device)
        self.stacked, self.streamed = stacked, streamed

    @property
    def stacked_bytes(self) -> int:
        return self.stacked.stacked_bytes

    def rows(self, name: str) -> list[torch.Tensor]:
        return (self.stacked if name in self.stacked.shapes else self.streamed).rows(name)

    def weighted_sums(self, sums: Sequence[WeightedSum]) -> None:
        self.stacked.weighted_sums([s for s in sums if s.name in self.stacked.shapes])
        self.streamed.weighted_sums([s for s in sums if s.name not in self.stacked.shapes])
