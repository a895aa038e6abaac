"""`recycler run` killed with SIGKILL at random moments, ten times, then run to the end."""

import json
import random
import time

import yaml
from optuna.trial import TrialState

from recycler.demo.tiny import write_pool
from recycler.study import load_study
from tests.processes import kill_tree, start_run
from tests.suites import write_suite

KILLS = 10
TRIALS = 120
STARTUP_KILLS = {0, 5}  # these kills land at a random moment of start-up; the rest mid-search


def snapshot(folder):
    if not (folder / "study.json").exists():
        return {}
    try:
        study, _ = load_study(folder)
    except Exception:  # killed before the study was created in storage
        return {}
    return {t.number: t for t in study.get_trials(deepcopy=True)}


def pareto(trials, directions):
    signs = [1 if d == "maximize" else -1 for d in directions]

    def dominates(a, b):
        a = [s * v for s, v in zip(signs, a.values)]
        b = [s * v for s, v in zip(signs, b.values)]
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return {t.number for t in trials if not any(dominates(o, t) for o in trials)}


def test_sigkill_ten_times_loses_nothing_and_counts_nothing_twice(tmp_path):
    spec_path = write_pool(tmp_path, 3)
    write_suite(tmp_path / "suite")
    spec = yaml.safe_load(spec_path.read_text())
    spec.update(suite="suite/suite.yaml", resources={"workers": 2},
                search={"space": "simplex", "trials": TRIALS, "sampler": "RandomSampler", "seed": 3})
    spec_path.write_text(yaml.safe_dump(spec))
    folder = tmp_path / "study"
    rng = random.Random(7)
    finished_at_kill = {}
    running_at_kill = {}
    for kill in range(KILLS):
        process = start_run(spec_path, folder)
        if kill in STARTUP_KILLS:
            time.sleep(rng.uniform(1.0, 10.0))
        else:
            done_before = sum(t.state == TrialState.COMPLETE for t in snapshot(folder).values())
            deadline = time.time() + 300
            while sum(t.state == TrialState.COMPLETE for t in snapshot(folder).values()) <= done_before and time.time() < deadline:
                time.sleep(0.2)
            time.sleep(rng.uniform(0.0, 1.0))
        kill_tree(process)
        for number, trial in snapshot(folder).items():
            if trial.state == TrialState.COMPLETE:
                finished_at_kill[number] = trial.values
            elif trial.state == TrialState.RUNNING:
                running_at_kill[number] = trial.params if "recipe" in trial.user_attrs else None

    process = start_run(spec_path, folder)
    assert process.wait(timeout=900) == 0
    study, info = load_study(folder)
    trials = {t.number: t for t in study.trials}
    complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]

    assert finished_at_kill and running_at_kill  # the kills did land mid-search
    for number, values in finished_at_kill.items():
        assert trials[number].state == TrialState.COMPLETE and trials[number].values == values
    assert len(complete) == TRIALS
    retried = {t.user_attrs["retry_of"]: t for t in trials.values() if "retry_of" in t.user_attrs}
    for number, params in running_at_kill.items():
        assert trials[number].state == TrialState.FAIL
        if params:  # a trial killed before its recipe was drawn had nothing to run again
            assert number in retried and retried[number].params == params
    params = [json.dumps(t.params, sort_keys=True) for t in complete]
    assert len(set(params)) == len(params)
    assert {t.number for t in study.best_trials} == pareto(complete, info.directions)
