"""The package's layering (scripts/check_layers.py): no upward import, no import circle."""

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_layers.py"


def _checker():
    spec = importlib.util.spec_from_file_location("check_layers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_has_no_upward_import_and_no_circle():
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("no upward import, no import circle")


def test_a_circle_and_an_upward_import_are_found(tmp_path, monkeypatch):
    checker = _checker()
    assert checker.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    package = tmp_path / "recycler"
    package.mkdir()
    (package / "errors.py").write_text("from recycler.search import run_search\n")  # foundations importing the search
    (package / "search.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from recycler.cli import x\n"
                                       "def f():\n    from recycler.errors import RecyclerError\n")
    (package / "cli.py").write_text("")
    monkeypatch.setattr(checker, "PACKAGE", package)
    assert checker.problems() == [
        "recycler.errors (foundations) imports recycler.search (search), a higher layer",
        "import circle: recycler.errors -> recycler.search",  # the import inside a function counts; TYPE_CHECKING's does not
    ]
