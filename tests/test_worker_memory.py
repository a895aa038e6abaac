"""A worker's merges keep within the memory it promises: one model plus MemoryNeeds' scratch.

Each case runs tests/worker_memory_probe.py in a process of its own, under a data limit
(RLIMIT_DATA: private memory, not the page cache of the memory-mapped pool) of what it holds after
merging every baseline once, plus the promised scratch and a little slack; every baseline recipe
(the checkpoints, the uniform average, SLERP, and with a base task arithmetic, TIES and DARE) must
merge under it. The largest tensor (2048 x 8192) is big enough that a whole float64 copy of two of
its rows (what SLERP's cosine once took, 268 MB) exceeds the slack, and so does TIES promising 24
bytes per element of it where it takes 32.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recycler.demo.tiny import write_pool

PROBE = Path(__file__).with_name("worker_memory_probe.py")


@pytest.mark.parametrize(("residency", "base"), [("streamed", False), ("stacked", False), ("streamed", True)],
                         ids=["streamed", "stacked", "streamed with a base"])  # TIES and DARE read rows alike in both
def test_every_recipe_merges_within_the_promised_scratch(tmp_path, residency, base):
    spec = write_pool(tmp_path, 3, base=base, width=2048, layers=1, dtype=torch.bfloat16)
    run = subprocess.run([sys.executable, str(PROBE), str(spec), residency], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "MALLOC_ARENA_MAX": "1"})
    assert run.returncode == 0 and "every recipe within scratch" in run.stdout, run.stdout + run.stderr[-2000:]
