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


@pytest.fixture
def search_spec(tmp_path):
    """Makes a tiny three-checkpoint pool with the arith suite in tmp_path (pool.yaml, ckpt*/, suite/),
    set up for a short random search, and returns the loaded spec: `search_spec(trials=6, space="linear")`."""
    import yaml

    from recycler.demo.tiny import write_pool
    from recycler.spec import load_spec
    from tests.suites import write_suite

    def make(trials: int = 8, workers: int = 2, space: str = "simplex", **search):
        spec_path = write_pool(tmp_path, 3)
        write_suite(tmp_path / "suite")
        spec = yaml.safe_load(spec_path.read_text())
        spec.update(suite="suite/suite.yaml", resources={"workers": workers},
                    search={"space": space, "trials": trials, "sampler": "RandomSampler", "seed": 1, **search})
        spec_path.write_text(yaml.safe_dump(spec))
        return load_spec(spec_path)

    return make


@pytest.fixture
def pool_spec(tmp_path):
    """Makes a tiny three-checkpoint pool with the arith suite under tmp_path / "pool", set up for a
    short random search, and returns the spec as the JSON mapping a service client submits."""
    import yaml

    from recycler.demo.tiny import write_pool
    from tests.suites import write_suite

    def make(trials: int = 6, workers: int = 2) -> dict:
        root = tmp_path / "pool"
        spec = yaml.safe_load(write_pool(root, 3).read_text())
        write_suite(root / "suite")
        spec["suite"] = "suite/suite.yaml"
        spec["search"] = {"space": "simplex", "trials": trials, "sampler": "RandomSampler", "seed": 1}
        spec["resources"] = {"workers": workers}
        return spec

    return make


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (tests/postgres.py), stopped and removed at the end."""
    from tests.postgres import PostgresServer, available

    if not available():
        pytest.skip("Debian's PostgreSQL 15 is not installed")
    server = PostgresServer.start_new()
    yield server
    server.remove()
