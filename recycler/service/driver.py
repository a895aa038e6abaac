"""A service study's search, driven in a child process of its own.

The driver builds the suite's lm-eval tasks, and a suite from a folder trusted for code imports
that code while its tasks are built; in a child process it never runs in the server, which holds
the tokens and writes the audit log. The child is started by `spawn` (no copy of the server's
memory) after the service took its token out of the environment, ignores Ctrl-C (the runner asks it
to stop after its trials in flight), and reports one outcome back through a pipe.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

from recycler.errors import RecyclerError, one_line
from recycler.spec import PoolSpec

_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the trials finished by then, or the one-line reason it failed."""

    finished: int = 0
    error: str | None = None


def drive_study(spec: PoolSpec, folder: Path, *, storage: str | None, address: str | None,
                should_stop: Callable[[], bool]) -> Outcome:
    """Run the study's search in a child process until it ends; `should_stop`, polled meanwhile,
    asks it to end after the trials in flight."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(spec.model_dump_json(), str(folder), storage, address, stop, send),
                            name=f"recycler-study-{folder.name}")
    child.start()
    send.close()
    try:
        while not receive.poll(_POLL_SECONDS):
            if not child.is_alive():
                break
            if should_stop():
                stop.set()
        outcome = receive.recv() if receive.poll() else None
    finally:
        child.join()
        receive.close()
    if outcome is None:
        return Outcome(error=f"the study's driver process ended without an outcome (exit code {child.exitcode})")
    return outcome


def _child(spec_json: str, folder: str, storage: str | None, address: str | None, stop: Event, send: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from recycler.search import finished_trials, run_search

    try:
        spec = PoolSpec.model_validate_json(spec_json)
        study = run_search(spec, Path(folder), storage=storage, address=address, progress=False, should_stop=stop.is_set)
        outcome = Outcome(finished=finished_trials(study))
    except RecyclerError as error:
        outcome = Outcome(error=str(error))
    except Exception as error:  # noqa: BLE001 - a study's failure is reported on it, in one line
        outcome = Outcome(error=f"{type(error).__name__}: {one_line(error, 400)}")
    send.send(outcome)
    send.close()
