"""Failures during a search: dead workers, bad candidates, NaN checkpoints."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import optuna
import psutil
import pytest
import torch
import yaml
from optuna.trial import TrialState
from safetensors.torch import load_file, save_file

from recycler.errors import RecyclerError, format_bytes
from recycler.merge import MemoryNeeds
from recycler.pool import load_pool
from recycler.ledger import fail_and_retry, finished_trials
from recycler.search import run_search
from recycler.spec import load_spec
from recycler.workers import MergeWorker
from tests.suites import add_f1_task


def test_failed_trials_are_retried_up_to_the_limit():
    study = optuna.create_study(directions=["maximize"])
    study.enqueue_trial({"x": 0.25}, user_attrs={"baseline": "c0"})
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    for attempt in (1, 2, 3):
        retried = fail_and_retry(study, trial, f"boom {attempt}", max_retries=2)
        assert retried == (attempt <= 2)
        if retried:
            trial = study.ask()
            assert trial.suggest_float("x", 0, 1) == 0.25
            assert trial.user_attrs == {"retry_of": trial.number - 1, "attempt": attempt + 1, "baseline": "c0"}
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    assert study.trials[-1].user_attrs["error"] == "boom 3"
    assert finished_trials(study) == 1


def _worker_processes():
    return [p for p in psutil.process_iter(["cmdline"]) if any("ray::MergeWorker" in part for part in (p.info["cmdline"] or []))]


def _side_baselines_scored(folder) -> bool:
    from recycler.study import JOURNAL_FILE

    journal = folder / JOURNAL_FILE
    return journal.is_file() and "baseline:slerp" in journal.read_text()


def test_a_killed_worker_fails_only_its_trial_and_is_replaced(tmp_path, local_ray, search_spec):
    spec = search_spec(trials=12)
    folder = tmp_path / "study"
    outcome = {}
    search = threading.Thread(target=lambda: outcome.update(study=run_search(spec, folder, progress=False)))
    search.start()
    killed = None
    deadline = time.time() + 240
    while not _side_baselines_scored(folder) and time.time() < deadline:  # kill a trial's worker, not a baseline's
        time.sleep(0.05)
    while killed is None and time.time() < deadline:
        busy = [p for p in _worker_processes() if any(part.startswith("ray::MergeWorker.evaluate") for part in p.info["cmdline"])]
        if busy:
            killed = busy[0].pid
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    search.join(timeout=600)
    assert killed is not None and "study" in outcome
    study = outcome["study"]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["error"].startswith("worker died")
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == failed[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == failed[0].params
    assert finished_trials(study) == 12
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 12


def test_a_candidate_with_non_finite_weights_fails_with_the_reason(tmp_path, search_spec):
    space = tmp_path / "huge.yaml"
    space.write_text(yaml.safe_dump({"name": "huge", "rule": "linear", "parameters": {"low": 1e38, "high": 3e38}}))
    spec = search_spec(trials=6, space=str(space))
    study = run_search(spec, tmp_path / "study", progress=False, in_process=True)
    merges = [t for t in study.trials if "baseline" not in t.user_attrs]
    assert merges and all(t.state == TrialState.FAIL for t in merges)
    assert all("NaN or inf in tensor" in t.user_attrs["error"] for t in merges)
    assert not any(t.number in {m.number for m in merges} for t in study.best_trials)
    assert finished_trials(study) == 6


def test_a_checkpoint_with_nan_weights_is_refused_by_name(tmp_path, search_spec):
    spec = search_spec()
    file = tmp_path / "ckpt2" / "model.safetensors"
    tensors = load_file(file)
    tensors["transformer.h.1.mlp.c_proj.bias"][3] = float("nan")
    save_file(tensors, file, metadata={"format": "pt"})
    with pytest.raises(RecyclerError, match="checkpoint 'c2' .*tensor 'transformer.h.1.mlp.c_proj.bias' holds NaN or inf"):
        MergeWorker(spec)


def test_a_worker_killed_for_memory_while_starting_ends_the_run_with_one_line(tmp_path, search_spec):
    """Ray's own memory monitor, with its threshold set below what the machine already uses, kills
    the first worker as it starts: `recycler run` says what ran out and what a worker needs."""
    search_spec(workers=1)
    spec_path = tmp_path / "pool.yaml"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_memory_usage_threshold": "0.001", "RAY_memory_monitor_refresh_ms": "50",
           "RAY_ADDRESS": "local"}  # its own Ray, whose monitor kills the worker
    run = subprocess.run([sys.executable, "-m", "recycler.cli", "run", str(spec_path), "--study", str(tmp_path / "study")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    needs = MemoryNeeds.of(load_pool(load_spec(spec_path)), torch.device("cpu"))
    assert lines[0] == (
        "recycler: error: a worker ran out of memory while starting and Ray killed it "
        f"{re.search(r'[(]the node had .+ of .+ in use[)]', lines[0])[0]}: "
        f"a worker needs {format_bytes(needs.streamed)} with the pool streamed from the page cache (one model and "
        f"scratch), {format_bytes(needs.resident)} with it stacked, and 1 worker(s) started; "
        "lower resources.workers or resources.memory_per_worker, or use a machine with more memory"
    )


def test_every_candidate_raising_the_same_error_ends_the_search_with_one_line(tmp_path, search_spec):
    """A held-out task that lm-eval cannot score (f1 of a three-way choice): each trial fails with
    the exception in one line, the workers live on, and the search ends after three candidates."""
    spec = search_spec(trials=8, workers=1)
    add_f1_task(tmp_path / "suite" / "tasks", "pickf1", choices=3)
    spec = spec.model_copy(update={"suite": spec.suite.replace("suite.yaml", "f1.yaml")})
    suite = yaml.safe_load((tmp_path / "suite" / "suite.yaml").read_text())
    suite["held_out"] = [{"task": "pickf1", "metric": "f1"}]
    (tmp_path / "suite" / "f1.yaml").write_text(yaml.safe_dump(suite))
    started = time.monotonic()
    with pytest.raises(RecyclerError, match=r"^every candidate fails the same way \(3 in a row, the last trial \d+\): "
                                            r"ValueError: Target is multiclass"):
        run_search(spec, tmp_path / "study", progress=False, in_process=True)
    assert time.monotonic() - started < 120
    from recycler.study import load_study

    study, _ = load_study(tmp_path / "study")
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all(t.user_attrs["error"].startswith("ValueError: Target is multiclass") for t in failed)
    assert all("\n" not in t.user_attrs["error"] for t in failed)


def test_a_result_the_driver_cannot_record_fails_its_trial_with_the_reason(tmp_path, search_spec):
    """A trial whose per-example file cannot be written (its path is taken by a folder): the trial
    fails with that reason and is retried, and once every candidate fails so the search says why."""
    spec = search_spec(trials=1, workers=1)
    folder = tmp_path / "study"
    run_search(spec, folder, progress=False, in_process=True)
    for number in range(1, 40):
        (folder / "examples" / f"trial-{number:06d}.json").mkdir()
    with pytest.raises(RecyclerError, match=r"^every candidate fails the same way .*: recording its result failed: "
                                            r"IsADirectoryError"):
        run_search(spec.model_copy(update={"search": spec.search.model_copy(update={"trials": 12})}), folder, progress=False, in_process=True)
    from recycler.study import load_study

    study, _ = load_study(folder)
    errors = [t.user_attrs.get("error") for t in study.trials if t.state == TrialState.FAIL]
    assert errors and all(e.startswith("recording its result failed: IsADirectoryError") for e in errors)
    retried = [t for t in study.trials if t.user_attrs.get("retry_of") is not None]
    assert retried, "a failed trial is queued again while its retries last"


def test_workers_that_keep_dying_end_the_search_with_one_line(tmp_path, local_ray, search_spec):
    """Every worker killed while it scores: after more than max(3, 2 x workers, max_retries + 2)
    deaths in a row without a result, the search ends with one line instead of replacing workers
    forever."""
    spec = search_spec(trials=12, workers=1)
    outcome: dict = {}

    def search() -> None:
        try:
            run_search(spec, tmp_path / "study", progress=False)
        except RecyclerError as error:
            outcome["error"] = str(error)

    thread = threading.Thread(target=search)
    thread.start()
    killed: set[int] = set()
    deadline = time.time() + 240
    while thread.is_alive() and time.time() < deadline:
        for process in _worker_processes():
            if process.pid not in killed and any(part.startswith("ray::MergeWorker.evaluate") for part in process.info["cmdline"]):
                killed.add(process.pid)
                os.kill(process.pid, signal.SIGKILL)
        time.sleep(0.05)
    thread.join(timeout=60)
    assert re.match(r"^workers keep dying: 5 in a row without a result, the last while scoring (trial \d+|baseline '\w+')"
                    r": worker died", outcome.get("error", "")), outcome
    assert len(killed) >= 5  # a replacement may start scoring, and be killed, before the fifth death is recorded
