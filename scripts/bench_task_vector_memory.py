"""Benchmark: the private memory TIES and DARE take to merge one tensor, per element, against what
`MemoryNeeds` promises (`recycler.recipes.TASK_VECTOR_BYTES_PER_ELEMENT`).

Sampling a process's memory misses short peaks, so each figure is the smallest data limit
(RLIMIT_DATA, above what the process holds after one merge of the tensor) under which a second merge
passes, found by bisection, each try in a process of its own. One thread, one malloc arena, rows
in memory: what is measured is what the merge allocates. Usage:
    python scripts/bench_task_vector_memory.py --elements 16777216 --rows 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys

METHODS = {"ties": ("magnitude", True), "dare_ties": ("random", True), "dare_linear": ("random", False)}


def private_data_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


def merge_under_limit(method: str, elements: int, rows: int, headroom: int) -> bool:
    """In this process: merge once, then again under a data limit `headroom` bytes above what it holds."""
    import torch

    from recycler.recipes import TaskVectorRecipe

    class Names:  # all that merge_rows asks of a pool
        names = [f"c{i}" for i in range(rows)]
        base = True

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    stored = [torch.randn(elements, generator=generator).bfloat16() for _ in range(rows + 1)]
    sparsify, consensus = METHODS[method]
    recipe = TaskVectorRecipe({n: 0.5 for n in Names.names}, sparsify, consensus, density=0.3)
    recipe.merge_rows(Names, "t", lambda i: stored[i].float())
    limit = private_data_bytes() + headroom
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:
        recipe.merge_rows(Names, "t", lambda i: stored[i].float())
    except (MemoryError, RuntimeError):  # torch's allocator raises RuntimeError
        return False
    return True


def smallest_headroom(method: str, elements: int, rows: int, resolution: int = 4 << 20) -> int:
    low, high = 0, 64 * elements
    while high - low > resolution:
        middle = (low + high) // 2
        run = subprocess.run([sys.executable, __file__, "--try", method, str(middle), "--elements", str(elements), "--rows", str(rows)],
                             env={**os.environ, "MALLOC_ARENA_MAX": "1"})
        low, high = (low, middle) if run.returncode == 0 else (middle, high)
    return high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", type=int, default=1 << 24)
    parser.add_argument("--rows", type=int, default=4, help="checkpoints (a base comes on top)")
    parser.add_argument("--try", dest="attempt", nargs=2, metavar=("METHOD", "HEADROOM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attempt:
        sys.exit(0 if merge_under_limit(args.attempt[0], args.elements, args.rows, int(args.attempt[1])) else 1)
    from recycler.recipes import TASK_VECTOR_BYTES_PER_ELEMENT

    figures = {}
    for method in METHODS:
        figures[method] = round(smallest_headroom(method, args.elements, args.rows) / args.elements, 1)
        print(f"{method}: {figures[method]} bytes per element", file=sys.stderr, flush=True)
    print(json.dumps({"elements": args.elements, "rows": args.rows, "machine": platform.processor() or platform.machine(),
                      "bytes_per_element": figures, "promised": TASK_VECTOR_BYTES_PER_ELEMENT}, indent=1))


if __name__ == "__main__":
    main()
