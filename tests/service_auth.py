"""The bearer token the service tests start their servers with, the header that carries it, and
waiting for a study to finish."""

import time

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def finished(client, study_id, timeout=300):
    """The study's summary once it has stopped running. A summary asked for while the study's
    storage is being created can answer 422 (the study folder exists, its journal not yet): asked again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/api/studies/{study_id}", headers=AUTH)
        if response.status_code == 200 and response.json()["state"] not in ("queued", "running"):
            return response.json()
        time.sleep(0.3)
    raise AssertionError(f"study {study_id} still running: {response.text}")
