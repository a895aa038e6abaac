"""Whether a suite or search-space reference is a shipped name or a file of the user's own.

One rule for the spec (which resolves files against its folder), the loaders (which read them)
and the service (which checks them against its allowed roots), so all three agree on what is read.
"""

from __future__ import annotations

from pathlib import Path


def is_file_reference(ref: str) -> bool:
    """A YAML file (`x.yml`) or a path (`a/b`) rather than a shipped name such as `simplex`."""
    return ref.endswith((".yaml", ".yml")) or "/" in ref


def reference_file(ref: str, shipped: Path) -> Path:
    """The file a reference reads: the path as given, or NAME.yaml in the shipped folder."""
    return Path(ref) if is_file_reference(ref) else shipped / f"{ref}.yaml"
