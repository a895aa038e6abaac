"""The evaluation-engine seam: what holds the model a worker scores, and how a candidate gets into it.

A worker keeps one engine for a whole search. Per candidate it asks the engine to `load` the merge
(the engine decides how: written into a resident transformers model, or streamed tensor by tensor
into a serving engine's weights), then scores through the engine's lm-eval `lm`, so every task's
requests, filters and metrics stay lm-eval's whatever the engine.

An engine is one module of `recycler.engines` defining `ENGINE`, a subclass of `EvaluationEngine`;
`resources.engine` names the module. Adding an engine is adding a module (and its tests).
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from recycler.errors import RecyclerError

if TYPE_CHECKING:
    from recycler.pool import Pool
    from recycler.recipes import MergeRecipe
    from recycler.spec import Resources
    from recycler.suite import Suite

DEFAULT_ENGINE = "hf"


@dataclass
class ForwardCount:
    """Wall time the engine spent running the model, and the token positions it ran, so far."""

    seconds: float = 0.0
    tokens: int = 0


class EvaluationEngine(ABC):
    """One model scored through lm-eval; candidates are loaded into it in place."""

    name: ClassVar[str]

    def __init__(self, lm: Any, count: ForwardCount) -> None:
        self.lm = lm  # lm-eval's LM: the tasks' requests run through it
        self.count = count

    @abstractmethod
    def load(self, recipe: MergeRecipe) -> str | None:
        """Make the model the recipe's merge of the pool; returns the first merged tensor that holds
        NaN or inf (such a candidate must not be scored), else None."""

    @classmethod
    @abstractmethod
    def for_pool(cls, pool: Pool, suite: Suite, resources: Resources, device: torch.device) -> EvaluationEngine:
        """An engine holding the pool's reference model, ready to load merges of the pool."""

    @classmethod
    @abstractmethod
    def for_checkpoint(cls, folder: Path, suite: Suite, resources: Resources) -> EvaluationEngine:
        """An engine holding one checkpoint folder as any user would load it (`recycler verify`)."""

    @classmethod
    def check(cls, pool: Pool, resources: Resources, device: torch.device) -> None:
        """One line for a pool or resources this engine cannot run, before anything is written."""


def engine_names() -> list[str]:
    """The engines there are: the modules of `recycler.engines`."""
    import recycler.engines

    return sorted(module.name for module in pkgutil.iter_modules(recycler.engines.__path__))


def engine_class(name: str) -> type[EvaluationEngine]:
    """The engine a `resources.engine` value names."""
    if name not in engine_names():
        raise RecyclerError(f"resources.engine: '{name}' is not an engine (engines: {', '.join(engine_names())})")
    return importlib.import_module(f"recycler.engines.{name}").ENGINE
