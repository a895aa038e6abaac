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
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
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
                should_stop: Callable[[], bool], grace_seconds: float = 90.0) -> Outcome:
    """Run the study's search in a child process until it ends; `should_stop`, polled meanwhile,
    asks it to end after the trials in flight, and a child still running `grace_seconds` later (a
    template or a filter that never returns) is killed: its trials in flight are queued again on
    the next start."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(spec.model_dump_json(), str(folder), storage, address, stop, send),
                            name=f"recycler-study-{folder.name}")
    child.start()
    send.close()
    stopped_at: float | None = None
    try:
        while not receive.poll(_POLL_SECONDS) and child.is_alive():
            if stopped_at is None and should_stop():
                stop.set()
                stopped_at = time.monotonic()
            if stopped_at is not None and time.monotonic() - stopped_at > grace_seconds:
                break
        outcome = _received(receive)
    finally:
        _end(child)
        receive.close()
    if outcome is None:
        ended = "was killed after it was asked to stop" if stopped_at is not None else f"ended (exit code {child.exitcode})"
        return Outcome(error=f"the study's driver process {ended} without an outcome")
    return outcome


def _received(receive: Connection) -> Outcome | None:
    try:
        return receive.recv() if receive.poll() else None
    except (EOFError, OSError):  # the child died without sending
        return None


def _end(child: BaseProcess) -> None:
    """Join the child; one that does not end is terminated, then killed."""
    for end in (lambda: None, child.terminate, child.kill):
        end()
        child.join(10)
        if not child.is_alive():
            return


def _child(spec_json: str, folder: str, storage: str | None, address: str | None, stop: Event, send: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from recycler.ledger import finished_trials
    from recycler.search import run_search

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
