"""Merge recipes: what one candidate merge is, tensor by tensor, and the mergekit configuration
that reproduces it.

A recipe is math per tensor over its rows (the checkpoints in pool order, then the base) and knows
nothing of where the rows live; the engine (`recycler.merge`) does. Linear, task arithmetic,
layer-wise and SLERP merges are `WeightedRecipe`s: one coefficient per row and tensor, so the
engine computes one fused weighted sum. TIES and DARE are `RowsRecipe`s: they form the task
vectors τᵢ = θᵢ − θ_base from the rows in float32 (as mergekit does with `dtype: float32`).
"""

from __future__ import annotations

import hashlib
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, ClassVar, Literal

import torch

from recycler.config import registrar
from recycler.errors import RecyclerError
from recycler.pool import Pool

# The cosine between rows i and j of the tensor being merged, norms below eps counting as 1.
Cosine = Callable[[int, int, float], float]

_KINDS: dict[str, type[MergeRecipe]] = {}
_LAYER = re.compile(r"\.(\d+)\.")


_kind = registrar(_KINDS, "kind")


def recipe_from_json(data: Mapping[str, Any]) -> MergeRecipe:
    """The recipe a trial recorded (`MergeRecipe.to_json`)."""
    fields = dict(data)
    cls = _KINDS.get(fields.pop("kind", None))
    if cls is None:
        raise RecyclerError(f"merge recipe: unknown kind '{data.get('kind')}' (kinds: {', '.join(sorted(_KINDS))})")
    return cls.from_fields(fields)


def _check_weights(pool: Pool, weights: Mapping[str, float]) -> list[float]:
    """The weights in pool order (0 for a checkpoint not named), refusing unknown names and non-finite values."""
    unknown = sorted(set(weights) - set(pool.names))
    if unknown:
        raise RecyclerError(f"merge weights name '{unknown[0]}', which is not a checkpoint of the pool ({', '.join(pool.names)})")
    values = [float(weights.get(name, 0.0)) for name in pool.names]
    bad = [name for name, w in zip(pool.names, values) if not math.isfinite(w)]
    if bad:
        raise RecyclerError(f"merge weight of '{bad[0]}' is not a finite number")
    return values


def _needs_base(pool: Pool, method: str) -> None:
    if pool.base is None:
        raise RecyclerError(f"a {method} merge works on task vectors and needs a pool with a base checkpoint")


def _models(pool: Pool, parameters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"model": str(c.path), "parameters": p} for c, p in zip(pool.checkpoints, parameters)]


def _config(pool: Pool, method: str, models: list[dict[str, Any]], parameters: dict[str, Any], base: str | None) -> dict[str, Any]:
    """A mergekit configuration; float32 accumulation, written in the pool's dtype."""
    config: dict[str, Any] = {"merge_method": method}
    if base is not None:
        config["base_model"] = base
    config["models"] = models
    config["parameters"] = parameters
    config["dtype"] = "float32"
    config["out_dtype"] = str(pool.dtype).removeprefix("torch.")
    return config


class MergeRecipe(ABC):
    """One candidate merge. Recipes are frozen dataclasses; `to_json` is what a trial records."""

    kind: ClassVar[str]

    @property
    @abstractmethod
    def method(self) -> str:
        """The mergekit merge_method that computes the same merge."""

    @abstractmethod
    def check(self, pool: Pool) -> None:
        """Refuse a recipe this pool cannot make, with one line naming the problem."""

    @abstractmethod
    def mergekit_config(self, pool: Pool) -> dict[str, Any]:
        """The mergekit YAML (as a mapping) that reproduces this merge from the pool's folders."""

    @abstractmethod
    def checkpoint_weights(self) -> dict[str, float]:
        """One number per checkpoint for tables and plots: its weight (mean over blocks, if layer-wise)."""

    def describe(self) -> dict[str, Any]:
        """The method's own settings beyond the checkpoint weights, for tables and model cards."""
        return {}

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> MergeRecipe:
        return cls(**fields)


class WeightedRecipe(MergeRecipe):
    """A merge that is, tensor by tensor, a weighted sum of the rows."""

    @abstractmethod
    def tensor_coefficients(self, pool: Pool, tensor_name: str, cosine: Cosine) -> list[float]:
        """One coefficient per row of the tensor: the checkpoints in pool order, then the base if any."""


class RowsRecipe(MergeRecipe):
    """A merge that is, tensor by tensor, some other function of the rows."""

    @abstractmethod
    def merge_rows(self, pool: Pool, tensor_name: str, row: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """The merged tensor, flat float32. `row(i)` gives row i as a fresh flat float32 tensor,
        which the recipe may change: rows are asked for one at a time, so what a merge holds does
        not grow with the pool."""


@_kind("linear")
@dataclass(frozen=True)
class LinearRecipe(WeightedRecipe):
    """θ = Σ wᵢ θᵢ, or task arithmetic θ_base + Σ wᵢ (θᵢ − θ_base) when `relative`."""

    weights: Mapping[str, float]
    relative: bool = False

    @property
    def method(self) -> str:
        return "task_arithmetic" if self.relative else "linear"

    def coefficients(self, pool: Pool) -> list[float]:
        """One coefficient per stacked row: the checkpoints in pool order, then the base if any.

        θ_base + Σ wᵢ (θᵢ − θ_base) = (1 − Σ wᵢ) θ_base + Σ wᵢ θᵢ, so a relative merge is linear too.
        """
        values = _check_weights(pool, self.weights)
        if self.relative:
            _needs_base(pool, "task arithmetic")
            return values + [1.0 - math.fsum(values)]
        return values + ([0.0] if pool.base else [])

    def check(self, pool: Pool) -> None:
        self.coefficients(pool)

    def tensor_coefficients(self, pool: Pool, tensor_name: str, cosine: Cosine) -> list[float]:
        return self.coefficients(pool)

    def mergekit_config(self, pool: Pool) -> dict[str, Any]:
        models = _models(pool, [{"weight": float(self.weights.get(n, 0.0))} for n in pool.names])
        return _config(pool, self.method, models, {"normalize": False}, str(pool.base.path) if self.relative else None)

    def checkpoint_weights(self) -> dict[str, float]:
        return {n: float(w) for n, w in self.weights.items()}


def layer_of(tensor_name: str) -> tuple[int, str] | None:
    """(layer index, the name's prefix through it) for a tensor inside a numbered block, e.g.
    'model.layers.3.mlp.up_proj.weight' → (3, 'model.layers.3.'); None for embeddings, final norm, head."""
    match = _LAYER.search(tensor_name)
    return (int(match.group(1)), tensor_name[: match.end()]) if match else None


def layer_count(tensor_names: list[str]) -> int:
    """Layers of the model: one more than the highest layer index in its tensor names (0 if none)."""
    layers = [layer[0] for layer in map(layer_of, tensor_names) if layer]
    return max(layers) + 1 if layers else 0


@_kind("layerwise")
@dataclass(frozen=True)
class LayerwiseRecipe(WeightedRecipe):
    """A linear merge with its own weights for each block of `block_size` consecutive layers;
    `other` weighs the tensors outside the layers (embeddings, final norm, head)."""

    blocks: tuple[Mapping[str, float], ...]
    other: Mapping[str, float]
    block_size: int = 1

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> MergeRecipe:
        return cls(blocks=tuple(fields["blocks"]), other=fields["other"], block_size=fields.get("block_size", 1))

    def check(self, pool: Pool) -> None:
        for weights in (*self.blocks, self.other):
            _check_weights(pool, weights)
        layers = layer_count(pool.tensor_names)
        needed = -(-layers // self.block_size) if self.block_size >= 1 else 0
        if self.block_size < 1 or len(self.blocks) != needed:
            raise RecyclerError(f"layer-wise merge: {len(self.blocks)} blocks of {self.block_size} layers, "
                                f"but the model's {layers} layers need {needed}")

    def tensor_coefficients(self, pool: Pool, tensor_name: str, cosine: Cosine) -> list[float]:
        layer = layer_of(tensor_name)
        weights = self.other if layer is None else self.blocks[layer[0] // self.block_size]
        return LinearRecipe(weights).coefficients(pool)

    def mergekit_config(self, pool: Pool) -> dict[str, Any]:
        """Per-layer weights as mergekit conditional parameters: the first filter contained in a tensor's name wins."""
        prefixes = sorted({layer_of(n) for n in pool.tensor_names if layer_of(n)})
        parameters = []
        for checkpoint in pool.names:
            settings = [{"filter": prefix, "value": float(self.blocks[layer // self.block_size].get(checkpoint, 0.0))}
                        for layer, prefix in prefixes]
            settings.append({"value": float(self.other.get(checkpoint, 0.0))})
            parameters.append({"weight": settings})
        return _config(pool, "linear", _models(pool, parameters), {"normalize": False}, None)

    @property
    def method(self) -> str:
        return "linear"

    def checkpoint_weights(self) -> dict[str, float]:
        groups = (*self.blocks, self.other)
        names = dict.fromkeys(n for g in groups for n in g)
        return {n: math.fsum(g.get(n, 0.0) for g in groups) / len(groups) for n in names}

    def describe(self) -> dict[str, Any]:
        return {"block_size": self.block_size, "blocks": len(self.blocks)}


@_kind("slerp")
@dataclass(frozen=True)
class SlerpRecipe(WeightedRecipe):
    """Spherical interpolation between two checkpoints, tensor by tensor: t = 0 is `first`, t = 1 is
    `second`. Nearly parallel tensors (|cos| > 0.9995) are interpolated linearly, as mergekit does."""

    first: str
    second: str
    t: float

    DOT_THRESHOLD: ClassVar[float] = 0.9995
    EPS: ClassVar[float] = 1e-8

    @property
    def method(self) -> str:
        return "slerp"

    def check(self, pool: Pool) -> None:
        for name in (self.first, self.second):
            if name not in pool.names:
                raise RecyclerError(f"slerp: '{name}' is not a checkpoint of the pool ({', '.join(pool.names)})")
        if self.first == self.second:
            raise RecyclerError(f"slerp: needs two different checkpoints, got '{self.first}' twice")
        if not math.isfinite(self.t):
            raise RecyclerError("slerp: t is not a finite number")

    def tensor_coefficients(self, pool: Pool, tensor_name: str, cosine: Cosine) -> list[float]:
        i, j = pool.names.index(self.first), pool.names.index(self.second)
        angle_cosine = cosine(i, j, self.EPS)
        if abs(angle_cosine) > self.DOT_THRESHOLD:
            a, b = 1.0 - self.t, self.t
        else:
            theta = math.acos(angle_cosine)
            a, b = math.sin((1.0 - self.t) * theta) / math.sin(theta), math.sin(self.t * theta) / math.sin(theta)
        coefficients = [0.0] * len(pool.members)
        coefficients[i], coefficients[j] = a, b
        return coefficients

    def mergekit_config(self, pool: Pool) -> dict[str, Any]:
        first, second = pool.checkpoint(self.first), pool.checkpoint(self.second)
        models = [{"model": str(first.path)}, {"model": str(second.path)}]
        return _config(pool, "slerp", models, {"t": float(self.t)}, str(first.path))

    def checkpoint_weights(self) -> dict[str, float]:
        return {self.first: 1.0 - self.t, self.second: self.t}

    def describe(self) -> dict[str, Any]:
        return {"t": self.t}


def mask_seed(seed: int, tensor_name: str) -> int:
    """The seed of a tensor's DARE masks: fixed by the recipe's seed and the tensor's name, so a
    trial is reproduced exactly on any machine and whatever order tensors are merged in."""
    digest = hashlib.sha256(f"{seed}:{tensor_name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# What merging one tensor by TIES or DARE allocates at its peak, per element, whatever the pool's
# size: the base, the elected signs, the sum and the divisor (4 bytes each), the task vector being
# added (4) and what sparsifying it takes (the magnitudes and the mask, 5, or DARE's draw, 8; on a
# GPU, kthvalue's workspace on the first pass, when only the base and the signs are held).
# Measured on the CPU on a 16.8M-element tensor, as the smallest data limit a merge passes under
# (scripts/bench_task_vector_memory.py): TIES 25, DARE-TIES 24, DARE 20 (TIES was 32 with torch's
# kthvalue; 8 per row of the pool plus 16 when every row was held). GPU figures are not measured.
TASK_VECTOR_BYTES_PER_ELEMENT = 36
TIE_CHUNK = 1 << 20  # entries searched for ties to the threshold at a time (their positions: 8 MB at most)
RADIX_CHUNK = 1 << 20  # entries counted at a time by the magnitude threshold's radix select on a CPU


def _magnitude_threshold(magnitude: torch.Tensor, keep: int) -> torch.Tensor:
    """The `keep`-th largest of a row's magnitudes (float32), in linear time (a selection, no sort).

    On a GPU, torch's kthvalue (a radix select over the row in place). On a CPU, torch's kthvalue
    copies the row, allocates 8 bytes of indices per element and is slow (a quickselect: half of a
    TIES merge's time here), so the same value is found by a radix select over chunks."""
    if magnitude.device.type != "cpu":
        return torch.kthvalue(magnitude, magnitude.numel() - keep + 1).values
    return _kth_largest(magnitude, keep)


def _kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest of non-negative float32 values, exactly: for such values the order of their
    bits read as integers is their order, so the high 16 bits of the k-th largest are found by counting
    the values per high half, then its low 16 bits by counting, among the values with those high bits,
    per low half. Counted RADIX_CHUNK values at a time, so what it allocates does not grow with the row."""
    bits = values.view(torch.int32)
    high, k = _bin_of_kth_largest(_counts(bits, lambda piece: piece >> 16, 1 << 15), k)
    low, _ = _bin_of_kth_largest(_counts(bits, lambda piece: piece[(piece >> 16) == high] & 0xFFFF, 1 << 16), k)
    return torch.tensor((high << 16) | low, dtype=torch.int32).view(torch.float32)


def _counts(bits: torch.Tensor, bins_of: Callable[[torch.Tensor], torch.Tensor], bins: int) -> torch.Tensor:
    counts = torch.zeros(bins, dtype=torch.int64)
    for start in range(0, bits.numel(), RADIX_CHUNK):
        counts += torch.bincount(bins_of(bits[start:start + RADIX_CHUNK]), minlength=bins)
    return counts


def _bin_of_kth_largest(counts: torch.Tensor, k: int) -> tuple[int, int]:
    """The bin holding the k-th largest value given the counts per bin, and that value's rank
    among the values of its bin (k less those in higher bins)."""
    from_the_top = counts.flip(0).cumsum(0)
    position = int(torch.searchsorted(from_the_top, k))
    return len(counts) - 1 - position, k - (int(from_the_top[position - 1]) if position else 0)


def _top_magnitudes(magnitude: torch.Tensor, keep: int, threshold: torch.Tensor) -> torch.Tensor:
    """A mask of the `keep` largest of a row's magnitudes, given their `_magnitude_threshold`.

    Among entries tied at the threshold the first by position are kept. mergekit keeps whichever
    its (unstable) descending sort puts first, so the two can differ at such tied entries, and only
    there: frequent in bfloat16 pools, rare in float32 ones.
    """
    mask = magnitude > threshold
    needed = keep - int(torch.count_nonzero(mask))  # not mask.sum(), which counts in a copy of int64s
    # the first tied entries' positions, a chunk at a time: 8 bytes per position, and at a threshold of
    # 0 (a task vector mostly zero) every entry of the row can be tied
    for start in range(0, magnitude.numel(), TIE_CHUNK):
        if needed <= 0:
            break
        tied = (magnitude[start:start + TIE_CHUNK] == threshold).nonzero().squeeze(1)[:needed]
        mask[start + tied] = True
        needed -= len(tied)
    return mask


def _dare_mask(numel: int, density: float, generator: torch.Generator) -> torch.Tensor:
    """DARE's mask of one row: 1 with probability `density`, else 0 (float32, on the CPU, where the
    generator is)."""
    return torch.bernoulli(torch.full((numel,), density, dtype=torch.float32), generator=generator)


@_kind("task_vectors")
@dataclass(frozen=True)
class TaskVectorRecipe(RowsRecipe):
    """TIES and DARE: θ_base + λ · combine(wᵢ · sparsify(τᵢ)).

    - ties: keep each τᵢ's top `density` fraction by magnitude, elect a sign per entry by the sum of
      the weighted values, average the agreeing ones (weighted by wᵢ).
    - dare_ties / dare_linear: drop each entry with probability 1 − density and rescale by 1/density
      (masks drawn per tensor from `mask_seed`), then the TIES sign election and sum, or a plain sum.
    """

    weights: Mapping[str, float]
    sparsify: Literal["magnitude", "random"]
    consensus: bool
    density: float
    scale: float = 1.0
    seed: int = 0

    METHODS: ClassVar[dict[tuple[str, bool], str]] = {
        ("magnitude", True): "ties", ("random", True): "dare_ties", ("random", False): "dare_linear",
    }

    @property
    def method(self) -> str:
        return self.METHODS[(self.sparsify, self.consensus)]

    @property
    def normalize(self) -> bool:
        """TIES averages the agreeing values (mergekit's default for ties); DARE sums them. Only a
        method with a sign election averages."""
        return self.method == "ties"

    def check(self, pool: Pool) -> None:
        if (self.sparsify, self.consensus) not in self.METHODS:
            raise RecyclerError(f"task-vector merge: sparsify '{self.sparsify}' with consensus {self.consensus} is not a known method")
        _needs_base(pool, self.method)
        _check_weights(pool, self.weights)
        if not 0.0 < self.density <= 1.0:
            raise RecyclerError(f"{self.method}: density {self.density} is not in (0, 1]")
        if not math.isfinite(self.scale):
            raise RecyclerError(f"{self.method}: lambda is not a finite number")

    def merge_rows(self, pool: Pool, tensor_name: str, row: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """mergekit's generalized task arithmetic, one task vector at a time: with a sign election the
        vectors are formed twice (once to elect, once to sum), DARE's masks drawn again from the same seed."""
        weights = torch.tensor(_check_weights(pool, self.weights), dtype=torch.float32)
        base = row(len(weights))
        thresholds: dict[int, torch.Tensor] = {}
        each_vector = partial(self._each_task_vector, tensor_name, weights, base, row, thresholds)
        elected = torch.zeros_like(base) if self.consensus else None  # Σ wᵢ τᵢ, then its sign: the direction each entry keeps
        if elected is not None:
            each_vector(lambda weight, vector: elected.add_(vector))
            elected.ge_(0).mul_(2).sub_(1)
        mixed = torch.zeros_like(base)
        divisor = torch.zeros_like(base) if self.normalize else None  # the weights of the values kept, per entry

        def add(weight: torch.Tensor, vector: torch.Tensor) -> None:
            if elected is not None:
                agree = vector.sign() == elected
                vector.mul_(agree)
                if divisor is not None:
                    divisor.add_(agree.to(torch.float32).mul_(weight))
            mixed.add_(vector)

        each_vector(add)
        if divisor is not None:
            divisor[divisor == 0] = 1
            mixed /= divisor
        if self.scale != 1:
            mixed *= self.scale
        return base.add_(mixed)

    def _each_task_vector(self, tensor_name: str, weights: torch.Tensor, base: torch.Tensor, row: Callable[[int], torch.Tensor],
                          thresholds: dict[int, torch.Tensor], visit: Callable[[torch.Tensor, torch.Tensor], object]) -> None:
        """Call `visit(wᵢ, wᵢ · sparsify(θᵢ − θ_base))` for each checkpoint weighted, one vector alive at a time (a
        callback rather than a generator, whose frame and loop variable would keep the last vector
        while the next is made). Each call visits the same vectors given the same `thresholds`, which
        keeps each row's magnitude threshold once it is found."""
        generator = torch.Generator().manual_seed(mask_seed(self.seed, tensor_name))
        for index, weight in enumerate(weights):
            if weight == 0:
                # its vector would add ±0 to every sum, which changes none, so its row is not read; DARE
                # still draws its mask, which the next rows' masks follow (as mergekit's do)
                if self.sparsify == "random" and self.density < 1.0:
                    _dare_mask(base.numel(), self.density, generator)
                continue
            visit(weight, self._task_vector(row(index).sub_(base), index, thresholds, generator).mul_(weight))

    def _task_vector(self, vector: torch.Tensor, index: int, thresholds: dict[int, torch.Tensor],
                     generator: torch.Generator) -> torch.Tensor:
        """Row `index`'s τ sparsified in place."""
        if self.density >= 1.0:
            return vector
        if self.sparsify == "magnitude":
            keep = max(1, int(self.density * vector.numel()))
            magnitude = vector.abs()
            if index not in thresholds:
                thresholds[index] = _magnitude_threshold(magnitude, keep)
            mask = _top_magnitudes(magnitude, keep, thresholds[index])
            del magnitude  # before the product, which converts the mask to float32
            return vector.mul_(mask)
        return vector.mul_(_dare_mask(vector.numel(), self.density, generator).to(vector.device)).div_(self.density)

    def mergekit_config(self, pool: Pool) -> dict[str, Any]:
        """DARE's 1/density rescale is folded into the weights with mergekit's own rescale off
        (mergekit rescales by the L1 norm instead), so mergekit computes exactly this merge given the same masks."""
        rescale = self.density if self.sparsify == "random" else 1.0
        models = _models(pool, [{"weight": float(self.weights.get(n, 0.0)) / rescale, "density": float(self.density)}
                                for n in pool.names])
        parameters = {"normalize": self.normalize, "lambda": float(self.scale), "rescale": False}
        return _config(pool, self.method, models, parameters, str(pool.base.path))

    def checkpoint_weights(self) -> dict[str, float]:
        return {n: float(w) for n, w in self.weights.items()}

    def describe(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"density": self.density, "lambda": self.scale}
        if self.sparsify == "random":
            settings["seed"] = self.seed
        return settings

