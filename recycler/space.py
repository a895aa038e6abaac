"""Search spaces: how an Optuna trial becomes a merge recipe.

A space is a file in search_spaces/ naming a rule and its parameters. A rule is a class
registered with `@rule`; adding a rule is adding one decorated class, adding a space is adding
one file. A space also says which baselines it can express as trial parameters: those are
enqueued as trials so the sampler learns from them; the others are scored beside the search.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import optuna
from pydantic import Field, ValidationError, model_validator

import recycler.search_spaces
from recycler.config import Name, StrictModel, first_error, registrar
from recycler.errors import RecyclerError
from recycler.recipes import (
    LayerwiseRecipe,
    LinearRecipe,
    MergeRecipe,
    SlerpRecipe,
    TaskVectorRecipe,
)
from recycler.references import reference_file
from recycler.yaml_files import load_yaml_file

SPACES_DIR = Path(recycler.search_spaces.__file__).parent

_RULES: dict[str, type[SearchSpace]] = {}


rule = registrar(_RULES, "rule_name")  # @rule("name"): the name space files use


class SearchSpace(ABC):
    """Turns trials into recipes, and recipes it can express back into trial parameters."""

    rule_name: ClassVar[str]
    Parameters: ClassVar[type[StrictModel]]

    def __init__(self, name: str, parameters: StrictModel, checkpoints: list[str], layers: int = 0) -> None:
        self.name = name
        self.parameters = parameters
        self.checkpoints = checkpoints
        self.layers = layers

    @abstractmethod
    def suggest(self, trial: optuna.Trial) -> MergeRecipe:
        """Sample the trial's parameters and return the merge they stand for."""

    @abstractmethod
    def params_for(self, recipe: MergeRecipe) -> dict[str, Any] | None:
        """Trial parameters that reproduce this recipe, or None when the space cannot express it."""


class Range(StrictModel):
    """A closed interval a trial parameter is drawn from."""

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high


def _simplex_point(trial: optuna.Trial, keys: dict[str, str], floor: float) -> dict[str, float]:
    """Weights ≥ 0 summing to 1 from independent coordinates uᵢ ∈ [floor, 1]: wᵢ ∝ −log uᵢ."""
    mass = {n: 0.0 - math.log(trial.suggest_float(key, floor, 1.0)) for n, key in keys.items()}
    total = math.fsum(mass.values())
    if total == 0.0:
        return {n: 1.0 / len(keys) for n in keys}
    return {n: m / total for n, m in mass.items()}


def _simplex_params(weights: Mapping[str, float], keys: dict[str, str]) -> dict[str, float] | None:
    """The coordinates that give these weights, if they are a point of the simplex."""
    values = [weights.get(n, 0.0) for n in keys]
    if min(values) < 0 or abs(math.fsum(values) - 1.0) > 1e-9:
        return None
    top = max(values)
    return {key: math.exp(-weights.get(n, 0.0) / top) for n, key in keys.items()}


class SimplexParameters(StrictModel):
    floor: float = Field(default=1e-6, gt=0, lt=1, description="smallest sampled coordinate; caps one weight's share")


@rule("simplex")
class SimplexSpace(SearchSpace):
    """Weights ≥ 0 summing to 1, from independent coordinates uᵢ ∈ [floor, 1]: wᵢ ∝ −log uᵢ.

    With uᵢ uniform the weights are uniform on the simplex (a flat Dirichlet), yet each
    coordinate is independent, which is what Optuna's samplers model. uᵢ = 1 gives wᵢ = 0.
    """

    Parameters = SimplexParameters

    def _keys(self) -> dict[str, str]:
        return {n: f"u[{n}]" for n in self.checkpoints}

    def suggest(self, trial: optuna.Trial) -> MergeRecipe:
        return LinearRecipe(_simplex_point(trial, self._keys(), self.parameters.floor))

    def params_for(self, recipe: MergeRecipe) -> dict[str, Any] | None:
        if not isinstance(recipe, LinearRecipe) or recipe.relative:
            return None
        return _simplex_params(recipe.weights, self._keys())


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
        return LinearRecipe(weights, relative=p.relative)

    def params_for(self, recipe: MergeRecipe) -> dict[str, Any] | None:
        p = self.parameters
        if not isinstance(recipe, LinearRecipe) or recipe.relative != p.relative:
            return None
        weights = {self._key(n): recipe.weights.get(n, 0.0) for n in self.checkpoints}
        return weights if all(p.low <= w <= p.high for w in weights.values()) else None


class TaskVectorParameters(StrictModel):
    sparsify: Literal["magnitude", "random"]
    consensus: bool
    weight: Range = Range(low=0.0, high=1.0)
    density: Range
    scale: Range = Field(default=Range(low=0.5, high=1.5), description="λ, mergekit's lambda")
    seed: int = Field(default=0, description="seed of DARE's drop masks, the same for every trial")

    @model_validator(mode="after")
    def _density_fraction(self) -> TaskVectorParameters:
        if not 0.0 < self.density.low <= self.density.high <= 1.0:
            raise ValueError("density must lie in (0, 1]")
        return self


@rule("task_vectors")
class TaskVectorSpace(SearchSpace):
    """TIES (sparsify: magnitude, consensus: true) and DARE (sparsify: random, with or without
    consensus): a weight per checkpoint, one density and one λ per trial."""

    Parameters = TaskVectorParameters

    def _key(self, name: str) -> str:
        return f"w[{name}]"

    def suggest(self, trial: optuna.Trial) -> MergeRecipe:
        p = self.parameters
        weights = {n: trial.suggest_float(self._key(n), p.weight.low, p.weight.high) for n in self.checkpoints}
        return TaskVectorRecipe(
            weights, p.sparsify, p.consensus, density=trial.suggest_float("density", p.density.low, p.density.high),
            scale=trial.suggest_float("lambda", p.scale.low, p.scale.high), seed=p.seed,
        )

    def params_for(self, recipe: MergeRecipe) -> dict[str, Any] | None:
        p = self.parameters
        if not isinstance(recipe, TaskVectorRecipe) or (recipe.sparsify, recipe.consensus, recipe.seed) != (p.sparsify, p.consensus, p.seed):
            return None
        params = {self._key(n): recipe.weights.get(n, 0.0) for n in self.checkpoints}
        if not all(p.weight.holds(w) for w in params.values()) or not p.density.holds(recipe.density) or not p.scale.holds(recipe.scale):
            return None
        return {**params, "density": recipe.density, "lambda": recipe.scale}


class SlerpParameters(StrictModel):
    pair: tuple[Name, Name] | None = Field(default=None, description="the two checkpoints; unset: each trial picks a pair")
    t: Range = Range(low=0.0, high=1.0)


@rule("slerp")
class SlerpSpace(SearchSpace):
    """SLERP between two checkpoints, t searched. With more than two checkpoints and no `pair`,
    the pair is a categorical trial parameter too ('first,second', first before second in pool order)."""

    Parameters = SlerpParameters

    def _pairs(self) -> list[str]:
        if self.parameters.pair is not None:
            return [",".join(self.parameters.pair)]
        return [f"{a},{b}" for i, a in enumerate(self.checkpoints) for b in self.checkpoints[i + 1:]]

    def suggest(self, trial: optuna.Trial) -> MergeRecipe:
        pairs = self._pairs()
        first, second = (trial.suggest_categorical("pair", pairs) if len(pairs) > 1 else pairs[0]).split(",")
        return SlerpRecipe(first, second, trial.suggest_float("t", self.parameters.t.low, self.parameters.t.high))

    def params_for(self, recipe: MergeRecipe) -> dict[str, Any] | None:
        pairs = self._pairs()
        if not isinstance(recipe, SlerpRecipe) or f"{recipe.first},{recipe.second}" not in pairs or not self.parameters.t.holds(recipe.t):
            return None
        return {"t": recipe.t, **({"pair": f"{recipe.first},{recipe.second}"} if len(pairs) > 1 else {})}


class LayerwiseParameters(StrictModel):
    block_size: int = Field(default=1, ge=1, description="consecutive layers that share one set of weights")
    floor: float = Field(default=1e-6, gt=0, lt=1)


@rule("layerwise")
class LayerwiseSpace(SearchSpace):
    """A point of the simplex per block of layers, and one for the tensors outside the layers
    (embeddings, final norm, head), as in evolutionary model merging's layer-wise weights."""

    Parameters = LayerwiseParameters

    def _groups(self) -> list[dict[str, str]]:
        blocks = -(-self.layers // self.parameters.block_size)
        return [{n: f"u[{group}][{n}]" for n in self.checkpoints} for group in [*map(str, range(blocks)), "other"]]

    def suggest(self, trial: optuna.Trial) -> MergeRecipe:
        if self.layers < 1:
            raise RecyclerError(f"search space '{self.name}': the model has no numbered layers to weigh block by block")
        points = [_simplex_point(trial, keys, self.parameters.floor) for keys in self._groups()]
        return LayerwiseRecipe(tuple(points[:-1]), points[-1], self.parameters.block_size)

    def params_for(self, recipe: MergeRecipe) -> dict[str, Any] | None:
        if not isinstance(recipe, LinearRecipe) or recipe.relative or self.layers < 1:
            return None
        params: dict[str, Any] = {}
        for keys in self._groups():
            coordinates = _simplex_params(recipe.weights, keys)
            if coordinates is None:
                return None
            params.update(coordinates)
        return params


class SpaceFile(StrictModel):
    """A file in search_spaces/."""

    name: Name
    rule: str
    description: str = ""
    parameters: dict[str, Any] = {}


def load_space(ref: str, checkpoints: list[str], layers: int = 0) -> SearchSpace:
    """A space by name (search_spaces/NAME.yaml) or by path, bound to the pool's checkpoint names
    and its number of layers."""
    path = reference_file(ref, SPACES_DIR)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
        raise RecyclerError(f"search space '{ref}': no file {path} (spaces: {known})")
    try:
        space = SpaceFile.model_validate(load_yaml_file(path, str(path)))
    except ValidationError as error:
        raise RecyclerError(f"{path}: {first_error(error)}") from None
    if space.rule not in _RULES:
        raise RecyclerError(f"{path}: rule: unknown rule '{space.rule}' (rules: {', '.join(sorted(_RULES))})")
    cls = _RULES[space.rule]
    try:
        parameters = cls.Parameters.model_validate(space.parameters)
    except ValidationError as error:
        raise RecyclerError(f"{path}: parameters.{first_error(error)}") from None
    return cls(space.name, parameters, checkpoints, layers)
