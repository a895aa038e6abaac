"""Shared pieces of the typed configs: strict models, names, path resolution, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=100)]


class StrictModel(BaseModel):
    """Frozen, and unknown keys are errors: a typo in a config must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Absolute paths stay; relative ones resolve against the validation context's `root`."""
    root = (info.context or {}).get("root")
    path = Path(value).expanduser()
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    return path.resolve() if path.is_absolute() else path


def registrar(table: dict[str, type], attribute: str):
    """A decorator factory: `@register("name")` files a class in `table` under that name and sets
    the class attribute `attribute` to it, so configs can name classes."""

    def by_name(name: str):
        def register(cls: type) -> type:
            setattr(cls, attribute, name)
            table[name] = cls
            return cls

        return register

    return by_name


def first_error(error: ValidationError) -> str:
    """The first validation error as 'field.path: message'."""
    detail = error.errors()[0]
    where = ".".join(str(part) for part in detail["loc"])
    message = detail["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
