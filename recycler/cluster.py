"""The search's workers on Ray: start them, hand each a candidate, collect results, replace the dead.

Each worker is an actor that holds the pool and a resident model for the whole search; a worker that
dies (killed, out of memory, an exception while scoring) is replaced and its job reported failed, so
the search decides what to retry.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch

from recycler.errors import RecyclerError, format_bytes, one_line
from recycler.merge import MemoryNeeds
from recycler.pool import load_pool
from recycler.recipes import MergeRecipe
from recycler.spec import PoolSpec

Job = TypeVar("Job")


def connect_ray(address: str | None) -> None:
    """Join the Ray cluster at `address` (a local one when None) unless this process already has;
    without the dashboard, which costs about 1 GB, and with Ray's logs kept off the user's terminal."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)


def worker_device(spec: PoolSpec) -> torch.device:
    return torch.device("cuda" if spec.resources.gpus_per_worker > 0 else "cpu")


@dataclass(frozen=True)
class Finished(Generic[Job]):
    """A job's outcome: the worker's result (scores and timings, or an error it reported), or
    `died` with why, when the worker was lost and replaced."""

    job: Job
    result: dict[str, Any]
    died: bool


class WorkerPool(Generic[Job]):
    """`resources.workers` worker actors; at most one job each in flight."""

    def __init__(self, spec: PoolSpec, address: str | None, *, progress: bool = False) -> None:
        connect_ray(address)
        self.spec = spec
        self.progress = progress
        self.workers: list[Any] = []
        self.idle: list[Any] = []
        self._in_flight: dict[Any, tuple[Any, Job]] = {}
        self._start(spec.resources.workers)

    def submit(self, recipe: MergeRecipe, job: Job, examples: dict[str, list[int]] | None = None) -> None:
        """Score the recipe (on those examples only, when given) on an idle worker; `job` comes back
        with its result."""
        worker = self.idle.pop()
        self._in_flight[worker.evaluate.remote(recipe.to_json(), examples)] = (worker, job)

    def jobs(self) -> list[Job]:
        return [job for _, job in self._in_flight.values()]

    def next_finished(self) -> Finished[Job]:
        """Wait for the first job in flight to finish; a worker lost on the way is replaced."""
        import ray

        (ref,), _ = ray.wait(list(self._in_flight), num_returns=1)
        worker, job = self._in_flight.pop(ref)
        try:
            result = ray.get(ref)
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as error:
            self.workers.remove(worker)
            ray.kill(worker)
            self._start(1)
            return Finished(job, {"error": _describe(error)}, died=True)
        self.idle.append(worker)
        return Finished(job, result, died=False)

    def close(self) -> None:
        """Kill every worker, which ends the jobs in flight on them (Ray cannot force-cancel an
        actor's task, and a search ending on an error must not raise another one here)."""
        import ray

        self._in_flight.clear()
        for worker in self.workers:
            ray.kill(worker)
        self.workers.clear()
        self.idle.clear()

    def _start(self, count: int) -> None:
        """Start workers and wait until each holds its pool and model; a worker that dies while
        starting ends the search with one line saying why and what it needed."""
        import ray
        from tqdm import tqdm

        from recycler.workers import MergeWorker

        resources = self.spec.resources
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // resources.workers)
        actor = ray.remote(MergeWorker).options(num_cpus=cpus, num_gpus=resources.gpus_per_worker, max_concurrency=1)
        started = [actor.remote(self.spec, worker_device(self.spec).type, cpus) for _ in range(count)]
        waiting = [handle.ready.remote() for handle in started]
        with tqdm(total=count, desc="starting workers", unit="worker", delay=2.0, disable=not self.progress,
                  dynamic_ncols=True) as bar:
            while waiting:
                (ready,), waiting = ray.wait(waiting, num_returns=1)
                try:
                    ray.get(ready)
                except ray.exceptions.RayError as error:
                    for handle in started:
                        ray.kill(handle)
                    raise RecyclerError(_startup_failure(error, self.spec, count)) from None
                bar.update(1)
        self.workers += started
        self.idle += started


def _describe(error: Exception) -> str:
    import ray

    if isinstance(error, ray.exceptions.RayTaskError):
        cause = error.cause
        return f"{type(cause).__name__}: {one_line(cause, 400)}"
    return f"worker died: {one_line(error, 400)}"


def _startup_failure(error: Exception, spec: PoolSpec, count: int) -> str:
    """One line for a worker that died while starting: what ran out, what a worker needs, what to change."""
    import ray

    if isinstance(error, ray.exceptions.RayActorError) and error.actor_init_failed:
        raised = str(error).strip().splitlines()[-1]  # the exception the worker's constructor raised
        return "a worker failed while starting: " + re.sub(r"^([\w.]*\.)?RecyclerError: ", "", raised)
    needs = MemoryNeeds.of(load_pool(spec), worker_device(spec))
    holds = (
        f"a worker needs {format_bytes(needs.streamed)} with the pool streamed from the page cache (one model and "
        f"scratch), {format_bytes(needs.resident)} with it stacked, and {count} worker(s) started"
    )
    advice = "lower resources.workers or resources.memory_per_worker, or use a machine with more memory"
    if isinstance(error, ray.exceptions.OutOfMemoryError):
        node = re.search(r"was ([\d.]+\s*GB) used / ([\d.]+\s*GB) limit", str(error))
        seen = f" (the node had {node[1]} of {node[2]} in use)" if node else ""
        return f"a worker ran out of memory while starting and Ray killed it{seen}: {holds}; {advice}"
    return f"a worker died while starting ({_describe(error)[:200]}): {holds}; if memory ran out, {advice}"
