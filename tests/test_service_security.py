"""The service's guards: bearer token, allowed roots (nothing read or written outside), body size."""

import os
import stat

import pytest
from fastapi.testclient import TestClient

from recycler.cli import build_parser
from recycler.service import ServiceConfig, create_app
from recycler.service.security import AllowedRoots, PathNotAllowed, load_token
from recycler.service.specs import check_checkpoint_files
from tests.service_auth import AUTH, TOKEN


@pytest.fixture
def client(tmp_path, monkeypatch, pool_spec):
    """The API alone (no runner), with the pool's folder the only allowed root; reading a pool or
    a suite fails the test, so a refused request is shown to have read nothing."""
    spec = pool_spec(trials=4)
    (tmp_path / "outside").mkdir()

    def no_reading(*_args, **_kwargs):
        raise AssertionError("a file was read")

    monkeypatch.setattr("recycler.pool.load_pool", no_reading)
    monkeypatch.setattr("recycler.suite.load_suite", no_reading)
    app = create_app(ServiceConfig(data=tmp_path / "data", roots=[tmp_path / "pool"], token=TOKEN, runner=False))
    with TestClient(app) as client:
        client.spec = spec
        client.tmp = tmp_path
        yield client


def test_every_api_call_needs_the_token(client):
    calls = [("get", "/api/studies"), ("post", "/api/studies"), ("get", "/api/studies/x"), ("get", "/api/studies/x/front"),
             ("get", "/api/studies/x/trials"), ("post", "/api/studies/x/cancel"), ("post", "/api/studies/x/exports"),
             ("get", "/api/studies/x/exports/y"), ("get", "/api/studies/x/plots"), ("get", "/api/studies/x/hypervolume"), ("get", "/api/audit")]
    for method, path in calls:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/studies", headers=AUTH).json() == []
    assert client.get("/openapi.json").status_code == 200


def test_paths_outside_the_roots_are_refused_before_reading(client, tmp_path):
    outside = tmp_path / "outside"
    (tmp_path / "pool" / "escape").symlink_to(outside)
    cases = {
        "absolute": {"checkpoints": [{"name": "x", "path": str(outside)}]},
        "dotdot inside the root": {"checkpoints": [{"name": "x", "path": "ckpt0/../ckpt1"}]},
        "dotdot out": {"checkpoints": [{"name": "x", "path": "../outside"}]},
        "symlink": {"checkpoints": [{"name": "x", "path": "escape"}]},
        "base": {"base": {"name": "b", "path": str(outside)}},
        "suite file": {"suite": str(outside / "suite.yaml")},
        "space file": {"search": {**client.spec["search"], "space": str(outside / "space.yaml")}},
    }
    for label, change in cases.items():
        spec = {**client.spec, **change}
        if "checkpoints" in change:
            spec["checkpoints"] = client.spec["checkpoints"][:1] + change["checkpoints"]
        response = client.post("/api/studies", json={"spec": spec, "root": str(tmp_path / "pool")}, headers=AUTH)
        assert response.status_code == 403, (label, response.text)
        assert "outside the allowed roots" in response.json()["detail"] or "'..'" in response.json()["detail"]
    response = client.post("/api/studies", json={"spec": client.spec, "root": str(outside)}, headers=AUTH)
    assert response.status_code == 403 and response.json()["detail"].startswith("root:")
    assert client.get("/api/studies", headers=AUTH).json() == []
    assert os.listdir(outside) == []


def test_export_outside_the_roots_writes_nothing(client, tmp_path):
    outside = tmp_path / "outside"
    for out in (str(outside / "export"), str(tmp_path / "pool" / ".." / "outside" / "export"), str(tmp_path / "pool" / "escape2" / "e")):
        (tmp_path / "pool" / "escape2").unlink(missing_ok=True)
        (tmp_path / "pool" / "escape2").symlink_to(outside)
        response = client.post("/api/studies/nosuch/exports", json={"trial": 0, "out": out}, headers=AUTH)
        assert response.status_code == 403, response.text
    assert os.listdir(outside) == []


def test_bad_bodies_get_one_line_errors(client):
    big = {"spec": {"name": "x" * (2 << 20)}}
    assert client.post("/api/studies", json=big, headers=AUTH).status_code == 413
    chunks = (b"{" + b" " * 65536 for _ in range(20))
    assert client.post("/api/studies", content=chunks, headers=AUTH).status_code == 413
    response = client.post("/api/studies", json={"spec": {**client.spec, "checkpoints": []}}, headers=AUTH)
    assert response.status_code == 422
    assert response.json() == {"detail": "spec: checkpoints: List should have at least 2 items after validation, not 0"}
    response = client.post("/api/studies", json={"spek": {}}, headers=AUTH)
    assert response.status_code == 422 and response.json()["detail"].startswith("body.spec: ")
    # a schedule of 99,999 stages fits the body limit; each stage would be stored with its examples
    stages = {**client.spec["search"], "fidelity": {"screen_fraction": [k / 100_000 for k in range(1, 100_000)]}}
    response = client.post("/api/studies", json={"spec": {**client.spec, "search": stages}}, headers=AUTH)
    assert response.status_code == 422
    assert response.json() == {"detail": "spec: search.fidelity.screen_fraction: at most 8 stages, got 99999"}
    assert client.get("/api/studies", headers=AUTH).json() == []


def test_token_is_generated_once_with_0600(tmp_path, monkeypatch):
    monkeypatch.delenv("RECYCLER_TOKEN", raising=False)
    path = tmp_path / "data" / "token"
    token, created = load_token(path)
    assert created and len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_token(path) == (token, False)
    monkeypatch.setenv("RECYCLER_TOKEN", "from-env")
    assert load_token(path) == ("from-env", False)


def test_roots_and_bind_defaults(tmp_path):
    roots = AllowedRoots([tmp_path])
    assert roots.check("a/b", "x") == tmp_path.resolve() / "a" / "b"
    with pytest.raises(PathNotAllowed):
        roots.check("/etc/passwd", "x")
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.max_body_bytes == 1 << 20


def test_checkpoint_files_that_lead_outside_the_roots_are_refused(client, tmp_path):
    """A checkpoint folder inside the roots whose files point elsewhere: a `config.json` linked to an
    outside file, an index naming an absolute shard, a FIFO. Refused at submit, nothing outside read
    or shown back, and the service answers at once."""
    import json
    import time

    outside = tmp_path / "outside" / "secret.json"
    outside.write_text('{"model_type": "SECRET-VALUE"}')
    ckpt = tmp_path / "pool" / "ckpt1"

    def linked_config():
        (ckpt / "config.json").rename(ckpt / "config.json.real")
        (ckpt / "config.json").symlink_to(outside)

    def absolute_shard():
        index = {"metadata": {}, "weight_map": {"transformer.wte.weight": str(outside)}}
        (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))

    cases = {
        "config.json linked outside": (linked_config, 403, "checkpoints.1.path: config.json: "),
        "an index naming an absolute shard": (absolute_shard, 403, "names shard /"),
        "a FIFO": (lambda: os.mkfifo(ckpt / "tokenizer.json.fifo"), 422, "tokenizer.json.fifo is not a regular file"),
    }
    for label, (make, status, message) in cases.items():
        make()
        started = time.monotonic()
        response = client.post("/api/studies", json={"spec": client.spec, "root": str(tmp_path / "pool")}, headers=AUTH)
        assert time.monotonic() - started < 1.0, label
        assert response.status_code == status and message in response.json()["detail"], (label, response.text)
        assert "SECRET-VALUE" not in response.text
        for undo in ("config.json", "model.safetensors.index.json", "tokenizer.json.fifo"):
            if (ckpt / undo).is_symlink() or (ckpt / undo).exists():
                (ckpt / undo).unlink()
        if (ckpt / "config.json.real").exists():
            (ckpt / "config.json.real").rename(ckpt / "config.json")
    assert client.get("/api/studies", headers=AUTH).json() == []
    check_checkpoint_files(ckpt, AllowedRoots([tmp_path / "pool"]), "checkpoints.1.path")  # restored, it passes


def test_the_service_data_folder_is_private_even_inside_a_root(tmp_path, pool_spec):
    """`recycler serve`'s defaults put DATA inside the allowed root: a suite naming the token file
    as its data, or an export into DATA, is refused, and the token is never shown back."""
    spec = pool_spec(trials=4)
    data = tmp_path / "pool" / "service-data"
    app = create_app(ServiceConfig(data=data, roots=[tmp_path / "pool"], token=TOKEN, runner=False))
    (data / "token").write_text("SERVICE-SECRET\n")
    tasks = tmp_path / "pool" / "suite" / "tasks"
    (tasks / "sums.yaml").write_text((tasks / "sums.yaml").read_text()
                                     + f"dataset_kwargs:\n  data_files:\n    test: {data / 'token'}\n")
    with TestClient(app) as client:
        response = client.post("/api/studies", json={"spec": spec, "root": str(tmp_path / "pool")}, headers=AUTH)
        assert response.status_code == 403 and "outside the allowed roots" in response.json()["detail"]
        assert "SERVICE-SECRET" not in response.text
        response = client.post("/api/studies/x/exports", json={"trial": 0, "out": str(data / "export")}, headers=AUTH)
        assert response.status_code == 403 and response.json()["detail"].startswith("out: ")
    assert not (data / "export").exists() and not list((data / "suites").glob("*"))


def test_an_export_manifest_swapped_for_a_link_or_a_fifo_is_one_line(client, tmp_path):
    """The export folder lies in a root others may write: its manifest is read checked and bounded."""
    import time

    store = client.app.state.service.store
    study = store.add_study("s", "{}", 1)
    out = tmp_path / "pool" / "export"
    out.mkdir()
    (tmp_path / "outside" / "other.json").write_text('{"secret": "OUTSIDE-JSON"}')
    cases = {"a link outside": lambda: (out / "manifest.json").symlink_to(tmp_path / "outside" / "other.json"),
             "a FIFO": lambda: os.mkfifo(out / "manifest.json")}
    for label, make in cases.items():
        (out / "manifest.json").unlink(missing_ok=True)
        make()
        export = store.add_export(study.id, 0, str(out))
        store.finish_export(export.id, "done")
        started = time.monotonic()
        response = client.get(f"/api/studies/{study.id}/exports/{export.id}", headers=AUTH)
        assert time.monotonic() - started < 1.0, label
        assert response.status_code == 422 and "OUTSIDE-JSON" not in response.text, (label, response.text)
        assert "manifest.json" in response.json()["detail"] and "\n" not in response.json()["detail"]
