"""The search on a real Ray cluster of two nodes on this machine (Ray's own `cluster_utils.Cluster`:
a head and a second node, each with its raylet and one CPU slot), driven by `recycler run --address`
as a user on a cluster does: workers land on both nodes, and a node lost mid-search (its raylet and
worker killed, as when its machine goes) fails only the trials in flight there, which the node that remains finishes."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml
from optuna.trial import TrialState
from ray.cluster_utils import Cluster

from recycler.errors import RecyclerError
from recycler.study import load_study
from tests.processes import kill_tree

TRIALS = 14


@pytest.fixture
def two_nodes():
    """A head node and a second node, one CPU slot each (2 in all, as this machine has), shut down after."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    second = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster, second
    cluster.shutdown()


def merge_workers_under(pid):
    return [p for p in psutil.Process(pid).children(recursive=True) if "MergeWorker" in " ".join(p.cmdline())]


def completed(folder):
    try:
        study, _ = load_study(folder)
    except RecyclerError:  # the driver has not made the study yet
        return 0
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def test_a_search_spreads_over_two_nodes_and_survives_losing_one(tmp_path, two_nodes, search_spec):
    cluster, second = two_nodes
    spec = search_spec(trials=TRIALS, workers=2)
    spec_path = tmp_path / "pool.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    folder = tmp_path / "study"
    driver = subprocess.Popen(
        [sys.executable, "-m", "recycler.cli", "run", str(spec_path), "--study", str(folder), "--quiet",
         "--address", cluster.address],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        raylet = second.all_processes["raylet"][0].process.pid
        deadline = time.time() + 300
        while completed(folder) < 4 or not merge_workers_under(raylet):
            assert driver.poll() is None and time.time() < deadline, driver.stderr.read() if driver.poll() else "slow"
            time.sleep(0.2)
        head = cluster.head_node.all_processes["raylet"][0].process.pid
        assert merge_workers_under(head), "a worker on each node: one per CPU slot"
        (worker,) = merge_workers_under(raylet)
        while worker.cpu_percent(interval=0.05) < 50:  # kill it while it scores a trial, not between two
            assert driver.poll() is None, "the search ended before the node could be lost"

        for process in [*psutil.Process(raylet).children(recursive=True), psutil.Process(raylet)]:
            os.kill(process.pid, signal.SIGKILL)  # the node is lost mid-search: its raylet and its worker
        _, stderr = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            kill_tree(driver)
    assert driver.returncode == 0, stderr

    study, _ = load_study(folder)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(complete) == TRIALS
    assert len(failed) == 1, "only the trial in flight on the lost node failed"
    assert failed[0].user_attrs["error"].startswith("worker died")
    retry = [t for t in complete if t.user_attrs.get("retry_of") == failed[0].number]
    assert len(retry) == 1 and retry[0].params == failed[0].params, "and it was scored again on the node that remains"


def test_workers_the_cluster_has_no_room_for_end_the_search_with_one_line(tmp_path, local_ray, search_spec):
    """Three workers on two CPU slots: the third is never placed, and after the placement timeout the
    search says so, with what the cluster has free, instead of waiting for ever."""
    from recycler.search import run_search

    spec = search_spec(trials=4, workers=3)
    spec = spec.model_copy(update={"resources": spec.resources.model_copy(update={"placement_timeout_seconds": 5})})
    with pytest.raises(RecyclerError) as raised:
        run_search(spec, tmp_path / "study", progress=False)
    message = str(raised.value)
    assert message.startswith("no room in the Ray cluster for a worker after 5 s (resources.placement_timeout_seconds): "
                              "3 worker(s) asked for CPU slots, the cluster has 0 CPU(s)"), message
    assert "\n" not in message
