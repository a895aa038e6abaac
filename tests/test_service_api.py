"""The service's API on a real local Ray: queued studies run in turn, fronts match `recycler front`,
exports give their manifest, cancel stops a study, and the queue survives a restart."""

import json
import time

from fastapi.testclient import TestClient

from recycler.cli import main
from recycler.service import ServiceConfig, create_app
from recycler.service.store import Store
from tests.service_auth import AUTH, TOKEN


def service(tmp_path, **overrides):
    config = ServiceConfig(data=tmp_path / "data", roots=[tmp_path / "pool", tmp_path / "exports"], token=TOKEN, **overrides)
    app = create_app(config)
    app.state.runner.poll_seconds = 0.2
    return TestClient(app)


def submit(client, tmp_path, spec):
    response = client.post("/api/studies", json={"spec": spec, "root": str(tmp_path / "pool")}, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()


def wait_for(client, study_id, test, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary = client.get(f"/api/studies/{study_id}", headers=AUTH).json()
        if test(summary):
            return summary
        time.sleep(0.3)
    raise AssertionError(f"study {study_id} stuck: {summary}")


def test_studies_queue_run_and_give_fronts_and_exports(tmp_path, local_ray, capsys, pool_spec):
    spec = pool_spec(trials=6)
    with service(tmp_path) as client:
        first = submit(client, tmp_path, spec)
        second = submit(client, tmp_path, {**spec, "search": {**spec["search"], "trials": 5, "seed": 2}})
        assert first["state"] in ("queued", "running") and second["state"] == "queued" and second["budget"] == 5
        done = wait_for(client, second["id"], lambda s: s["state"] == "done")
        assert done["finished"] == 5
        listed = client.get("/api/studies", headers=AUTH).json()
        assert [(s["id"], s["state"], s["finished"]) for s in listed] == [(first["id"], "done", 6), (second["id"], "done", 5)]

        front = client.get(f"/api/studies/{first['id']}/front", headers=AUTH).json()
        folder = str(tmp_path / "data" / "studies" / first["id"])
        capsys.readouterr()
        assert main(["front", folder, "--format", "json"]) == 0
        assert front == json.loads(capsys.readouterr().out)
        trials = client.get(f"/api/studies/{first['id']}/trials", headers=AUTH).json()
        assert len([t for t in trials["trials"] if t["trial"] is not None]) == 6 and front["trials"] == [t for t in trials["trials"] if t["on_front"] or t["baseline"]]
        narrowed = client.get(f"/api/studies/{first['id']}/front", params={"rank": "balanced", "limit": 1}, headers=AUTH).json()
        assert main(["front", folder, "--format", "json", "--rank", "balanced", "--limit", "1"]) == 0
        assert narrowed == json.loads(capsys.readouterr().out) and sum(t["on_front"] for t in narrowed["trials"]) == 1
        bad = client.get(f"/api/studies/{first['id']}/front", params={"where": "poetry>=1"}, headers=AUTH)
        assert bad.status_code == 422 and "unknown task 'poetry'" in bad.json()["detail"]
        with_examples = client.get(f"/api/studies/{first['id']}/front", params={"examples": 2}, headers=AUTH).json()
        assert main(["front", folder, "--format", "json", "--examples", "2"]) == 0
        assert with_examples == json.loads(capsys.readouterr().out)
        merges = [t["examples"] for t in with_examples["trials"] if not t["baseline"]]
        assert len({m["beside"] for m in merges}) == 1 and all(m["kept"] and m["tasks"] == {} for m in merges)  # no generation task
        shown = client.get(f"/api/studies/{first['id']}/examples", params={"baseline": "slerp"}, headers=AUTH)
        assert shown.status_code == 200 and shown.json()["kept"] and shown.json()["tasks"] == {}
        assert client.get(f"/api/studies/{first['id']}/examples", headers=AUTH).status_code == 422  # which candidate?
        history = client.get(f"/api/studies/{first['id']}/hypervolume", headers=AUTH).json()
        assert [h["trial"] for h in history] == list(range(6))

        member = next(t for t in front["trials"] if t["on_front"])
        out = tmp_path / "exports" / "best"
        job = client.post(f"/api/studies/{first['id']}/exports", json={"trial": member["trial"], "out": str(out)}, headers=AUTH)
        assert job.status_code == 202, job.text
        deadline = time.monotonic() + 60
        while (status := client.get(f"/api/studies/{first['id']}/exports/{job.json()['id']}", headers=AUTH).json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert status["state"] == "done", status
        assert status["manifest"] == json.loads((out / "manifest.json").read_text()) and "model.safetensors" in status["manifest"]["sha256"]
        again = client.post(f"/api/studies/{first['id']}/exports", json={"trial": 0, "out": str(out)}, headers=AUTH)
        assert again.status_code == 422 and "not empty" in again.json()["detail"]
        missing = client.post(f"/api/studies/{first['id']}/exports", json={"trial": 99, "out": str(tmp_path / "exports" / "x")}, headers=AUTH)
        bad = client.get(f"/api/studies/{first['id']}/exports/{missing.json()['id']}", headers=AUTH).json()
        while bad["state"] in ("queued", "running"):
            time.sleep(0.2)
            bad = client.get(f"/api/studies/{first['id']}/exports/{missing.json()['id']}", headers=AUTH).json()
        assert bad["state"] == "failed" and "trial 99 is not in the study" in bad["error"]


def test_run_search_stops_when_asked(tmp_path, local_ray, pool_spec):
    from recycler.ledger import finished_trials
    from recycler.search import run_search
    from recycler.spec import parse_spec

    spec = parse_spec(pool_spec(trials=20), tmp_path / "pool", "spec")
    asked = []
    study = run_search(spec, tmp_path / "study", progress=False, should_stop=lambda: len(asked) > 3 or asked.append(1))
    assert finished_trials(study) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)


def test_cancel_a_running_and_a_queued_study(tmp_path, local_ray, pool_spec):
    spec = pool_spec(trials=60)
    with service(tmp_path) as client:
        running = submit(client, tmp_path, spec)
        queued = submit(client, tmp_path, spec)
        assert client.post(f"/api/studies/{queued['id']}/cancel", headers=AUTH).json()["state"] == "cancelled"
        wait_for(client, running["id"], lambda s: s["finished"] >= 1)
        client.post(f"/api/studies/{running['id']}/cancel", headers=AUTH)
        cancelled = wait_for(client, running["id"], lambda s: s["state"] == "cancelled")
        assert 1 <= cancelled["finished"] < 60
        assert client.get(f"/api/studies/{queued['id']}/front", headers=AUTH).status_code == 409
        assert client.get("/api/studies/nosuch", headers=AUTH).status_code == 404


def test_queue_and_studies_survive_a_restart(tmp_path, local_ray, pool_spec):
    spec = pool_spec(trials=30)  # long enough that stopping the server finds it mid-study
    with service(tmp_path, runner=False) as client:
        first = submit(client, tmp_path, spec)
        second = submit(client, tmp_path, {**spec, "search": {**spec["search"], "trials": 4}})
    with service(tmp_path) as client:  # a new server on the same data runs the queue it finds
        assert [s["id"] for s in client.get("/api/studies", headers=AUTH).json()] == [first["id"], second["id"]]
        wait_for(client, first["id"], lambda s: s["finished"] >= 2)
    # Stopped mid-study, the study goes back to the queue; a crash leaves it running, recovered as queued.
    store = Store(tmp_path / "data")
    assert store.study(first["id"]).state == "queued"
    store.finish_study(first["id"], "running")
    with service(tmp_path) as client:
        done = wait_for(client, first["id"], lambda s: s["state"] == "done")
        assert done["finished"] == 30
        assert wait_for(client, second["id"], lambda s: s["state"] == "done")["finished"] == 4
        trials = client.get(f"/api/studies/{first['id']}/trials", headers=AUTH).json()["trials"]
        assert sum(t["baseline"] and t["trial"] is not None for t in trials) == 4  # baselines scored once, not again after the restart
        assert [t["baseline_name"] for t in trials if t["trial"] is None] == ["slerp"]
