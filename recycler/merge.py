"""The merge engine: a candidate merge written in place into one resident model.

A recipe (`recycler.recipes`) says what each tensor is: a weighted sum of its rows (the
checkpoints in pool order, then the base) or a function of the rows in float32. The engine decides
where the rows live (`recycler.residency`): stacked on the worker's device when the stacks fit its
memory budget, else streamed from the pool's memory-mapped files, which every worker on a machine
shares; on a GPU, a budget between the two stacks the tensors it holds and streams the rest. No file is written and no second model is built per candidate.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from functools import partial

import torch

from recycler import native_sum
from recycler.errors import RecyclerError, format_bytes
from recycler.pool import Pool
from recycler.recipes import TASK_VECTOR_BYTES_PER_ELEMENT, MergeRecipe, RowsRecipe, WeightedRecipe
from recycler.residency import (
    EAGER_SCRATCH_BYTES,
    HybridRows,
    ResidentRows,
    Rows,
    StreamedRows,
    WeightedSum,
)

# Of the memory a device or machine has free, the share `auto` budgets for merging: the rest is
# for evaluation (activations, the KV cache) and everything else a worker runs.
AUTO_SHARE = 0.5


@dataclass(frozen=True)
class MemoryNeeds:
    """What a worker needs to merge candidates of a pool on a device."""

    model: int
    scratch: int
    stacks: int

    @property
    def streamed(self) -> int:
        """One model and scratch: the pool stays in the shared page cache."""
        return self.model + self.scratch

    @property
    def resident(self) -> int:
        """The pool stacked on the device as well."""
        return self.streamed + self.stacks

    @classmethod
    def of(cls, pool: Pool, device: torch.device) -> MemoryNeeds:
        rows = len(pool.members)
        scratch = EAGER_SCRATCH_BYTES + StreamedRows.staging_bytes(rows, pool.dtype, device)
        if device.type == "cpu" and pool.dtype == torch.bfloat16:  # the C kernel's accumulators
            scratch += native_sum.scratch_bytes()
        if pool.base is not None:  # TIES and DARE merge a tensor in float32, one task vector at a time
            scratch += TASK_VECTOR_BYTES_PER_ELEMENT * pool.largest_tensor
        return cls(model=pool.model_bytes, scratch=scratch, stacks=sum(stack_bytes(pool, name) for name in floating_tensors(pool)))


def floating_tensors(pool: Pool) -> list[str]:
    """The tensors a merge computes: the reference's floating-point ones, by name."""
    return [name for name in pool.tensor_names if pool.reference.tensors[name].dtype.is_floating_point]


def stack_bytes(pool: Pool, name: str) -> int:
    """A tensor's rows stacked: every member's, in the pool's dtype (as ResidentRows holds them)."""
    return len(pool.members) * torch.Size(pool.reference.tensors[name].shape).numel() * pool.dtype.itemsize


def available_memory(device: torch.device, workers_sharing: int = 1) -> int:
    """What `auto` budgets for one worker: a share of the device's free memory, or of the machine's
    available memory (page cache counts as available) split between the workers on it."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * AUTO_SHARE)
    import psutil

    return int(psutil.virtual_memory().available * AUTO_SHARE / max(1, workers_sharing))


def check_merge_budget(pool: Pool, device: torch.device, budget: int | None, workers_sharing: int = 1) -> int:
    """The budget (None: `auto`, measured here); refused with one line when not even one model and
    scratch fit in it."""
    needs = MemoryNeeds.of(pool, device)
    chosen = available_memory(device, workers_sharing) if budget is None else budget
    if needs.streamed > chosen:
        source = "resources.memory_per_worker" if budget is not None else f"the memory free for a worker on {device.type} (auto)"
        raise RecyclerError(
            f"{source}: {format_bytes(chosen)} cannot hold one model of this pool plus scratch: a worker needs at "
            f"least {format_bytes(needs.streamed)} (model {format_bytes(needs.model)}, scratch {format_bytes(needs.scratch)})"
        )
    return chosen


def stacked_tensors(pool: Pool, device: torch.device, budget: int | None, workers_sharing: int = 1) -> list[str]:
    """The tensors whose rows are stacked on the device, the rest streamed. On a GPU, as many as fit
    the budget beside one model and scratch, smallest first, so the tensors streamed over the bus are
    the fewest (each costs its bytes and a fixed overhead). On the CPU all or none: the page cache is
    already every worker's shared copy, so stacking part of it privately costs memory and saves no bus."""
    room = check_merge_budget(pool, device, budget, workers_sharing) - MemoryNeeds.of(pool, device).streamed
    stacked = []
    for name in sorted(floating_tensors(pool), key=lambda n: (stack_bytes(pool, n), n)):
        if stack_bytes(pool, name) > room:
            break
        room -= stack_bytes(pool, name)
        stacked.append(name)
    if device.type != "cuda" and len(stacked) < len(floating_tensors(pool)):
        return []
    return stacked


class PoolMerger:
    """The pool's rows where the memory budget puts them, and candidates merged from them: written
    into tensors an evaluation engine holds (`write_into`), or handed over one tensor at a time
    (`merged_tensors`) to an engine that loads weights itself."""

    def __init__(self, pool: Pool, device: str | torch.device = "cpu", budget: int | None = None,
                 workers_sharing: int = 1, stacked: Collection[str] | None = None) -> None:
        """`stacked` names the tensors to stack (the rest streamed) in place of the budget's choice."""
        self.pool = pool
        self.device = torch.device(device)
        if stacked is None:
            stacked = stacked_tensors(pool, self.device, budget, workers_sharing)
        else:
            check_merge_budget(pool, self.device, budget, workers_sharing)
        stacked = set(stacked)
        self.shapes = {name: torch.Size(pool.reference.tensors[name].shape) for name in floating_tensors(pool)}
        rows, dtype = len(pool.members), pool.dtype

        def resident(shapes: dict[str, torch.Size]) -> ResidentRows:
            return ResidentRows(pool.rows, shapes, rows, dtype, self.device, on_row=self._check_row)

        def streamed(shapes: dict[str, torch.Size]) -> StreamedRows:
            return StreamedRows(pool.rows, shapes, rows, dtype, self.device)

        if stacked == set(self.shapes):
            self.rows: Rows = resident(self.shapes)
        elif not stacked:
            self.rows = streamed(self.shapes)
        else:
            self.rows = HybridRows(resident({n: s for n, s in self.shapes.items() if n in stacked}),
                                   streamed({n: s for n, s in self.shapes.items() if n not in stacked}))

    def _check_row(self, name: str, index: int, row: torch.Tensor) -> None:
        if not torch.isfinite(row).all():
            member = self.pool.members[index]
            raise RecyclerError(f"checkpoint '{member.name}' ({member.path}): tensor '{name}' holds NaN or inf")

    @torch.no_grad()
    def write_into(self, recipe: MergeRecipe, targets: Mapping[str, torch.Tensor]) -> None:
        """Write the recipe's merge of each tensor named in `targets` into it, in place."""
        recipe.check(self.pool)
        if isinstance(recipe, WeightedRecipe):
            self.rows.weighted_sums([
                WeightedSum(name, recipe.tensor_coefficients(self.pool, name, partial(self.rows.cosine, name)), target.data)
                for name, target in targets.items()
            ])
        elif isinstance(recipe, RowsRecipe):
            for name, target in targets.items():
                target.data.view(-1).copy_(recipe.merge_rows(self.pool, name, partial(self.rows.float32_row, name)))
        else:
            raise TypeError(f"{type(recipe).__name__} is neither a weighted sum nor a function of the rows")

    def merged_tensors(self, recipe: MergeRecipe) -> Iterator[tuple[str, torch.Tensor]]:
        """Each floating-point tensor of the merge, in a buffer of its own made as it is asked for:
        one tensor at a time is in memory beside what the consumer keeps."""
        recipe.check(self.pool)
        for name, shape in self.shapes.items():
            out = torch.empty(shape, dtype=self.pool.dtype, device=self.device)
            self.write_into(recipe, {name: out})
            yield name, out


class Merger(PoolMerger):
    """A pool merger writing into one resident transformers model (the `hf` engine's, and exports')."""

    def __init__(self, pool: Pool, device: str | torch.device = "cpu", budget: int | None = None,
                 workers_sharing: int = 1, stacked: Collection[str] | None = None) -> None:
        from transformers import AutoModelForCausalLM

        super().__init__(pool, device, budget, workers_sharing, stacked)
        self.model = AutoModelForCausalLM.from_pretrained(str(pool.reference.path), dtype=pool.dtype).to(self.device)
        self.model.eval()
        parameters = self.model.state_dict(keep_vars=True)
        self._targets: dict[str, torch.Tensor] = {}
        for name in self.shapes:
            info = pool.reference.tensors[name]
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

    @torch.no_grad()
    def apply(self, recipe: MergeRecipe) -> torch.nn.Module:
        """Write the recipe's merge into the resident model's parameters and return the model."""
        self.write_into(recipe, self._targets)
        return self.model

    @torch.no_grad()
    def nonfinite_tensor(self) -> str | None:
        """The first merged tensor holding NaN or inf, if any: such a candidate must not be scored."""
        for name, target in self._targets.items():
            if not torch.isfinite(target).all():
                return name
        return None
