"""A worker's merges keep within the memory it promises: one model plus MemoryNeeds' scratch.

Each case runs tests/worker_memory_probe.py in a process of its own, under a data limit
(RLIMIT_DATA: private memory, not the page cache of the memory-mapped pool) of what it holds after a
warm-up merge plus the promised scratch and a little slack; every baseline recipe (the checkpoints,
the uniform average, SLERP, and with a base task arithmetic, TIES and DARE) must merge under it.
The largest tensor (1024 x 4096) is big enough that a whole float64 copy of two of its rows (what
SLERP's cosine once took) exceeds the slack.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recycler.demo.tiny import write_pool

PROBE = Path(__file__).with_name("worker_memory_probe.py")


@pytest.mark.parametrize("residency", ["streamed", "stacked"])
@pytest.mark.parametrize("base", [False, True], ids=["no-base", "base"])
def test_every_recipe_merges_within_the_promised_scratch(tmp_path, base, residency):
    spec = write_pool(tmp_path, 3, base=base, width=1024, layers=1, dtype=torch.bfloat16)
    run = subprocess.run([sys.executable, str(PROBE), str(spec), residency], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent)
    assert run.returncode == 0 and "every recipe within scratch" in run.stdout, run.stdout + run.stderr[-2000:]
