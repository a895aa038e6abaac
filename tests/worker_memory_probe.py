"""Run as a script by tests/test_worker_memory.py, in a process of its own: merge every baseline
recipe of a pool under a data limit of what the process holds after merging them all once (the
kernel compiled for each number of rows, the allocator's heap at its working size) plus the
scratch MemoryNeeds promises and SLACK_BYTES. A recipe allocating more fails with MemoryError.
The limited pass uses a new merger, so nothing the first one cached (SLERP's cosines) is reused.

    python tests/worker_memory_probe.py POOL.yaml streamed|stacked
"""

import resource
import sys

import torch

from recycler.baselines import baseline_recipes
from recycler.merge import MemoryNeeds, PoolMerger
from recycler.pool import load_pool
from recycler.spec import load_spec

# Python objects and small tensors, and what glibc may keep in its heap: blocks below its largest
# mmap threshold (32 MiB) come from a heap that does not shrink when they are freed.
SLACK_BYTES = (24 << 20) + 2 * (32 << 20)


def private_data_bytes() -> int:
    """The process's private writable memory (VmData), what RLIMIT_DATA limits."""
    for line in open("/proc/self/status"):
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


def main() -> None:
    spec_path, residency = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)  # one thread and one malloc arena (MALLOC_ARENA_MAX=1, set by the test): what is
    # measured is what the merge allocates, not how many threads' arenas glibc happens to grow
    pool = load_pool(load_spec(spec_path))
    needs = MemoryNeeds.of(pool, torch.device("cpu"))
    budget = needs.streamed if residency == "streamed" else needs.resident
    recipes = baseline_recipes(pool.names, pool.base is not None)
    warm = PoolMerger(pool, "cpu", budget)
    model = {name: torch.empty(shape, dtype=pool.dtype) for name, shape in warm.shapes.items()}
    for recipe in recipes.values():
        warm.write_into(recipe, model)
    del warm
    merger = PoolMerger(pool, "cpu", budget)
    assert type(merger.rows).__name__ == ("StreamedRows" if residency == "streamed" else "ResidentRows")
    limit = private_data_bytes() + needs.scratch + SLACK_BYTES
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    for label, recipe in recipes.items():
        try:
            merger.write_into(recipe, model)
        except (MemoryError, RuntimeError) as error:  # torch's allocator raises RuntimeError
            print(f"{label}: more than the scratch promised ({needs.scratch} bytes) + {SLACK_BYTES}: {str(error)[:200]}")
            sys.exit(1)
    print("every recipe within scratch")


if __name__ == "__main__":
    main()
