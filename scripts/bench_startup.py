"""Benchmark: the pool work of a start and of a resume (checksums and the NaN/inf check), against one
read of the pool and against the previous way, in one run.

Builds (once) a pool of Llama-shaped bfloat16 checkpoints (scripts/bench_large_pool.py) and, with
the pool in the page cache (or, with --cold, read from disk: the page cache dropped before each
timing, which needs root), times:
- the read floor: every file read once into a buffer, files in parallel on as many threads as the
  scan uses, and on one thread (the faster is the floor);
- the hash floor: sha256 of every file, files in parallel (what identifies the pool, unchanged);
- the previous start: sha256 of every file, then every floating tensor read through safetensors
  and checked on the driver, one at a time; and its resume, the check alone (sums cached);
- this start (recycler/checkpoint_scan.py, empty cache): one parallel pass hashing and checking;
- this resume: `load_pool`, `check_finite` and `fingerprint` with the scans cached.

    python scripts/bench_startup.py --checkpoints 8 --root /tmp/recycler-startup [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from recycler.checkpoint_scan import scan_files
from recycler.files import sha256_file
from recycler.pool import load_pool
from recycler.spec import load_spec
from bench_large_pool import build_pool  # its sibling in scripts/


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def read_all(files: list[Path], threads: int) -> None:
    def read(file: Path) -> None:
        buffer = bytearray(64 << 20)
        with open(file, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(read, files))


def drop_page_cache() -> None:
    """Write dirty pages out and drop the page cache, so the next read comes from the disk."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def previous_check(pool) -> None:
    """The NaN/inf check as it was: each floating tensor through safetensors, one at a time."""
    for member in pool.members:
        for name, info in sorted(member.tensors.items()):
            if info.dtype.is_floating_point:
                assert torch.isfinite(member.tensor(name)).all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--root", default="/tmp/recycler-startup")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each timing (root)")
    parser.add_argument("--out", default=None, help="default scripts/bench_data/startup[-cold].json")
    args = parser.parse_args()
    out = Path(args.out or f"scripts/bench_data/startup{'-cold' if args.cold else ''}.json")
    cold = drop_page_cache if args.cold else (lambda: None)
    spec = load_spec(build_pool(Path(args.root), args.checkpoints))
    files = [file for member in load_pool(spec).members for file in member.files]
    size = sum(file.stat().st_size for file in files)
    threads = min(len(files), os.cpu_count() or 1)
    read_all(files, threads)  # into the page cache
    rows: dict[str, list[float]] = {key: [] for key in ("floor_parallel", "floor_one_thread", "hash_floor", "previous_start",
                                                         "previous_resume", "start", "resume")}
    for _ in range(args.repeats):
        cold()
        rows["floor_parallel"].append(timed(lambda: read_all(files, threads)))
        cold()
        rows["floor_one_thread"].append(timed(lambda: read_all(files, 1)))
        cold()
        with ThreadPoolExecutor(max_workers=threads) as hashing:
            rows["hash_floor"].append(timed(lambda: list(hashing.map(sha256_file, files))))
        pool = load_pool(spec)
        cold()
        hashed = timed(lambda: [sha256_file(file) for file in files])
        check = timed(lambda: previous_check(pool))  # the files just read: from the page cache
        rows["previous_start"].append(hashed + check)
        cold()
        rows["previous_resume"].append(timed(lambda: previous_check(pool)))
        with tempfile.TemporaryDirectory() as cache:
            os.environ["RECYCLER_CACHE"] = cache
            cold()
            rows["start"].append(timed(lambda: scan_files(files)))

            def resume() -> None:
                pool = load_pool(spec)
                pool.check_finite()
                pool.fingerprint()

            rows["resume"].append(timed(resume))
    best = {key: min(values) for key, values in rows.items()}
    floor = min(best["floor_parallel"], best["floor_one_thread"])
    result = {
        "page_cache": "dropped before each timing" if args.cold else "warm", "checkpoints": args.checkpoints, "pool_GB": size / 1e9, "threads": threads, "cpus": os.cpu_count(),
        "seconds_best_of": args.repeats, **{f"{k}_s": v for k, v in best.items()},
        "floor_GB_per_s": size / floor / 1e9,
        "start_over_floor": best["start"] / floor, "previous_start_over_floor": best["previous_start"] / floor,
        "start_over_hash_floor": best["start"] / best["hash_floor"],
        "resume_over_previous_resume": best["resume"] / best["previous_resume"],
        "median_s": {k: statistics.median(v) for k, v in rows.items()},
    }
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
