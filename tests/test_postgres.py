"""`--storage postgresql://...` against a real PostgreSQL server: a search killed with SIGKILL
resumes, and a database restart mid-search loses nothing finished (the driver goes on, or stops
with one line and the same command finishes the study)."""

import subprocess
import time

import optuna
import yaml
from optuna.trial import TrialState

from recycler.demo.tiny import write_pool
from tests.processes import kill_tree, start_run
from tests.suites import write_suite

TRIALS = 16


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
    spec.update(name="pg", suite="suite/suite.yaml", resources={"workers": 2},
                search={"space": "simplex", "trials": TRIALS, "sampler": "RandomSampler", "seed": 5})
    spec_path.write_text(yaml.safe_dump(spec))
    folder, url = tmp_path / "study", postgres.url

    first = start_run(spec_path, folder, "--storage", url)
    wait_for(url, "pg", 4)
    kill_tree(first)  # the driver and its local Ray, mid-search
    before_restart = completed(url, "pg")

    second = start_run(spec_path, folder, "--storage", url, stderr=subprocess.PIPE)
    wait_for(url, "pg", len(before_restart) + 2)
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
