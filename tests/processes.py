"""Driving `recycler run` as a user does, in its own process, and killing it as a crash would."""

import os
import signal
import subprocess
import sys

import psutil


def start_run(spec_path, folder, *extra, stderr=subprocess.DEVNULL):
    """`recycler run SPEC --study FOLDER --quiet [EXTRA...]` in a new session, with its own local Ray."""
    env = {**os.environ, "RAY_ADDRESS": "local"}
    return subprocess.Popen(
        [sys.executable, "-m", "recycler.cli", "run", str(spec_path), "--study", str(folder), "--quiet", *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True, text=True,
    )


def kill_tree(process):
    """SIGKILL the driver and everything it started (its local Ray included)."""
    try:
        family = [process.pid] + [c.pid for c in psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = [process.pid]
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
