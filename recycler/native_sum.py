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
import shlex
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("weighted_sum_bf16.c")
# -ffp-contract=off: no fused multiply-adds, so the bits equal torch's separate products and sums
COMPILE_FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-shared", "-fPIC")
# pairs of elements summed per block: 256 KB of each row, and 2 × 256 KB of float32 sums per thread,
# within a 1 MB L2 (blocks of 32K to 128K words measured alike here, BENCHMARKS §6)
BLOCK_WORDS = 1 << 16
MIN_WORDS_PER_THREAD = 1 << 15  # below this, one thread: handing work to another costs more than it saves
SCRATCH_BYTES_PER_THREAD = 2 * BLOCK_WORDS * 4

_pointer = ctypes.c_void_p


def scratch_bytes() -> int:
    """Memory the kernel holds: one block's float32 sums for each of torch's threads."""
    return SCRATCH_BYTES_PER_THREAD * torch.get_num_threads()


def build(compiler: str | None = None) -> ctypes.CDLL | None:
    """The kernel compiled for this machine's CPU and loaded (None, with a warning, when it cannot
    be). It is built in a private temporary folder, removed once loaded: each process builds its own
    (well under a second), so no shared cache can hand a machine code built for another CPU.
    `compiler` (else $CC, else cc) may carry arguments, as CC does ("ccache gcc")."""
    compiler = compiler or os.environ.get("CC", "cc")
    command = shlex.split(compiler)
    if not command or shutil.which(command[0]) is None:
        return _unavailable(f"no C compiler found ({compiler!r})")
    try:
        with tempfile.TemporaryDirectory(prefix="recycler-native-") as folder:
            library_path = Path(folder) / "weighted_sum_bf16.so"
            result = subprocess.run([*command, *COMPILE_FLAGS, str(SOURCE), "-o", str(library_path)],
                                    capture_output=True, text=True, errors="replace", timeout=120)
            if result.returncode != 0:
                return _unavailable(f"{command[0]} failed on {SOURCE.name}: "
                                    f"{(result.stderr.strip().splitlines() or ['no message'])[0]}")
            library = ctypes.CDLL(str(library_path))  # fails where the temporary folder may not hold code (noexec)
    except Exception as error:  # any failure to build or load: torch's kernel does the same sums
        return _unavailable(f"building {SOURCE.name} with {command[0]} failed: {error}")
    library.weighted_sum_bf16.argtypes = [_pointer, _pointer, _pointer, ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                          _pointer, _pointer, ctypes.c_int64, ctypes.c_uint16]
    library.weighted_sum_bf16.restype = None
    library.weighted_sum_bf16_element.argtypes = [_pointer, _pointer, _pointer, ctypes.c_int, ctypes.c_int64, ctypes.c_uint16]
    library.weighted_sum_bf16_element.restype = None
    return library


def _unavailable(reason: str) -> None:
    warnings.warn(f"recycler: {reason}; bfloat16 merges on the CPU use torch's kernel instead", stacklevel=3)


def torch_nan_bits() -> int:
    """The bits torch writes for a NaN rounded to bfloat16 on this CPU: its vectorized conversion
    (AVX2, AVX-512) writes 0xffff, its scalar one 0x7fc0."""
    return int(torch.full((64,), float("nan")).to(torch.bfloat16).view(torch.int16)[0]) & 0xFFFF


class NativeSum:
    """The built kernel, a pool of threads to run it on (ctypes releases the GIL during a call), and
    one block's accumulators per thread, made again when torch's thread count changes. A forked
    child starts afresh: its copy of the pool has no threads, and the lock may have been held."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self.library = library
        self.nan_bits = torch_nan_bits()
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self.lock = threading.Lock()  # the accumulators are shared: one sum at a time per process
        self.executor: ThreadPoolExecutor | None = None
        self.accumulators = torch.empty((0, 2, BLOCK_WORDS), dtype=torch.float32)

    def _ready(self) -> int:
        """The threads to use, with a pool and accumulators for them."""
        threads = torch.get_num_threads()
        if self.executor is None or len(self.accumulators) != threads:
            if self.executor is not None:
                self.executor.shutdown()
            self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="recycler-sum")
            self.accumulators = torch.empty((threads, 2, BLOCK_WORDS), dtype=torch.float32)
        return threads

    def __call__(self, out: torch.Tensor, coefficients: torch.Tensor, rows: Sequence[torch.Tensor]) -> None:
        coefficients = coefficients.contiguous()
        pointers = (_pointer * len(rows))(*[r.data_ptr() for r in rows])
        words = out.numel() // 2
        with self.lock:
            parts = max(1, min(self._ready(), words // MIN_WORDS_PER_THREAD))
            share = -(-words // parts)

            def sum_part(part: int) -> None:
                start = part * share
                self.library.weighted_sum_bf16(out.data_ptr(), coefficients.data_ptr(), pointers, len(rows), start,
                                               max(0, min(share, words - start)), self.accumulators[part, 0].data_ptr(),
                                               self.accumulators[part, 1].data_ptr(), BLOCK_WORDS, self.nan_bits)

            others = [self.executor.submit(sum_part, part) for part in range(1, parts)]
            try:
                sum_part(0)
            finally:  # even when interrupted: no thread may still write once the lock is released
                wait(others)
            for other in others:
                other.result()
            if out.numel() % 2:
                self.library.weighted_sum_bf16_element(out.data_ptr(), coefficients.data_ptr(), pointers, len(rows),
                                                       out.numel() - 1, self.nan_bits)


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
