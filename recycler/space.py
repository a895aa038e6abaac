"""Search spaces: how an Optuna trial becomes a merge recipe.

A space is a file in search_spaces/ naming a rule and its parameters. A rule is a class
registered with `@rule`; adding a rule is adding one decorated class, adding a space is adding
one file.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import optuna
import yaml
from pydantic import Field, ValidationError, model_validator

from recycler.config import Name, StrictModel, first_error
from recycler.errors import RecyclerError
from recycler.merge import MergeRecipe

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"

_RULES: dict[str, type[SearchSpace]] = {}


def rule(name: str):
    """Register a search-space rule under the name space files use."""

    def register(cls: type[SearchSpace]) -> type[SearchSpace]:
        cls.rule_name = name
        _RULES[name] = cls
        return cls

    return register


class SearchSpace(ABC):
    """Turns trials into recipes, and baseline weights back into the trial parameters that give them."""

    rule_name: ClassVar[str]
    Parameters: ClassVar[type[StrictModel]]

    def __init__(self, name: str, parameters: StrictModel, checkpoints: list[str]) -> None:
        self.name = name
        self.parameters = parameters
        self.checkpoints = checkpoints

    @abstractmethod
    def suggest(self, trial: optuna.Trial) -> MergeRecipe:
        """Sample the trial's parameters and return the merge they stand for."""

    @abstractmethod
    def params_for(self, weights: dict[str, float]) -> dict[str, float]:
        """Trial parameters that reproduce these weights (for enqueuing baselines)."""

    def baselines(self) -> dict[str, dict[str, float]]:
        """Each checkpoint alone and the uniform average, as weights by checkpoint name."""
        alone = {name: {other: float(other == name) for other in self.checkpoints} for name in self.checkpoints}
        uniform = {name: 1.0 / len(self.checkpoints) for name in self.checkpoints}
        return {**alone, "uniform": uniform}


class SimplexParameters(StrictModel):
    floor: float = Field(default=1e-6, gt=0, lt=1, description="smallest sampled coordinate; caps one weight's share")


@rule("simplex")
class SimplexSpace(SearchSpace):
    """Weights ≥ 0 summing to 1, from independent coordinates uᵢ ∈ [floor, 1]: wᵢ ∝ −log uᵢ.

    With uᵢ uniform the weights are uniform on the simplex (a flat Dirichlet), yet each
    coordinate is independent, which is what Optuna's samplers model. uᵢ = 1 gives wᵢ = 0.
    """

    Parameters = SimplexParameters

    def _key(self, name: str) -> str:
        return f"u[{name}]"

    def suggest(self, trial: optuna.Trial) -> MergeRecipe:
        floor = self.parameters.floor
        mass = {n: 0.0 - math.log(trial.suggest_float(self._key(n), floor, 1.0)) for n in self.checkpoints}
        total = math.fsum(mass.values())
        if total == 0.0:
            return MergeRecipe({n: 1.0 / len(self.checkpoints) for n in self.checkpoints})
        return MergeRecipe({n: m / total for n, m in mass.items()})

    def params_for(self, weights: dict[str, float]) -> dict[str, float]:
        top = max(weights.values())
        return {self._key(n): math.exp(-weights.get(n, 0.0) / top) for n in self.checkpoints}


class LinearParameters(StrictModel):
    low: float = -0.5
    high: float = 1.5
    relative: bool = Field(default=False, description="weights apply to task vectors θᵢ − θ_base")

    @model_validator(mode="after")
    def _ordered(self) -> LinearParameters:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


@rule("linear")
class LinearSpace(SearchSpace):
    """Box-bounded weights, not normalized; negative weights allowed within the bounds."""

    Parameters = LinearParameters

    def _key(self, name: str) -> str:
        return f"w[{name}]"

    def suggest(self, trial: optuna.Trial) -> MergeRecipe:
        p = self.parameters
        weights = {n: trial.suggest_float(self._key(n), p.low, p.high) for n in self.checkpoints}
        return MergeRecipe(weights, relative=p.relative)

    def params_for(self, weights: dict[str, float]) -> dict[str, float]:
        p = self.parameters
        return {self._key(n): min(max(weights.get(n, 0.0), p.low), p.high) for n in self.checkpoints}


class SpaceFile(StrictModel):
    """A file in search_spaces/."""

    name: Name
    rule: str
    description: str = ""
    parameters: dict[str, Any] = {}


def load_space(ref: str, checkpoints: list[str]) -> SearchSpace:
    """A space by name (search_spaces/NAME.yaml) or by path, bound to the pool's checkpoint names."""
    path = Path(ref) if ref.endswith((".yaml", ".yml")) else SPACES_DIR / f"{ref}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
        raise RecyclerError(f"search space '{ref}': no file {path} (spaces: {known})")
    try:
        space = SpaceFile.model_validate(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, ValidationError) as error:
        detail = first_error(error) if isinstance(error, ValidationError) else "not valid YAML"
        raise RecyclerError(f"{path}: {detail}") from None
    if space.rule not in _RULES:
        raise RecyclerError(f"{path}: rule: unknown rule '{space.rule}' (rules: {', '.join(sorted(_RULES))})")
    cls = _RULES[space.rule]
    try:
        parameters = cls.Parameters.model_validate(space.parameters)
    except ValidationError as error:
        raise RecyclerError(f"{path}: parameters.{first_error(error)}") from None
    return cls(space.name, parameters, checkpoints)
