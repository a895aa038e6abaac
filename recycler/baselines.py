"""The baselines every study is read against: each checkpoint alone, the uniform average, and the
merge methods of the literature at the seed papers' common defaults (TIES density 0.2, DARE drop
rate 0.9, λ = 1, SLERP halfway between the pool's first two checkpoints)."""

from __future__ import annotations

from recycler.recipes import LinearRecipe, MergeRecipe, SlerpRecipe, TaskVectorRecipe

TIES_DENSITY = 0.2
DARE_DENSITY = 0.1  # drop rate 0.9
UNIFORM = "uniform"


def baseline_recipes(checkpoints: list[str], has_base: bool) -> dict[str, MergeRecipe]:
    """Baselines by label, in the order they are scored; task-vector methods only with a base."""
    baselines: dict[str, MergeRecipe] = {
        name: LinearRecipe({other: float(other == name) for other in checkpoints}) for name in checkpoints
    }
    baselines[UNIFORM] = LinearRecipe({name: 1.0 / len(checkpoints) for name in checkpoints})
    if has_base:
        ones = {name: 1.0 for name in checkpoints}
        baselines["task_arithmetic"] = LinearRecipe(ones, relative=True)
        baselines["ties"] = TaskVectorRecipe(ones, "magnitude", consensus=True, density=TIES_DENSITY)
        baselines["dare_ties"] = TaskVectorRecipe(ones, "random", consensus=True, density=DARE_DENSITY)
        baselines["dare_linear"] = TaskVectorRecipe(ones, "random", consensus=False, density=DARE_DENSITY)
    if len(checkpoints) >= 2:
        baselines["slerp"] = SlerpRecipe(checkpoints[0], checkpoints[1], 0.5)
    return baselines


def reference_labels(checkpoints: list[str]) -> set[str]:
    """The baselines that bound the hypervolume: the checkpoints alone and their average."""
    return {*checkpoints, UNIFORM}
