"""Shared pieces of the typed configs: strict models, names, path resolution, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, ValidationError, ValidationInfo

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


_BY_REFERENCE, _INLINE = "(reference)", "(inline)"  # union tags, left out of an error's field path


def reference_or_inline(model: type[BaseModel]) -> Any:
    """The type of a field that is a name or path (a string), or the model given inline (a mapping):
    validated as the branch the value's shape picks, so an inline mapping's errors are its own,
    never "should be a valid string"."""
    return Annotated[
        Annotated[str, BeforeValidator(_text), Tag(_BY_REFERENCE)] | Annotated[model, Tag(_INLINE)],
        Discriminator(lambda value: _INLINE if isinstance(value, (dict, BaseModel)) else _BY_REFERENCE),
    ]


def _text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"a name or a path (text), or a mapping given inline; got {type(value).__name__}")
    return value


def first_error(error: ValidationError) -> str:
    """The first validation error as 'field.path: message'."""
    detail = error.errors()[0]
    where = ".".join(str(part) for part in detail["loc"] if part not in (_BY_REFERENCE, _INLINE))
    message = detail["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
