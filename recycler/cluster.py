"""The search's workers on Ray: start them, hand each a candidate, collect results, replace the dead.

Each worker is an actor that holds the pool and a resident model for the whole search, placed by
Ray on whichever node of the cluster has its resources (CPU slots, or GPUs). A worker that dies
(killed, out of memory, an exception while scoring, its node lost) has its job reported failed, so
the search decides what to retry, and a replacement is asked for; the search goes on with the
workers it has while the replacement waits for room, which a lost node may never give back.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Generic

from recycler.errors import RecyclerError, format_bytes, one_line
from recycler.merge import MemoryNeeds
from recycler.pool import load_pool
from recycler.recipes import MergeRecipe
from recycler.results import CandidateResult
from recycler.spec import PoolSpec
from recycler.worker_pools import Finished, JobT, raised_error
from recycler.workers import MergeWorker, worker_device

def connect_ray(address: str | None) -> None:
    """Join the Ray cluster at `address` (a local one when None) unless this process already has;
    without the dashboard, which costs about 1 GB, and with Ray's logs kept off the user's terminal."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)


class RayWorkers(Generic[JobT]):
    """`resources.workers` worker actors; at most one job each in flight (a WorkerPool)."""

    def __init__(self, spec: PoolSpec, address: str | None, *, progress: bool = False) -> None:
        connect_ray(address)
        self.spec = spec
        self.progress = progress
        self.workers: list[Any] = []
        self.idle: list[Any] = []
        self._in_flight: dict[Any, tuple[Any, JobT]] = {}
        self._replacing: dict[Any, Any] = {}  # a starting replacement's ready() reference -> the worker
        self._short_since: float | None = None  # since when no worker has been alive, replacements pending
        self._start(spec.resources.workers)

    def submit(self, recipe: MergeRecipe, job: JobT, examples: dict[str, list[int]] | None = None) -> None:
        """Score the recipe (on those examples only, when given) on an idle worker; `job` comes back
        with its result."""
        worker = self.idle.pop()
        self._in_flight[worker.evaluate.remote(recipe.to_json(), examples)] = (worker, job)

    def jobs(self) -> list[JobT]:
        return [job for _, job in self._in_flight.values()]

    def next_finished(self, timeout: float) -> Finished[JobT] | None:
        """Wait up to `timeout` seconds for the first job in flight to finish; None if none did, or
        if a replacement worker joined instead. A worker lost on the way is replaced."""
        import ray

        self._check_placement()
        waiting = [*self._in_flight, *self._replacing]
        if not waiting:
            time.sleep(timeout)
            return None
        ready, _ = ray.wait(waiting, num_returns=1, timeout=timeout)
        if not ready:
            return None
        if ready[0] in self._replacing:
            self._joined(ready[0])
            return None
        worker, job = self._in_flight.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except ray.exceptions.RayTaskError as error:  # scoring raised: the worker lives on
            if isinstance(error.cause, ray.exceptions.RayError):
                return self._lost(worker, job, error)
            self.idle.append(worker)
            return Finished(job, CandidateResult.failed(_describe(error)), died=False, raised=True)
        except ray.exceptions.RayError as error:  # the actor died, its node or its result was lost
            return self._lost(worker, job, error)
        self.idle.append(worker)
        return Finished(job, result, died=False)

    def _lost(self, worker: Any, job: JobT, error: Exception) -> Finished[JobT]:
        import ray

        self.workers.remove(worker)
        ray.kill(worker)
        self._replace()
        return Finished(job, CandidateResult.failed(_describe(error)), died=True)

    def _replace(self) -> None:
        """Ask for a new worker without waiting for it: Ray starts it where there is room."""
        handle = self._new_worker(self._cpus())
        self._replacing[handle.ready.remote()] = handle
        if not self.workers and self._short_since is None:
            self._short_since = time.monotonic()

    def _joined(self, ready: Any) -> None:
        import ray

        handle = self._replacing.pop(ready)
        try:
            ray.get(ready)
        except ray.exceptions.RayError as error:
            ray.kill(handle)
            init_failed = isinstance(error, ray.exceptions.RayActorError) and error.actor_init_failed
            if self.workers and not init_failed:  # lost on the way (its node too), not unable to start
                self._replace()
                return
            raise RecyclerError(_startup_failure(error, self.spec, 1)) from None
        self.workers.append(handle)
        self.idle.append(handle)
        self._short_since = None

    def _check_placement(self) -> None:
        """With every worker lost and none of their replacements placed for the placement timeout,
        end the search with one line: the cluster no longer has room for a worker."""
        import ray

        limit = self.spec.resources.placement_timeout_seconds
        if self.workers or self._short_since is None or time.monotonic() - self._short_since < limit:
            return
        for handle in self._replacing.values():
            ray.kill(handle)
        self._replacing.clear()
        raise RecyclerError(_no_room(self.spec, limit))

    def close(self) -> None:
        """Kill every worker, which ends the jobs in flight on them (Ray cannot force-cancel an
        actor's task, and a search ending on an error must not raise another one here)."""
        import ray

        self._in_flight.clear()
        for worker in [*self.workers, *self._replacing.values()]:
            ray.kill(worker)
        self.workers.clear()
        self._replacing.clear()
        self.idle.clear()

    def _start(self, count: int) -> None:
        """Start workers and wait until each holds its pool and model; a worker that dies while
        starting ends the search with one line saying why and what it needed."""
        import ray
        from tqdm import tqdm

        cpus = self._cpus()
        started = [self._new_worker(cpus) for _ in range(count)]
        waiting = [handle.ready.remote() for handle in started]
        limit = self.spec.resources.placement_timeout_seconds
        deadline = time.monotonic() + limit
        with tqdm(total=count, desc="starting workers", unit="worker", delay=2.0, disable=not self.progress,
                  dynamic_ncols=True) as bar:
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
                if not ready:  # not placed in time: the cluster has no room for them
                    for handle in started:
                        ray.kill(handle)
                    raise RecyclerError(_no_room(self.spec, limit))
                try:
                    ray.get(ready[0])
                except ray.exceptions.RayError as error:
                    for handle in started:
                        ray.kill(handle)
                    raise RecyclerError(_startup_failure(error, self.spec, count)) from None
                bar.update(1)
        self.workers += started
        self.idle += started

    def _cpus(self) -> int:
        """CPU slots per worker: the cluster's CPUs shared among the workers asked for."""
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1)) // self.spec.resources.workers)

    def _new_worker(self, cpus: int) -> Any:
        """A worker actor holding `cpus` CPU slots (and its GPUs), told how many threads it has."""
        import ray

        resources = self.spec.resources
        actor = ray.remote(MergeWorker).options(num_cpus=cpus, num_gpus=resources.gpus_per_worker, max_concurrency=1)
        return actor.remote(self.spec, worker_device(self.spec).type, cpus)


def _describe(error: Exception) -> str:
    import ray

    if isinstance(error, ray.exceptions.RayTaskError):
        return raised_error(error.cause)
    return f"worker died: {_death(one_line(error))}"


def _death(text: str) -> str:
    """Ray's account of a dead actor, shortened to its first sentence and the exit detail (the rest
    is ids, addresses and advice)."""
    first = text.split(". ")[0].removesuffix(".")
    detail = re.search(r"Worker exit detail: (.+?)(?:\. |\.?$)", text)
    return (f"{first} ({detail.group(1)})" if detail else first)[:400]


def _no_room(spec: PoolSpec, seconds: int) -> str:
    """One line for workers the cluster could not place: what a worker asks for, what the cluster has."""
    import ray

    have = ray.available_resources()
    resources = spec.resources
    asks = f"{resources.gpus_per_worker:g} GPU(s) each" if resources.gpus_per_worker else "CPU slots"
    return (f"no room in the Ray cluster for a worker after {seconds} s (resources.placement_timeout_seconds): "
            f"{resources.workers} worker(s) asked for {asks}, the cluster has {have.get('CPU', 0):g} CPU(s) and "
            f"{have.get('GPU', 0):g} GPU(s) free on {len([n for n in ray.nodes() if n['Alive']])} live node(s); "
            "lower resources.workers or add nodes")


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
