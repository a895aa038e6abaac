"""The bearer token the service tests start their servers with, the header that carries it, and
waiting for a study to finish."""

import time

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def finished(client, study_id, timeout=300):
    """The study's summary once it has stopped running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/api/studies/{study_id}", headers=AUTH)
        assert response.status_code == 200, response.text
        if response.json()["state"] not in ("queued", "running"):
            return response.json()
        time.sleep(0.3)
    raise AssertionError(f"study {study_id} still running: {response.text}")
