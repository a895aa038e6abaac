"""The bearer token the service tests start their servers with, and the header that carries it."""

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
