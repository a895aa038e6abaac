"""Reading a YAML file someone else wrote, bounded: a regular file (a FIFO or device would block the
reader forever), of a bounded size, of a bounded number of nodes with aliases expanded (a few
hundred bytes of nested aliases expand to billions of them for whatever walks the result, and
PyYAML's pure-Python parser takes seconds per 10^5 nodes, so the bound is checked as each node is
made, not once the document is whole)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from recycler.errors import RecyclerError, one_line
from recycler.files import open_regular

MAX_YAML_BYTES = 256 << 10
MAX_EXPANDED_NODES = 20_000


class BoundedSafeLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a document of more than MAX_EXPANDED_NODES nodes counting each
    alias as the nodes it stands for (each node's expanded size is computed once, as it is made)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}
        self._total = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        node = super().compose_node(parent, index)
        if id(node) in self._sizes:  # an alias: the nodes it stands for, again
            self._total += self._sizes[id(node)]
        else:
            children = ([child for pair in node.value for child in pair] if isinstance(node, yaml.MappingNode)
                        else node.value if isinstance(node, yaml.SequenceNode) else [])
            self._sizes[id(node)] = 1 + sum(self._sizes.get(id(child), 1) for child in children)
            self._total += 1
        if self._total > MAX_EXPANDED_NODES:
            raise yaml.YAMLError(f"more than {MAX_EXPANDED_NODES} nodes, aliases expanded (line {node.start_mark.line + 1})")
        return node


def read_text_file(path: Path, where: str, limit: int = MAX_YAML_BYTES) -> str:
    """A regular file's text (checked on the descriptor that reads it, never blocking on a FIFO)."""
    with os.fdopen(open_regular(path, where), "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > limit:
            raise RecyclerError(f"{where}: {size} bytes, more than the {limit} a YAML file may have")
        data = file.read(limit + 1)
    if len(data) > limit:  # it grew after the size was read
        raise RecyclerError(f"{where}: more than the {limit} bytes a YAML file may have")
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
