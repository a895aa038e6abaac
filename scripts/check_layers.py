"""Check the package's layering: no module imports one of a higher layer, and no import circle.

Every `recycler` import that runs counts, at module level or inside a function (imports under
`if TYPE_CHECKING:` are for type checkers only and do not). Each module belongs to the first layer
whose prefixes match it; a module may import its own layer or a lower one, and the imports within
a layer must not go round in a circle. Prints the layers and each problem; exits 1 on a problem.

Usage: python scripts/check_layers.py
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "recycler"

# Bottom first; the first layer naming a module holds it. `name` is that module (a package: its
# __init__), `name.*` every module under the package. `engines` (the engine plugins' folder, which
# engine.py lists) is an input; the plugins themselves score.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("errors", "config", "references", "files", "yaml_files", "library_seams", "held_folder",
                     "native_sum", "residency", "pareto", "results", "score_estimates", "search_spaces", "eval_suites", "demo.skills", "demo.tokenizer")),
    ("inputs", ("checkpoint_scan", "task_yaml", "suite", "engine", "engines", "spec", "pool", "recipes", "baselines", "space")),
    ("scoring", ("merge", "engines.*", "evaluate", "workers", "examples", "screening")),
    ("studies", ("records", "coordination", "study", "ledger", "front", "selection", "compare", "report", "export", "verify")),
    ("search", ("worker_pools", "cluster", "preparation", "progress", "search")),
    ("entry points", ("cli", "service", "service.*", "demo", "demo.*")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The index of the module's layer in LAYERS."""
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or (p.endswith(".*") and module.startswith(p[:-1])) for p in prefixes):
            return index
    raise SystemExit(f"scripts/check_layers.py: module recycler.{module} is in no layer; add it to LAYERS")


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The recycler modules a file imports when it runs (`from recycler.x import y` names module x.y
    when that is a module)."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}".removeprefix("recycler.") in modules
                     else node.module for alias in node.names]
        found |= {name.removeprefix("recycler.") for name in names if name == "recycler" or name.startswith("recycler.")}
    return found & modules


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def problems() -> list[str]:
    files = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    modules = set(files)
    graph = {module: imports(path, modules) - {module} for module, path in files.items()}
    found = [f"recycler.{m} ({LAYERS[layer_of(m)][0]}) imports recycler.{o} ({LAYERS[layer_of(o)][0]}), a higher layer"
             for m in sorted(graph) for o in sorted(graph[m]) if layer_of(o) > layer_of(m)]
    found += [f"import circle: {' -> '.join('recycler.' + m for m in circle)}" for circle in circles(graph)]
    return found


def main() -> None:
    for name, prefixes in LAYERS:
        print(f"{name}: {', '.join(prefixes)}")
    found = problems()
    for problem in found:
        print(problem)
    print("no upward import, no import circle" if not found else f"{len(found)} problem(s)")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
