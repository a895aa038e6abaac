"""Time from `recycler run` to its one-line error, for each way a search fails (BENCHMARKS §12).

Each case is a real `recycler run` in a subprocess on a tiny three-checkpoint pool (1 worker, 12
random trials) that cannot succeed:
- every candidate fails the same way: a held-out task lm-eval cannot score (f1 of a three-way choice);
- workers keep dying: every worker of this run is killed (SIGKILL) as soon as it starts scoring;
- every result fails to be recorded: the per-example files' paths are taken by folders;
- screening asked of a corpus metric: refused before anything runs;
- a worker killed for memory while starting: Ray's memory monitor set below what the machine uses.

Usage: python scripts/bench_failures.py [--out scripts/bench_data/failures.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recycler.demo.tiny import write_pool  # noqa: E402
from tests.suites import add_f1_task, write_suite  # noqa: E402


def _pool(root: Path, **search) -> Path:
    spec_path = write_pool(root, 3)
    write_suite(root / "suite")
    spec = yaml.safe_load(spec_path.read_text())
    spec.update(suite="suite/suite.yaml", resources={"workers": 1},
                search={"space": "simplex", "trials": 12, "sampler": "RandomSampler", "seed": 1, **search})
    spec_path.write_text(yaml.safe_dump(spec))
    return spec_path


def _f1_held_out(root: Path) -> None:
    add_f1_task(root / "suite" / "tasks", "pickf1", choices=3)
    suite_path = root / "suite" / "suite.yaml"
    suite = yaml.safe_load(suite_path.read_text())
    suite["held_out"] = [{"task": "pickf1", "metric": "f1"}]
    suite_path.write_text(yaml.safe_dump(suite))


def every_candidate_fails(root: Path) -> dict:
    spec = _pool(root)
    _f1_held_out(root)
    return _run(root, spec)


def workers_keep_dying(root: Path) -> dict:
    def kill_scoring_workers(run: subprocess.Popen, stop: threading.Event) -> None:
        """Kills this run's workers (Ray's processes are the run's descendants) as they start scoring."""
        while not stop.is_set():
            for process in psutil.Process(run.pid).children(recursive=True):
                try:
                    if any(part.startswith("ray::MergeWorker.evaluate") for part in process.cmdline()):
                        process.kill()
                except psutil.NoSuchProcess:
                    continue
            time.sleep(0.05)

    return _run(root, _pool(root), beside=kill_scoring_workers)


def recording_fails(root: Path) -> dict:
    spec = _pool(root)
    for number in range(40):
        (root / "study" / "examples" / f"trial-{number:06d}.json").mkdir(parents=True)
    return _run(root, spec)


def screening_a_corpus_metric(root: Path) -> dict:
    spec = _pool(root, fidelity={"screen_fraction": 0.3})
    _f1_held_out(root)
    return _run(root, spec)


def worker_out_of_memory(root: Path) -> dict:
    return _run(root, _pool(root), RAY_memory_usage_threshold="0.001", RAY_memory_monitor_refresh_ms="50")


def _run(root: Path, spec: Path, beside: Callable[[subprocess.Popen, threading.Event], None] | None = None,
         **env: str) -> dict:
    """`recycler run` on the spec, with `beside(run, stop)` in a thread while it runs: its time, exit
    status and error lines (stderr's other lines are the progress bars)."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", **env}
    environment.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    run = subprocess.Popen([sys.executable, "-m", "recycler.cli", "run", str(spec), "--study", str(root / "study")],
                           cwd=root, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    if beside is not None:
        threading.Thread(target=beside, args=(run, stop), daemon=True).start()
    try:
        _, stderr = run.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        run.kill()
        _, stderr = run.communicate()
        stderr += "\n(no end within 600 s)"
    finally:
        stop.set()
    errors = [line for line in stderr.splitlines() if line.startswith("recycler: error:")]
    return {"seconds": round(time.perf_counter() - started, 1), "exit": run.returncode, "error_lines": len(errors),
            "traceback": "Traceback" in stderr, "error": errors[-1] if errors else stderr.strip()[-300:]}


CASES: dict[str, Callable[[Path], dict]] = {
    "every candidate fails the same way": every_candidate_fails,
    "workers keep dying": workers_keep_dying,
    "every result fails to be recorded": recording_fails,
    "screening asked of a corpus metric": screening_a_corpus_metric,
    "a worker killed for memory while starting": worker_out_of_memory,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("scripts/bench_data/failures.json"))
    args = parser.parse_args()
    results = {}
    for name, case in CASES.items():
        with tempfile.TemporaryDirectory() as root:
            results[name] = case(Path(root))
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
