"""`--storage postgresql://...` against a real PostgreSQL server: a search killed with SIGKILL
resumes, and a database restart mid-search loses nothing finished (the driver goes on, or stops
with one line and the same command finishes the study)."""

import json
import subprocess
import time

import optuna
import yaml
from optuna.trial import TrialState

from recycler.demo.tiny import write_pool
from tests.processes import kill_tree, start_run
from tests.suites import write_suite

TRIALS = 24


def completed(url, name):
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except Exception:  # not created yet, or the server is restarting
        return {}
    return {t.number: t.values for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}


def wait_for(url, name, count, timeout=300):
    deadline = time.time() + timeout
    while len(completed(url, name)) < count:
        assert time.time() < deadline, f"fewer than {count} trials completed in {timeout} s"
        time.sleep(0.3)


def test_a_search_in_postgresql_survives_sigkill_and_a_database_restart(tmp_path, postgres):
    spec_path = write_pool(tmp_path, 3)
    write_suite(tmp_path / "suite")
    spec = yaml.safe_load(spec_path.read_text())
    spec.update(name="pg", suite="suite/suite.yaml", resources={"workers": 2, "heartbeat_seconds": 2},
                search={"space": "simplex", "trials": TRIALS, "sampler": "RandomSampler", "seed": 5})
    spec_path.write_text(yaml.safe_dump(spec))
    folder, url = tmp_path / "study", postgres.url

    first = start_run(spec_path, folder, "--storage", url)
    wait_for(url, "pg", 4)
    kill_tree(first)  # the driver and its local Ray, mid-search
    before_restart = completed(url, "pg")

    second = start_run(spec_path, folder, "--storage", url, stderr=subprocess.PIPE)
    wait_for(url, "pg", min(len(before_restart) + 2, TRIALS))  # trials are quick: the first run may have done most
    postgres.stop()
    time.sleep(1.0)
    postgres.start()
    _, stderr = second.communicate(timeout=600)
    if second.returncode != 0:  # it touched the database while it was down: one line, then resume
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert second.returncode == 2 and len(lines) == 1 and "--storage: lost the study's database" in lines[0], stderr
        assert start_run(spec_path, folder, "--storage", url).wait(timeout=600) == 0

    final = completed(url, "pg")
    assert len(final) == TRIALS
    assert all(final[number] == values for number, values in before_restart.items())  # nothing finished lost or redone


def test_two_drivers_share_one_study_in_postgresql(tmp_path, postgres):
    """Two `recycler run`s started together on one study in the database, each with its own Ray and
    study folder, as on two machines: they split the work, no candidate is scored twice, the budget
    is met and overshot by at most the other driver's trial in flight, and every baseline (those the
    space expresses, and slerp, which it cannot) is scored once."""
    spec_path = write_pool(tmp_path, 3)
    write_suite(tmp_path / "suite")
    spec = yaml.safe_load(spec_path.read_text())
    spec.update(name="team", suite="suite/suite.yaml", resources={"workers": 1, "heartbeat_seconds": 5},
                search={"trials": TRIALS})  # the default sampler (TPE), seeded apart per driver
    spec_path.write_text(yaml.safe_dump(spec))

    drivers = [start_run(spec_path, tmp_path / f"machine{i}", "--storage", postgres.url, stderr=subprocess.PIPE)
               for i in range(2)]
    outcomes = [driver.communicate(timeout=600) for driver in drivers]
    assert [driver.returncode for driver in drivers] == [0, 0], outcomes

    study = optuna.load_study(study_name="team", storage=postgres.url)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert TRIALS <= len(complete) <= TRIALS + 1 and len(complete) == len(trials)
    assert len({tuple(sorted(t.params.items())) for t in complete}) == len(complete), "a candidate was scored twice"
    baselines = [t.user_attrs["baseline"] for t in complete if "baseline" in t.user_attrs]
    assert sorted(baselines) == ["c0", "c1", "c2", "uniform"]
    side = optuna.load_study(study_name="team:side-baselines", storage=postgres.url).get_trials(deepcopy=False)
    assert [(t.state, t.user_attrs["side_baseline"]) for t in side] == [(TrialState.COMPLETE, "slerp")]
    assert "scores" in study.user_attrs["baseline:slerp"]
    for machine in ("machine0", "machine1"):  # each driver scored trials of its own
        assert list((tmp_path / machine / "examples").glob("trial-*.json")), f"{machine} ran no trial"


def test_the_service_keeps_its_studies_in_postgresql_and_shows_those_run_elsewhere(tmp_path, postgres, local_ray,
                                                                                     pool_spec, capsys):
    """`recycler serve --storage URL`: a study submitted to the service keeps its trials in the
    database, and a study `recycler run` runs there from another machine is listed beside it, with
    the same front that machine's `recycler front` prints; the service does not cancel it."""
    from fastapi.testclient import TestClient

    from recycler.cli import main
    from recycler.service import ServiceConfig, create_app
    from tests.service_auth import AUTH, TOKEN

    spec = pool_spec(trials=5, workers=1)
    spec_path = tmp_path / "pool" / "elsewhere.yaml"
    spec_path.write_text(yaml.safe_dump({**spec, "name": "elsewhere"}))
    other_machine = tmp_path / "other-machine"
    assert start_run(spec_path, other_machine, "--storage", postgres.url).wait(timeout=600) == 0

    config = ServiceConfig(data=tmp_path / "data", roots=[tmp_path / "pool"], token=TOKEN, storage=postgres.url)
    app = create_app(config)
    app.state.runner.poll_seconds = 0.2
    with TestClient(app) as client:
        submitted = client.post("/api/studies", json={"spec": {**spec, "name": "here"}}, headers=AUTH)
        assert submitted.status_code == 201, submitted.text
        deadline = time.time() + 300
        while client.get(f"/api/studies/{submitted.json()['id']}", headers=AUTH).json()["state"] != "done":
            assert time.time() < deadline
            time.sleep(0.3)
        listed = {s["name"]: s for s in client.get("/api/studies", headers=AUTH).json()}
        assert (listed["here"]["state"], listed["here"]["finished"]) == ("done", 5)
        assert (listed["elsewhere"]["state"], listed["elsewhere"]["finished"]) == ("elsewhere", 5)
        assert not [name for name in listed if name.endswith(":side-baselines")]  # the queues are not studies
        assert len(optuna.load_study(study_name="here", storage=postgres.url).trials) == 5  # in the database

        elsewhere = listed["elsewhere"]["id"]
        front = client.get(f"/api/studies/{elsewhere}/front", headers=AUTH).json()
        capsys.readouterr()
        assert main(["front", str(other_machine), "--format", "json"]) == 0
        assert front == json.loads(capsys.readouterr().out)
        assert client.post(f"/api/studies/{elsewhere}/cancel", headers=AUTH).status_code == 409
        again = client.post("/api/studies", json={"spec": {**spec, "name": "here"}}, headers=AUTH)
        assert again.status_code == 409 and "a study 'here' is already in the service's database" in again.json()["detail"]
        assert client.get("/", headers=AUTH).status_code == 200


def test_a_trial_whose_driver_was_lost_before_its_first_heartbeat_is_queued_again(postgres, monkeypatch):
    """Optuna takes a RUNNING trial without heartbeats for alive; one left by a driver lost between
    asking for it and its first beat is failed and queued again after ORPHAN_GRACES grace periods
    (here 2, not 10, to keep the wait short), while a trial whose driver beats stays running."""
    from recycler import coordination
    from recycler.coordination import GRACE_BEATS, Heartbeat, ask, database_storage, fail_lost_trials

    from recycler.recipes import LinearRecipe
    from recycler.records import record_candidate

    monkeypatch.setattr(coordination, "ORPHAN_GRACES", 2)
    storage = database_storage(postgres.url, heartbeat_seconds=1)
    study = optuna.create_study(study_name="orphans", storage=storage)
    heartbeat = Heartbeat(storage, 1)
    try:
        trials = []
        for _ in range(2):
            trial = ask(study)
            weight = trial.suggest_float("a", 0.0, 1.0)
            record_candidate(trial, LinearRecipe({"a": weight, "b": 1 - weight}))
            trials.append(trial)
        orphan, alive = trials
        heartbeat.add(study, alive.number)
        fail_lost_trials(study, storage)
        assert all(t.state == TrialState.RUNNING for t in study.get_trials())  # too early to tell
        time.sleep(coordination.ORPHAN_GRACES * GRACE_BEATS * 1 + 1)
        fail_lost_trials(study, storage)
    finally:
        heartbeat.close()
    states = {t.number: t.state for t in study.get_trials()}
    assert states[orphan.number] == TrialState.FAIL and states[alive.number] == TrialState.RUNNING
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1
    retry = ask(study)  # the queued copy: the orphan's parameters, and what it repeats
    assert retry.suggest_float("a", 0.0, 1.0) == orphan.params["a"] and retry.user_attrs["retry_of"] == orphan.number
