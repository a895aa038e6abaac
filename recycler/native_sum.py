"""The CPU's weighted sum of bfloat16 rows: a small C kernel, compiled once per process.

torch.compile's kernel for this sum reads every row at once, 64 bytes of each in turn. From
memory, that interleaving of 24 rows ran at about 0.66 of the rate of reading the same rows one
after another; this kernel, which reads 4 rows at a time over blocks whose float32 sums stay in
the core's L2 cache, at about 0.9 (BENCHMARKS §6). It gives the same bits as the compiled and eager
sums (`tests/test_native_sum.py`). Where it cannot be built (no C compiler), callers use those.

Needs torch alone, like `recycler.residency`, which calls it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("weighted_sum_bf16.c")
# -ffp-contract=off: no fused multiply-adds, so the bits equal torch's separate products and sums
COMPILE_FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-shared", "-fPIC")
BLOCK_WORDS = 1 << 16  # pairs of elements summed per block: 2 × 256 KB of float32 per thread, within a core's L2
MIN_WORDS_PER_THREAD = 1 << 15  # below this, one thread: handing work to another costs more than it saves
SCRATCH_BYTES_PER_THREAD = 2 * BLOCK_WORDS * 4

_pointer = ctypes.c_void_p


def scratch_bytes() -> int:
    """Memory the kernel holds: one block's float32 sums for each of torch's threads."""
    return SCRATCH_BYTES_PER_THREAD * torch.get_num_threads()


def build(compiler: str | None = None) -> ctypes.CDLL | None:
    """The kernel compiled for this machine's CPU and loaded (None, with a warning, when it cannot
    be). It is built in a private temporary folder, removed once loaded: each process builds its own
    (well under a second), so no shared cache can hand a machine code built for another CPU."""
    compiler = shutil.which(compiler or os.environ.get("CC", "cc"))
    if compiler is None:
        return _unavailable("no C compiler found (CC, cc)")
    with tempfile.TemporaryDirectory(prefix="recycler-native-") as folder:
        library_path = Path(folder) / "weighted_sum_bf16.so"
        try:
            result = subprocess.run([compiler, *COMPILE_FLAGS, str(SOURCE), "-o", str(library_path)],
                                    capture_output=True, text=True, timeout=120)
            if result.returncode != 0:
                return _unavailable(f"{compiler} failed on {SOURCE.name}: "
                                    f"{(result.stderr.strip().splitlines() or ['no message'])[0]}")
            library = ctypes.CDLL(str(library_path))  # fails where the temporary folder may not hold code (noexec)
        except (OSError, subprocess.TimeoutExpired) as error:
            return _unavailable(f"{compiler} or loading its output failed on {SOURCE.name}: {error}")
    library.weighted_sum_bf16.argtypes = [_pointer, _pointer, _pointer, ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                          _pointer, _pointer, ctypes.c_int64]
    library.weighted_sum_bf16.restype = None
    library.weighted_sum_bf16_element.argtypes = [_pointer, _pointer, _pointer, ctypes.c_int, ctypes.c_int64]
    library.weighted_sum_bf16_element.restype = None
    return library


def _unavailable(reason: str) -> None:
    warnings.warn(f"recycler: {reason}; bfloat16 merges on the CPU use torch's kernel instead", stacklevel=3)


class NativeSum:
    """The built kernel, a pool of threads to run it on (ctypes releases the GIL during a call), and
    one block's accumulators per thread, made again when torch's thread count changes or in a forked
    child (whose copy of the pool has no threads)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self.library = library
        self.lock = threading.Lock()  # the accumulators are shared: one sum at a time per process
        self.owner: tuple[int, int] = (0, 0)  # (process, threads) the pool and accumulators were made for
        self.executor: ThreadPoolExecutor | None = None
        self.accumulators = torch.empty(0)

    @property
    def threads(self) -> int:
        return self.owner[1]

    def _ready(self) -> None:
        owner = (os.getpid(), torch.get_num_threads())
        if owner != self.owner:
            if self.executor is not None and self.owner[0] == owner[0]:
                self.executor.shutdown()
            self.executor = ThreadPoolExecutor(max_workers=owner[1], thread_name_prefix="recycler-sum")
            self.accumulators = torch.empty((owner[1], 2, BLOCK_WORDS), dtype=torch.float32)
            self.owner = owner

    def __call__(self, out: torch.Tensor, coefficients: torch.Tensor, rows: Sequence[torch.Tensor]) -> None:
        coefficients = coefficients.contiguous()
        pointers = (_pointer * len(rows))(*[r.data_ptr() for r in rows])
        words = out.numel() // 2
        with self.lock:
            self._ready()
            parts = max(1, min(self.threads, words // MIN_WORDS_PER_THREAD))
            share = -(-words // parts)

            def sum_part(part: int) -> None:
                start = part * share
                self.library.weighted_sum_bf16(out.data_ptr(), coefficients.data_ptr(), pointers, len(rows), start,
                                               max(0, min(share, words - start)), self.accumulators[part, 0].data_ptr(),
                                               self.accumulators[part, 1].data_ptr(), BLOCK_WORDS)

            if parts == 1:
                sum_part(0)
            else:
                list(self.executor.map(sum_part, range(parts)))
            if out.numel() % 2:
                self.library.weighted_sum_bf16_element(out.data_ptr(), coefficients.data_ptr(), pointers, len(rows),
                                                       out.numel() - 1)


_kernel: NativeSum | None = None
_built = False


def _applies(out: torch.Tensor, coefficients: torch.Tensor, rows: Sequence[torch.Tensor]) -> bool:
    return (out.device.type == "cpu" and out.dtype == torch.bfloat16 and out.is_contiguous()
            and coefficients.dtype == torch.float32 and coefficients.device.type == "cpu"
            and len(rows) == coefficients.numel() > 0
            and all(r.dtype == torch.bfloat16 and r.device.type == "cpu" and r.is_contiguous() and r.numel() == out.numel()
                    for r in rows))


def weighted_sum_bf16(out: torch.Tensor, coefficients: torch.Tensor, rows: Sequence[torch.Tensor]) -> bool:
    """out = Σ coefficients[i] · rows[i] for flat, contiguous bfloat16 CPU tensors and float32
    coefficients, summed in float32; False (nothing written) where this kernel does not apply or
    could not be built (built at the first call)."""
    global _kernel, _built
    if not _applies(out, coefficients, rows):
        return False
    if not _built:
        library = build()
        _kernel, _built = (NativeSum(library) if library is not None else None), True
    if _kernel is None:
        return False
    _kernel(out, coefficients, rows)
    return True
