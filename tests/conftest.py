import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RECYCLER_CACHE", tempfile.mkdtemp(prefix="recycler-cache-"))  # not the user's cache


@pytest.fixture(scope="session")
def local_ray():
    """One real local Ray with 2 CPUs for the tests that search; shut down at the end."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
