"""Exports for the service (with `inside`) neither copy a file from outside the allowed roots nor
write outside them through a link swapped in after the request's checks; the CLI's links are followed."""

import json
import os
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest

from recycler.demo.tiny import write_pool
from recycler.errors import RecyclerError
from recycler.export import check_export_target, export_merge
from recycler.merge import Merger
from recycler.pool import load_pool
from recycler.recipes import LinearRecipe
from recycler.service.security import AllowedRoots
from recycler.spec import load_spec

SECRET = b"not-for-export-7f3a9c"
RECIPE = LinearRecipe({"c0": 0.5, "c1": 0.5})


@pytest.fixture
def setup(tmp_path):
    """An allowed root holding a two-checkpoint pool, and a folder outside it holding a secret."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    pool = load_pool(load_spec(write_pool(root / "pool", 2)))
    return root, outside, Merger(pool), AllowedRoots([root])


@contextmanager
def no_hang(seconds: int = 30):
    """A blocked open (a FIFO) fails the test instead of hanging it."""
    def fail(*_):
        raise TimeoutError("the export blocked")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def relink(file: Path, target: Path) -> None:
    file.unlink()
    file.symlink_to(target)


def all_bytes(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


@pytest.mark.parametrize("target", ["outside", "dangling", "fifo"])
def test_a_linked_checkpoint_file_to_outside_or_no_file_fails_the_export(setup, target):
    root, outside, merger, roots = setup
    reference = merger.pool.reference.path
    if target == "outside":
        relink(reference / "tokenizer.json", outside / "secret.txt")
    elif target == "dangling":
        relink(reference / "tokenizer.json", root / "missing.json")
    else:
        os.mkfifo(root / "pipe")
        relink(reference / "tokenizer.json", root / "pipe")
    exports = root / "exports"
    exports.mkdir()
    with no_hang(), pytest.raises(RecyclerError) as error:
        export_merge(merger, RECIPE, exports / "model", inside=roots.contains)
    assert "tokenizer.json" in str(error.value) and "\n" not in str(error.value)
    assert list(exports.iterdir()) == []
    assert all(SECRET not in content for content in all_bytes(root))


def test_config_json_is_checked_as_the_other_files(setup):
    root, outside, merger, roots = setup
    relink(merger.pool.reference.path / "config.json", outside / "secret.txt")
    with pytest.raises(RecyclerError, match="config.json.*outside the allowed roots"):
        export_merge(merger, RECIPE, root / "exports" / "model", inside=roots.contains)
    assert list((root / "exports").iterdir()) == []


def test_a_link_inside_the_roots_is_copied_and_listed_in_the_manifest(setup):
    root, _, merger, roots = setup
    reference = merger.pool.reference.path
    shared = root / "shared" / "tokenizer.json"
    shared.parent.mkdir()
    shutil.copy(reference / "tokenizer.json", shared)
    relink(reference / "tokenizer.json", shared)
    os.mkfifo(reference / "pipe")  # not a regular file, not a link: skipped, never opened
    with no_hang():
        out = export_merge(merger, RECIPE, root / "exports" / "model", inside=roots.contains)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["linked"] == {"tokenizer.json": str(shared)}
    assert not (out / "tokenizer.json").is_symlink()
    assert (out / "tokenizer.json").read_bytes() == shared.read_bytes()
    assert "tokenizer.json" in manifest["sha256"] and not (out / "pipe").exists()


def test_the_cli_follows_the_users_links(setup):
    root, outside, merger, _ = setup
    relink(merger.pool.reference.path / "tokenizer.json", outside / "secret.txt")
    out = export_merge(merger, RECIPE, root / "exports" / "model")
    assert (out / "tokenizer.json").read_bytes() == SECRET
    assert json.loads((out / "manifest.json").read_text())["linked"] == {}


@pytest.mark.parametrize("swapped", ["parent", "grandparent"])
def test_a_folder_swapped_for_a_link_after_the_check_fails_the_export(setup, swapped):
    root, outside, merger, roots = setup
    out = root / "exports" / "team" / "model"
    out.parent.mkdir(parents=True)
    checked = roots.check(out, "out")
    check_export_target(checked, overwrite=False)
    folder = out.parent if swapped == "parent" else out.parent.parent
    landing = outside / "landing"
    landing.mkdir()
    if swapped == "grandparent":
        (landing / "team").mkdir()
    folder.rename(root / "moved")
    folder.symlink_to(landing)
    with pytest.raises(RecyclerError, match="is a symbolic link; the export folder must not go through links") as error:
        export_merge(merger, RECIPE, checked, inside=roots.contains)
    assert str(folder) in str(error.value) and "\n" not in str(error.value)
    assert [p.relative_to(landing) for p in landing.rglob("*")] == ([] if swapped == "parent" else [Path("team")])


def test_a_link_as_the_target_itself_is_refused(setup):
    root, outside, merger, roots = setup
    (root / "exports").mkdir()
    (root / "exports" / "model").symlink_to(outside)
    with pytest.raises(RecyclerError, match="export target is a symbolic link"):
        export_merge(merger, RECIPE, root / "exports" / "model", inside=roots.contains)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_a_missing_parent_chain_is_created_and_the_export_lands(setup):
    root, _, merger, roots = setup
    out = root / "new" / "deeper" / "model"
    assert export_merge(merger, RECIPE, out, inside=roots.contains) == out
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert json.loads((out / "manifest.json").read_text())["linked"] == {}
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]
