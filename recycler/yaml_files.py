"""Reading a YAML file someone else wrote, bounded: a regular file (a FIFO or device would block the
reader forever), of a bounded size, of a bounded number of nodes with aliases expanded (a few
hundred bytes of nested aliases expand to billions of them for whatever walks the result).

The document is parsed and composed by libyaml where PyYAML has it (a 256 KiB file in tens of
milliseconds, where PyYAML's pure-Python parser takes seconds), and its node graph is measured
before any value is constructed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from recycler.errors import RecyclerError, one_line
from recycler.files import open_regular

MAX_YAML_BYTES = 256 << 10
MAX_EXPANDED_NODES = 20_000

_SafeLoader = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader


class BoundedSafeLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """YAML's safe loader, refusing a document of more than MAX_EXPANDED_NODES nodes counting each
    alias as the nodes it stands for; constructors added to a subclass run only on a document that
    passed."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._text = stream

    def get_single_data(self) -> Any:
        _check_event_count(self._text)
        node = self.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node)
        return self.construct_document(node)


def _check_event_count(text: Any) -> None:
    """Parse events counted by a parser of their own, stopped past the bound: a document of more
    nodes than the bound (each node is one or two events) is refused before it is composed, which
    costs a second per hundred thousand nodes even in libyaml."""
    counter = _SafeLoader(text)
    try:
        for _ in range(2 * MAX_EXPANDED_NODES + 4):  # stream and document start and end
            if not counter.check_event():
                return
            event = counter.get_event()
        raise yaml.YAMLError(f"more than {MAX_EXPANDED_NODES} nodes (line {event.start_mark.line + 1})")
    finally:
        counter.dispose()


def _check_expanded_size(root: yaml.Node) -> None:
    """Each node's size with aliases expanded, computed once per node (so the walk costs what the
    file holds, not what it expands to), refused past the bound."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # whose children are being measured: an alias to one is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = ([child for pair in node.value for child in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        if not children_done:
            if id(node) in open_nodes:
                raise yaml.YAMLError(f"an alias inside its own anchor's node (line {node.start_mark.line + 1})")
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        open_nodes.discard(id(node))
        size = 1 + sum(sizes.get(id(child), 1) for child in children)
        if size > MAX_EXPANDED_NODES:
            raise yaml.YAMLError(f"more than {MAX_EXPANDED_NODES} nodes, aliases expanded (line {node.start_mark.line + 1})")
        sizes[id(node)] = size


def read_text_file(path: Path, where: str, limit: int = MAX_YAML_BYTES, inside: Callable[[Path], bool] | None = None) -> str:
    """A regular file's text, at most `limit` bytes (checked on the descriptor that reads it, never
    blocking on a FIFO; with `inside`, as recycler.files.open_regular checks it)."""
    with os.fdopen(open_regular(path, where, inside), "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > limit:
            raise RecyclerError(f"{where}: {size} bytes, more than the {limit} allowed")
        data = file.read(limit + 1)
    if len(data) > limit:  # it grew after the size was read
        raise RecyclerError(f"{where}: more than the {limit} bytes allowed")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise RecyclerError(f"{where}: not UTF-8 text") from None


def load_yaml_file(path: Path, where: str, loader: type[BoundedSafeLoader] = BoundedSafeLoader) -> Any:
    """A YAML file read by `loader` within the bounds above; one line naming the file otherwise."""
    text = read_text_file(path, where)
    try:
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise RecyclerError(f"{where}: not valid YAML{at} ({one_line(error, 200)})") from None
