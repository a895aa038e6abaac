"""The merge engine: a candidate merge written in place into one resident model.

Each parameter's source tensors (the checkpoints in pool order, then the base) are stacked once
into an (rows, numel) matrix. A linear candidate is one weighted sum per parameter (a
vector-matrix product), accumulated in float32 and cast back to the parameter's dtype; the
recipes in `recycler.recipes` say what to write. No file is written and no second model is
built per candidate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from recycler.errors import RecyclerError
from recycler.pool import Pool

if TYPE_CHECKING:
    from recycler.recipes import MergeRecipe

# Elements converted to float32 at a time when the pool is stored in a narrower dtype.
_CHUNK = 1 << 18


def resident_bytes(pool: Pool) -> int:
    """Memory a ResidentMerger holds: every member's tensors stacked, plus the resident model."""
    return (len(pool.members) + 1) * pool.model_bytes


class ResidentMerger:
    """A model resident in memory plus the pool's tensors stacked per parameter, on one device."""

    def __init__(self, pool: Pool, device: str | torch.device = "cpu") -> None:
        from transformers import AutoModelForCausalLM

        self.pool = pool
        self.device = torch.device(device)
        self.model = AutoModelForCausalLM.from_pretrained(str(pool.reference.path), dtype=pool.dtype).to(self.device)
        self.model.eval()
        parameters = self.model.state_dict(keep_vars=True)
        self._targets: dict[str, torch.Tensor] = {}
        self.stacks: dict[str, torch.Tensor] = {}
        for name in pool.tensor_names:
            info = pool.reference.tensors[name]
            if not info.dtype.is_floating_point:
                continue
            if name not in parameters:
                raise RecyclerError(
                    f"checkpoint '{pool.reference.name}': tensor '{name}' is not a parameter of "
                    f"{type(self.model).__name__}"
                )
            target = parameters[name]
            if tuple(target.shape) != info.shape or target.dtype != info.dtype:
                raise RecyclerError(
                    f"checkpoint '{pool.reference.name}': tensor '{name}' {list(info.shape)} {info.dtype} does not fit "
                    f"the model's parameter {list(target.shape)} {target.dtype}"
                )
            self._targets[name] = target
            self.stacks[name] = self._stack(name, info.dtype)
        self._scratch = _Scratch(len(pool.members), self.device)
        self._cosines: dict[tuple[str, int, int], float] = {}

    def _stack(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        members = self.pool.members
        numel = self._targets[name].numel()
        stack = torch.empty((len(members), numel), dtype=dtype, device=self.device)
        for row, member in enumerate(members):
            stack[row].copy_(member.tensor(name).reshape(-1))
            if not torch.isfinite(stack[row]).all():
                raise RecyclerError(f"checkpoint '{member.name}' ({member.path}): tensor '{name}' holds NaN or inf")
        return stack

    @property
    def stacked_bytes(self) -> int:
        """Bytes the resident stacks hold: what one materialization reads."""
        return sum(s.numel() * s.element_size() for s in self.stacks.values())

    @property
    def row_count(self) -> int:
        return len(self.pool.members)

    def row_vector(self, coefficients: list[float]) -> torch.Tensor:
        """One coefficient per stacked row, on the merger's device."""
        return torch.tensor(coefficients, dtype=torch.float32, device=self.device)

    def write_weighted(self, name: str, coefficients: torch.Tensor) -> None:
        """Parameter `name` = coefficients @ its stack."""
        _weighted_sum_into(self._targets[name].data.view(-1), self.stacks[name], coefficients, self._scratch)

    def write_values(self, name: str, values: torch.Tensor) -> None:
        """Parameter `name` = these flat float32 values, cast to its dtype."""
        self._targets[name].data.view(-1).copy_(values)

    def cosine(self, name: str, i: int, j: int, eps: float) -> float:
        """Cosine between rows i and j of a stack (norms below eps count as 1), computed once per pair."""
        key = (name, i, j)
        if key not in self._cosines:
            a, b = (self.stacks[name][r].to(torch.float64) for r in (i, j))
            norm_a, norm_b = (float(torch.linalg.vector_norm(v)) for v in (a, b))
            dot = float(a @ b) / ((norm_a if norm_a > eps else 1.0) * (norm_b if norm_b > eps else 1.0))
            self._cosines[key] = min(1.0, max(-1.0, dot))
        return self._cosines[key]

    @torch.no_grad()
    def apply(self, recipe: MergeRecipe) -> torch.nn.Module:
        """Write the recipe's merge into the resident model's parameters and return the model."""
        recipe.check(self.pool)
        recipe.write(self)
        return self.model

    @torch.no_grad()
    def nonfinite_tensor(self) -> str | None:
        """The first merged tensor holding NaN or inf, if any: such a candidate must not be scored."""
        for name, target in self._targets.items():
            if not torch.isfinite(target).all():
                return name
        return None


def _weighted_sum_into(out: torch.Tensor, stack: torch.Tensor, coefficients: torch.Tensor, scratch: _Scratch) -> None:
    """out = coefficients @ stack, accumulated in float32 (float64 for a float64 pool), cast to out's dtype.

    A float32 (or float64) stack is one matrix-vector product straight into the parameter. A
    narrower stack is converted chunk by chunk into preallocated float32 scratch, so no memory is
    allocated per candidate and the working set stays in cache.
    """
    compute = torch.float64 if stack.dtype == torch.float64 else torch.float32
    coefficients = coefficients.to(compute)
    if stack.dtype == compute and out.dtype == compute:
        torch.mv(stack.T, coefficients, out=out)
        return
    rows, numel = stack.shape
    for start in range(0, numel, _CHUNK):
        end = min(start + _CHUNK, numel)
        wide = scratch.rows[:rows, : end - start]
        total = scratch.total[: end - start]
        wide.copy_(stack[:, start:end])
        torch.mv(wide.T, coefficients, out=total)
        out[start:end].copy_(total)


class _Scratch:
    """float32 buffers for converting a narrow-dtype stack chunk by chunk."""

    def __init__(self, rows: int, device: torch.device) -> None:
        self.rows = torch.empty((rows, _CHUNK), dtype=torch.float32, device=device)
        self.total = torch.empty(_CHUNK, dtype=torch.float32, device=device)
