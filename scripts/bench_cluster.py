"""Benchmark: a search on one Ray node against two Ray nodes on this machine (the same CPU slots in
all), and what losing a node mid-search costs.

Each run is `recycler run SPEC --study FOLDER --quiet --address ADDRESS` as a subprocess against a
real Ray cluster on this machine (Ray's `cluster_utils.Cluster`, as tests/test_cluster.py builds it),
shut down after the run:
  A       one node (the head) with 2 CPU slots;
  B       the head with 1 CPU slot plus a second node with 1 (a raylet each, one worker each);
  B-kill  as B, and the second node is killed (its raylet and every process under it, SIGKILL) once
          `--kill-after` trials are complete (and `--kill-delay` seconds more, into the trials in flight):
          the search goes on with the head's worker alone.
The spec: the pool at --pool, `space: simplex`, RandomSampler with a fixed seed (the same candidates
in every run), 2 workers, --trials trials (baselines included). Per run: the wall time of the
subprocess from start to exit, and trials per second from the first trial's start to the last
trial's end (the trials' datetime_start/datetime_complete in the study). Per kill: seconds from the
kill until the driver recorded the lost trial as failed, the work the lost trial had done, the
head worker's idle time after the kill, and every trial still completed. The layouts alternate in
order from one repeat to the next; figures are medians over --repeats, ratios within a repeat.
Usage:
    python scripts/bench_cluster.py --pool recycler-demo/pool/pool.yaml --trials 40 --repeats 3 --kill-after 10
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil
import yaml
from optuna.trial import TrialState
from ray.cluster_utils import Cluster

from recycler.errors import RecyclerError
from recycler.study import load_study

DATA = Path(__file__).resolve().parent / "bench_data"
LAYOUTS = ("A", "B", "B-kill")


def raylets() -> int:
    """Raylet processes on this machine (the ones of other users' clusters included)."""
    return sum(1 for p in psutil.process_iter(["name"]) if p.info["name"] == "raylet")


def write_spec(pool_yaml: Path, folder: Path, trials: int, seed: int) -> Path:
    """The pool's spec with absolute checkpoint paths, set up for a random simplex search on 2 workers."""
    spec = yaml.safe_load(pool_yaml.read_text())
    root = pool_yaml.resolve().parent
    for ref in [*spec["checkpoints"], *([spec["base"]] if spec.get("base") else [])]:
        ref["path"] = str((root / ref["path"]).resolve())
    if isinstance(spec.get("suite"), str) and (root / spec["suite"]).exists():
        spec["suite"] = str((root / spec["suite"]).resolve())
    spec.update(search={"space": "simplex", "trials": trials, "sampler": "RandomSampler", "seed": seed},
                resources={"workers": 2})
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def completed(folder: Path) -> int:
    try:
        study, _ = load_study(folder)
    except RecyclerError:  # the driver has not made the study yet
        return 0
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def merge_workers_under(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if "MergeWorker" in " ".join(p.cmdline())]


def kill_tree(process: subprocess.Popen) -> None:
    try:
        tree = [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()


def kill_node(node) -> None:
    """The node is lost: its raylet and every process under it (its worker among them), SIGKILL."""
    raylet = node.all_processes["raylet"][0].process.pid
    for process in [*psutil.Process(raylet).children(recursive=True), psutil.Process(raylet)]:
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_once(layout: str, spec_path: Path, folder: Path, kill_after: int, kill_delay: float, timeout: float,
             started_raylets: list[int]) -> dict:
    """One `recycler run --address` on a fresh cluster of the layout; the cluster is shut down after."""
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 2 if layout == "A" else 1, "include_dashboard": False})
    second = None if layout == "A" else cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    started_raylets += [node.all_processes["raylet"][0].process.pid for node in cluster.list_all_nodes()]
    out: dict = {"layout": layout, "load_before": os.getloadavg()[0]}
    driver = None
    try:
        launched = datetime.now()
        started = time.perf_counter()
        driver = subprocess.Popen(
            [sys.executable, "-m", "recycler.cli", "run", str(spec_path), "--study", str(folder), "--quiet",
             "--address", cluster.address],
            cwd=folder.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        if layout == "B-kill":
            raylet = second.all_processes["raylet"][0].process.pid
            while completed(folder) < kill_after or not merge_workers_under(raylet):
                if driver.poll() is not None or time.perf_counter() - started > timeout:
                    raise RuntimeError(f"{layout}: the search ended or stalled before the kill: {driver.stderr.read()}")
                time.sleep(0.05)
            time.sleep(kill_delay)  # into the trials in flight, so the lost one has done some work
            out["complete_at_kill"] = completed(folder)
            out["kill"] = datetime.now().isoformat()
            kill_node(second)
        _, stderr = driver.communicate(timeout=max(1.0, timeout - (time.perf_counter() - started)))
        out["wall_s"] = time.perf_counter() - started
        out["load_after"] = os.getloadavg()[0]  # 1-minute load average: other work on the machine shows here
        if driver.returncode != 0:
            raise RuntimeError(f"{layout}: recycler run exited {driver.returncode}: {stderr[-2000:]}")
    finally:
        if driver is not None and driver.poll() is None:
            kill_tree(driver)
        cluster.shutdown()
    out["launched"] = launched.isoformat()
    out.update(analyse(folder, launched, datetime.fromisoformat(out["kill"]) if "kill" in out else None))
    return out


def analyse(folder: Path, launched: datetime, kill: datetime | None) -> dict:
    study, _ = load_study(folder)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials if t.datetime_complete)
    span = (last - first).total_seconds()
    ends = sorted((t.datetime_complete - first).total_seconds() for t in complete)
    out = {
        "complete": len(complete), "failed": len(failed), "other_states": len(trials) - len(complete) - len(failed),
        "startup_s": (first - launched).total_seconds(),  # driver start, Ray connection, workers holding the pool
        "trials_span_s": span, "trials_per_s": len(complete) / span,
        "trial_median_s": statistics.median((t.datetime_complete - t.datetime_start).total_seconds() for t in complete),
        "completion_s": ends,  # each complete trial's end, seconds after the first trial's start, in order
    }
    if kill is None:
        return out
    lost = [t for t in failed if t.datetime_start <= kill]
    assert len(lost) == 1, f"one trial lost with the node, got {len(lost)} failed: {[t.user_attrs for t in failed]}"
    lost = lost[0]
    retry = [t for t in complete if t.user_attrs.get("retry_of") == lost.number]
    # the head's worker alone after the kill: busy while one of its trials ran, idle otherwise
    after = sorted(((max(t.datetime_start, kill) - kill).total_seconds(), (t.datetime_complete - kill).total_seconds())
                   for t in complete if t.datetime_complete > kill)
    busy, reach = 0.0, 0.0
    for start, end in after:
        busy += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    one_worker = [(t.datetime_complete - t.datetime_start).total_seconds() for t in complete if t.datetime_start >= kill]
    out.update({
        "detect_s": (lost.datetime_complete - kill).total_seconds(),  # kill -> the failed trial recorded
        "lost_work_s": (kill - lost.datetime_start).total_seconds(),  # what the lost trial had done
        "lost_error": lost.user_attrs.get("error"),
        "retried": len(retry),
        "kill_after_first_trial_s": (kill - first).total_seconds(),
        "after_kill_s": (last - kill).total_seconds(),
        "idle_after_kill_s": (last - kill).total_seconds() - busy,
        "trials_after_kill": len(after),
        "one_worker_trial_median_s": statistics.median(one_worker) if one_worker else None,
    })
    return out


def summarise(repeats: list[dict], trials: int) -> dict:
    med = statistics.median

    def m(layout, key):
        return med(r[layout][key] for r in repeats)

    per = []
    for r in repeats:
        a, b, k = r["A"], r["B"], r["B-kill"]
        n_left = trials - k["complete_at_kill"]  # complete trials the search still needed at the kill
        # the unkilled B run of the same repeat: time from its kill_after-th completion to its last one
        b_left = b["completion_s"][-1] - b["completion_s"][k["complete_at_kill"] - 1]
        per.append({
            "B_over_A_throughput": b["trials_per_s"] / a["trials_per_s"],
            "B_over_A_wall": b["wall_s"] / a["wall_s"],
            "B_over_A_startup": b["startup_s"] / a["startup_s"],
            "kill_over_B_wall": k["wall_s"] / b["wall_s"],
            "kill_extra_wall_s": k["wall_s"] - b["wall_s"],
            "kill_extra_after_kill_s": k["after_kill_s"] - b_left,
            # the remaining trials at one worker's pace instead of two workers' (the unkilled B run's pace)
            "one_worker_estimate_s": n_left * k["one_worker_trial_median_s"] - b_left,
            "detect_s": k["detect_s"], "lost_work_s": k["lost_work_s"], "idle_after_kill_s": k["idle_after_kill_s"],
        })
    return {
        "A": {key: m("A", key) for key in ("wall_s", "startup_s", "trials_per_s", "trial_median_s")},
        "B": {key: m("B", key) for key in ("wall_s", "startup_s", "trials_per_s", "trial_median_s")},
        "B-kill": {key: m("B-kill", key) for key in ("wall_s", "startup_s", "detect_s", "lost_work_s", "idle_after_kill_s",
                                                      "after_kill_s", "one_worker_trial_median_s")},
        "ratios": {key: med(p[key] for p in per) for key in per[0]},
        "per_repeat": per,
        "all_complete": all(r[layout]["complete"] == trials for r in repeats for layout in LAYOUTS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=Path, default=Path("recycler-demo/pool/pool.yaml"), help="pool spec YAML")
    parser.add_argument("--trials", type=int, default=40, help="trials per study, baselines included")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kill-after", type=int, default=10, help="complete trials before the second node is killed")
    parser.add_argument("--kill-delay", type=float, default=0.5, help="seconds after that before the kill")
    parser.add_argument("--seed", type=int, default=0, help="the RandomSampler's seed, the same in every run")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one run may take")
    parser.add_argument("--root", type=Path, help="folder for the studies (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=DATA / "cluster.json")
    args = parser.parse_args()

    root = args.root or Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    before = raylets()
    mine: list[int] = []  # the raylets of the clusters this run started
    started = time.perf_counter()
    repeats = []
    for repeat in range(args.repeats):
        order = LAYOUTS if repeat % 2 == 0 else tuple(reversed(LAYOUTS))
        results = {}
        for layout in order:
            folder = root / f"r{repeat}-{layout}" / "study"
            folder.parent.mkdir(parents=True, exist_ok=False)
            spec_path = write_spec(args.pool, folder.parent, args.trials, args.seed)
            results[layout] = run_once(layout, spec_path, folder, args.kill_after, args.kill_delay, args.timeout, mine)
            r = results[layout]
            extra = f", kill->failed {r['detect_s']:.2f} s, lost {r['lost_work_s']:.2f} s" if "detect_s" in r else ""
            print(f"repeat {repeat} {layout:6}: {r['wall_s']:6.1f} s, start-up {r['startup_s']:5.1f} s, "
                  f"{r['trials_per_s']:.3f} trials/s, {r['complete']} complete, {r['failed']} failed{extra}, "
                  f"load {r['load_before']:.1f}->{r['load_after']:.1f}", flush=True)
        repeats.append(results)
    after = raylets()
    left = [pid for pid in mine if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    summary = summarise(repeats, args.trials)
    record = {
        "command": " ".join(["python", *sys.argv]), "pool": str(args.pool), "trials": args.trials,
        "kill_after": args.kill_after, "kill_delay": args.kill_delay, "seed": args.seed, "repeats": repeats, "summary": summary,
        "raylets_before": before, "raylets_after": after, "own_raylets_started": len(mine), "own_raylets_left": left, "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(json.dumps({k: summary[k] for k in ("A", "B", "B-kill", "ratios", "all_complete")}, indent=1))
    print(f"raylets on the machine before {before}, after {after}; of the {len(mine)} this run started, "
          f"{len(left)} left; {record['seconds']:.0f} s; wrote {args.out}")
    assert summary["all_complete"], "a study did not complete all its trials"
    assert not left, f"raylets left running: {left}"


if __name__ == "__main__":
    main()
