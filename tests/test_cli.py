"""The `recycler` command as a user runs it: a real process, one-line errors, nothing written. The
bad inputs run the command's own entry point (`main`) in this process: the same parsing, checks
and one line on stderr, without a new interpreter's start-up for each."""

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recycler.cli import main
from recycler.demo.tiny import write_pool
from recycler.errors import format_bytes
from recycler.merge import MemoryNeeds
from recycler.pool import load_pool
from recycler.spec import load_spec
from tests.pools import BAD_POOLS


def recycler(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "recycler.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def recycler_here(*args: str, cwd: Path, capfd, monkeypatch) -> tuple[int, str]:
    """`recycler ARGS` through its entry point in this process: the exit status and what reached the
    stderr descriptor (libraries' native output included), with warnings shown as the command shows them."""
    monkeypatch.chdir(cwd)
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # Python's own filters for a program: these four stay quiet
        for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", quiet)
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: print(
            warnings.formatwarning(message, category, filename, lineno, line), file=sys.stderr, end="")
        status = main(list(args))
    return status, capfd.readouterr().err


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_validate_and_merge(tmp_path):
    spec = write_pool(tmp_path, 3)
    result = recycler("validate", str(spec), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "3 checkpoints" in result.stdout and "fingerprint:" in result.stdout
    pool = load_pool(load_spec(spec))
    needs = MemoryNeeds.of(pool, torch.device("cpu"))
    assert f"a cpu worker needs {format_bytes(needs.streamed)} with the pool streamed" in result.stdout
    assert needs.resident == needs.streamed + 3 * pool.model_bytes

    result = recycler("merge", str(spec), "--weight", "c0=0.5", "--weight", "c2=0.5", "--out", "merged", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert set(load_file(tmp_path / "merged" / "model.safetensors")) == set(load_file(tmp_path / "ckpt0" / "model.safetensors"))


# Ten of the bad pools run through the real command; the rest are covered in test_pool.
CLI_CASES = ["mismatched shapes", "missing tensor", "truncated safetensors", "missing config.json", "different vocabularies",
             "one checkpoint", "duplicate names", "path does not exist", "mixed dtypes", "different architecture"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_pools_exit_with_one_line_and_write_nothing(tmp_path, case, capfd, monkeypatch):
    spec = write_pool(tmp_path, 3)
    corrupt, expected = BAD_POOLS[case]
    corrupt(tmp_path)
    before = snapshot(tmp_path)
    if case == CLI_CASES[0]:  # one case through a real process, as a user runs it
        result = recycler("merge", str(spec), "--weight", "c0=1", "--out", "merged", cwd=tmp_path)
        status, stderr = result.returncode, result.stderr
    else:
        status, stderr = recycler_here("merge", str(spec), "--weight", "c0=1", "--out", "merged", cwd=tmp_path,
                                       capfd=capfd, monkeypatch=monkeypatch)
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recycler: error: "), stderr
    assert re.search(expected, lines[0]), lines[0]
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "args, expected",
    [
        (["merge", "pool.yaml", "--weight", "c0", "--out", "m"], "--weight 'c0': expected NAME=NUMBER"),
        (["merge", "pool.yaml", "--weight", "nobody=1", "--out", "m"], "'nobody', which is not a checkpoint"),
        (["merge", "pool.yaml", "--weight", "c0=1", "--out", "pool.yaml"], "export target exists and is not a folder"),
        (["validate", "missing.yaml"], "missing.yaml: pool spec not found"),
    ],
)
def test_bad_arguments(tmp_path, args, expected, capfd, monkeypatch):
    write_pool(tmp_path, 2)
    before = snapshot(tmp_path)
    status, stderr = recycler_here(*args, cwd=tmp_path, capfd=capfd, monkeypatch=monkeypatch)
    assert status == 2 and expected in stderr and len(stderr.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before
