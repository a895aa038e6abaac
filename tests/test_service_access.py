"""Who may do what through the service: named tokens with scopes (`recycler serve token`), kept as
hashes, and the audit log of what each did, which outlives the server."""

import json
import stat

from fastapi.testclient import TestClient

from recycler.cli import main
from recycler.service import ServiceConfig, create_app
from tests.service_auth import AUTH, TOKEN, finished


def service(tmp_path, runner):
    config = ServiceConfig(data=tmp_path / "data", roots=[tmp_path / "pool", tmp_path / "exports"], token=TOKEN, runner=runner)
    app = create_app(config)
    app.state.runner.poll_seconds = 0.2
    return TestClient(app)


def token_command(capsys, *words):
    capsys.readouterr()
    assert main(["serve", "token", *words]) == 0
    return capsys.readouterr().out


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_tokens_are_listed_without_secrets_and_kept_as_hashes(tmp_path, capsys):
    data = str(tmp_path / "data")
    secret = token_command(capsys, "add", "ci", "--scope", "submit", "--data", data).strip()
    listed = token_command(capsys, "list", "--data", data)
    assert "ci" in listed and "submit" in listed and "default" in listed and secret not in listed
    stored = (tmp_path / "data" / "tokens.json").read_text()
    assert secret not in stored and json.loads(stored)["tokens"][0]["name"] == "ci"
    assert stat.S_IMODE((tmp_path / "data" / "tokens.json").stat().st_mode) == 0o600
    assert main(["serve", "token", "add", "ci", "--scope", "read", "--data", data]) == 2
    assert main(["serve", "token", "add", "default", "--scope", "read", "--data", data]) == 2
    assert main(["serve", "token", "add", "x", "--scope", "admin", "--data", data]) == 2
    assert "--scope admin: one of read, submit, export" in capsys.readouterr().err
    assert main(["serve", "token", "revoke", "nobody", "--data", data]) == 2


def test_scopes_and_the_audit_log(tmp_path, capsys, local_ray, pool_spec):
    spec = pool_spec(trials=4)
    data = str(tmp_path / "data")
    reader, submitter, exporter = (bearer(token_command(capsys, "add", name, "--scope", name, "--data", data).strip())
                                   for name in ("read", "submit", "export"))
    with service(tmp_path, runner=True) as client:
        body = {"spec": spec, "root": str(tmp_path / "pool")}
        refused = client.post("/api/studies", json=body, headers=reader)
        assert refused.status_code == 403 and refused.json()["detail"] == "token 'read' has scope 'read'; this needs 'submit'"
        study = client.post("/api/studies", json=body, headers=submitter).json()
        assert client.get("/api/studies", headers=reader).json()[0]["id"] == study["id"]
        assert client.post(f"/api/studies/{study['id']}/cancel", headers=reader).status_code == 403
        assert finished(client, study["id"])["state"] == "done"
        export = {"trial": 0, "out": str(tmp_path / "exports" / "e")}
        for scope in (reader, submitter):
            assert client.post(f"/api/studies/{study['id']}/exports", json=export, headers=scope).status_code == 403
            assert client.get("/api/audit", headers=scope).status_code == 403
        assert client.post(f"/api/studies/{study['id']}/exports", json=export, headers=exporter).status_code == 202
        assert client.post(f"/api/studies/{study['id']}/cancel", headers=submitter).status_code == 200
        token_command(capsys, "revoke", "read", "--data", data)
        assert client.get("/api/studies", headers=reader).status_code == 401
    expected = [("submit", "submit", f"study {study['id']} (tiny)"), ("export", "export", f"study {study['id']} trial 0 to "),
                ("submit", "cancel", f"study {study['id']}")]
    with service(tmp_path, runner=False) as client:  # a restarted server keeps the log
        for headers in (exporter, AUTH):
            entries = client.get("/api/audit", headers=headers).json()
            assert [(e["token"], e["action"]) for e in entries] == [(name, action) for name, action, _ in expected]
            assert all(e["target"].startswith(target) and e["address"] == "testclient" for e, (*_, target) in zip(entries, expected))
    lines = (tmp_path / "data" / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["time"] <= json.loads(lines[2])["time"]
