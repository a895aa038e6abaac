"""Merge methods from the literature, checked against mergekit's own implementation of each.

Every merge is exported (recycler's `mergekit.yaml` included) and mergekit's `run_merge` is run on
that YAML: deterministic methods must agree within float32 rounding; DARE must agree given the
same masks (mergekit draws them from torch's global generator, so it is seeded with the tensor's
mask seed and only that tensor is sparsified), and its masks must drop at the asked rate.
"""

import pytest
import torch
import yaml

from recycler.demo.tiny import write_pool
from recycler.errors import RecyclerError
from recycler.export import export_merge
from recycler.merge import Merger
from recycler.pool import load_pool
from recycler.recipes import (
    RADIX_CHUNK,
    TIE_CHUNK,
    LayerwiseRecipe,
    LinearRecipe,
    SlerpRecipe,
    TaskVectorRecipe,
    _magnitude_threshold,
    _top_magnitudes,
    mask_seed,
    recipe_from_json,
)
from recycler.spec import load_spec
from tests.mergekit_reference import read_folder, run_mergekit

WEIGHTS = {"c0": 0.9, "c1": 0.6, "c2": 0.3}

DETERMINISTIC = {
    "gpt2-ties": ({"arch": "gpt2", "base": True}, TaskVectorRecipe(WEIGHTS, "magnitude", True, density=0.3, scale=1.2)),
    "gpt2-ties-a-zero-weight": ({"arch": "gpt2", "base": True}, TaskVectorRecipe({**WEIGHTS, "c1": 0.0}, "magnitude", True, density=0.3)),
    "llama-ties-full-density": ({"arch": "llama", "base": True}, TaskVectorRecipe(WEIGHTS, "magnitude", True, density=1.0, scale=0.7)),
    "llama-bf16-ties": ({"arch": "llama", "base": True, "dtype": torch.bfloat16}, TaskVectorRecipe(WEIGHTS, "magnitude", True, density=0.2)),
    "gpt2-slerp": ({"arch": "gpt2"}, SlerpRecipe("c2", "c0", 0.35)),
    "llama-bf16-slerp": ({"arch": "llama", "dtype": torch.bfloat16}, SlerpRecipe("c0", "c1", 0.8)),
    "gpt2-layerwise": ({"arch": "gpt2"}, LayerwiseRecipe(
        ({"c0": 0.7, "c1": 0.2, "c2": 0.1}, {"c0": 0.1, "c1": 0.1, "c2": 0.8}), {"c0": 0.2, "c1": 0.5, "c2": 0.3}, block_size=1)),
    "llama-layerwise": ({"arch": "llama"}, LayerwiseRecipe(({"c0": 0.25, "c1": 0.25, "c2": 0.5},), {"c0": 1.0}, block_size=2)),
}


def threshold_ties(row: torch.Tensor, density: float) -> torch.Tensor:
    """Nonzero entries of a task vector tied in magnitude with its TIES threshold: where the choice
    among ties falls (zeros count as nothing whichever is kept)."""
    magnitude = row.abs().reshape(-1)
    keep = max(1, int(density * magnitude.numel()))
    threshold = torch.kthvalue(magnitude, magnitude.numel() - keep + 1).values
    tied = (row.abs() == threshold) & (threshold > 0)
    return tied if int(tied.sum()) > 1 else torch.zeros_like(tied)


def _compare(ours: dict, theirs: dict, dtype: torch.dtype, names) -> None:
    for name in names:
        assert ours[name].dtype == theirs[name].dtype == dtype
        if dtype == torch.float32:
            torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6, msg=name)
        else:  # float32 results a rounding apart may land on neighbouring bfloat16 values
            torch.testing.assert_close(ours[name].float(), theirs[name].float(), rtol=2**-7, atol=1e-5, msg=name)


@pytest.mark.parametrize("case", sorted(DETERMINISTIC))
def test_deterministic_methods_equal_mergekit(tmp_path, case):
    pool_kwargs, recipe = DETERMINISTIC[case]
    pool = load_pool(load_spec(write_pool(tmp_path / "pool", 3, **pool_kwargs)))
    out = export_merge(Merger(pool), recipe, tmp_path / "export")
    assert yaml.safe_load((out / "mergekit.yaml").read_text())["merge_method"] == recipe.method
    ours, theirs = read_folder(out), run_mergekit(out / "mergekit.yaml", tmp_path / "mergekit")
    if isinstance(recipe, TaskVectorRecipe) and recipe.density < 1:
        # Which of the entries tied at a TIES threshold are kept is mergekit's unstable sort's choice.
        tied_anywhere = 0
        for name in pool.tensor_names:
            tied = sum(threshold_ties(pool.checkpoint(c).tensor(name).float() - pool.base.tensor(name).float(), recipe.density)
                       for c in pool.names).bool()
            tied_anywhere += int(tied.sum())
            ours[name], theirs[name] = ours[name][~tied], theirs[name][~tied]
        assert tied_anywhere < (100 if pool.dtype == torch.bfloat16 else 5)
    _compare(ours, theirs, pool.dtype, pool.tensor_names)


def test_layerwise_weights_follow_the_layers(tmp_path):
    """Block 0 is c0 alone, block 1 c1 alone, the rest c2 alone: each tensor is one checkpoint's."""
    pool = load_pool(load_spec(write_pool(tmp_path / "pool", 3, arch="llama")))
    recipe = LayerwiseRecipe(({"c0": 1.0}, {"c1": 1.0}), {"c2": 1.0}, block_size=1)
    state = Merger(pool).apply(recipe).state_dict()
    for name in pool.tensor_names:
        source = "c0" if ".layers.0." in name else "c1" if ".layers.1." in name else "c2"
        assert torch.equal(state[name], pool.checkpoint(source).tensor(name)), name


@pytest.mark.parametrize("weights", [WEIGHTS, {**WEIGHTS, "c1": 0.0}], ids=["weights", "a zero weight"])  # its mask is still drawn
@pytest.mark.parametrize("method", ["dare_ties", "dare_linear"])
def test_dare_equals_mergekit_given_the_same_masks(tmp_path, method, weights):
    pool = load_pool(load_spec(write_pool(tmp_path / "pool", 3, arch="gpt2", base=True)))
    recipe = TaskVectorRecipe(weights, "random", consensus=method == "dare_ties", density=0.4, scale=1.1, seed=7)
    out = export_merge(Merger(pool), recipe, tmp_path / "export")
    ours = read_folder(out)
    config = yaml.safe_load((out / "mergekit.yaml").read_text())
    assert config["merge_method"] == method and config["parameters"]["rescale"] is False
    for tensor in ("transformer.h.0.attn.c_attn.weight", "transformer.wte.weight"):
        for model in config["models"]:
            model["parameters"]["density"] = [{"filter": tensor, "value": recipe.density}, {"value": 1.0}]
        (tmp_path / "one.yaml").write_text(yaml.safe_dump(config))
        torch.manual_seed(mask_seed(recipe.seed, tensor))
        theirs = run_mergekit(tmp_path / "one.yaml", tmp_path / f"mergekit-{tensor}")
        _compare(ours, theirs, pool.dtype, [tensor])
        assert not torch.equal(ours[tensor], pool.base.tensor(tensor))


def test_dare_drops_at_the_asked_rate_rescales_and_reproduces(tmp_path):
    """With one checkpoint weighted 1, merge − base is τ/density where kept and 0 where dropped."""
    pool = load_pool(load_spec(write_pool(tmp_path / "pool", 2, arch="llama", base=True)))
    merger = Merger(pool)
    density = 0.3
    recipe = TaskVectorRecipe({"c0": 1.0}, "random", consensus=False, density=density, seed=3)
    merged = {k: v.clone() for k, v in merger.apply(recipe).state_dict().items()}
    kept = total = 0
    for name in pool.tensor_names:
        base, tau = pool.base.tensor(name), pool.checkpoint("c0").tensor(name) - pool.base.tensor(name)
        keep = merged[name] != base
        torch.testing.assert_close(merged[name][keep], (base + tau / density)[keep], rtol=1e-6, atol=1e-6)
        kept, total = kept + int(keep.sum()), total + keep.numel()
    sigma = (density * (1 - density) / total) ** 0.5
    assert abs(kept / total - density) < 5 * sigma, (kept / total, total)

    again = merger.apply(recipe).state_dict()
    assert all(torch.equal(again[n], merged[n]) for n in pool.tensor_names)
    other_seed = merger.apply(TaskVectorRecipe({"c0": 1.0}, "random", consensus=False, density=density, seed=4)).state_dict()
    assert not all(torch.equal(other_seed[n], merged[n]) for n in pool.tensor_names)


def test_ties_trims_to_density_and_a_single_vector_passes_through(tmp_path):
    pool = load_pool(load_spec(write_pool(tmp_path / "pool", 2, arch="gpt2", base=True)))
    merger = Merger(pool)
    name = "transformer.h.0.mlp.c_fc.weight"
    base, tau = pool.base.tensor(name), pool.checkpoint("c1").tensor(name) - pool.base.tensor(name)
    trimmed = merger.apply(TaskVectorRecipe({"c1": 1.0}, "magnitude", True, density=0.25)).state_dict()[name] - base
    assert int((trimmed != 0).sum()) == int(0.25 * tau.numel())
    assert trimmed.abs().min() == 0 and (tau.abs()[trimmed != 0].min() >= tau.abs()[trimmed == 0].max())
    whole = merger.apply(TaskVectorRecipe({"c1": 1.0}, "magnitude", True, density=1.0)).state_dict()[name]
    torch.testing.assert_close(whole, pool.checkpoint("c1").tensor(name))


def magnitudes_to_select_from() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    normal = torch.randn(RADIX_CHUNK + 777, generator=generator)
    return {
        "float32": normal,
        "bfloat16 differences (ties)": (normal.bfloat16().float() - torch.randn(normal.numel(), generator=generator).bfloat16().float()),
        "a few values, over chunks": torch.randint(-3, 4, (2 * RADIX_CHUNK + 5,), generator=generator).float(),
        "mostly zero": torch.cat([torch.zeros(5000), torch.randn(50, generator=generator), torch.zeros(1000)]),
        "all zero, signed": torch.tensor([0.0, -0.0] * 10),
        "extremes": torch.tensor([float("inf"), -float("inf"), 1e-45, -1e-45, 3.4e38, 1.0, -1.0, 0.0]),
        "one": torch.tensor([-2.5]),
    }


@pytest.mark.parametrize("case", sorted(magnitudes_to_select_from()))
def test_the_magnitude_threshold_is_torchs_kth_value(case):
    """The CPU's radix select against torch.kthvalue (what a GPU runs), bit for bit, at every rank
    boundary that matters: the largest, the smallest, and ranks in between."""
    magnitude = magnitudes_to_select_from()[case].abs()
    n = magnitude.numel()
    for keep in sorted({k for k in (1, 2, n // 7, n // 2, n - 1, n) if 1 <= k <= n}):
        ours = _magnitude_threshold(magnitude, keep)
        torchs = torch.kthvalue(magnitude, n - keep + 1).values
        assert ours.dtype == torch.float32 and ours.view(torch.int32) == torchs.view(torch.int32), (keep, ours, torchs)


@pytest.mark.parametrize(("sparsify", "consensus"), [("magnitude", True), ("random", True), ("random", False)])
def test_a_zero_weight_row_is_never_read_and_changes_no_bit(tmp_path, sparsify, consensus):
    """Its vector would add ±0 to every sum. The reference goes through the vector: the same row
    weighted, but equal to the base, so its task vector is zero (DARE draws the same masks)."""
    pool = load_pool(load_spec(write_pool(tmp_path / "pool", 3, arch="gpt2", base=True)))
    name = "transformer.h.0.mlp.c_fc.weight"
    rows = [pool.checkpoint(c).tensor(name) for c in pool.names] + [pool.base.tensor(name)]
    read = []

    def row(index: int) -> torch.Tensor:
        read.append(index)
        return rows[index].reshape(-1).to(torch.float32, copy=True)  # fresh, as the recipe changes it

    skipped = TaskVectorRecipe({**WEIGHTS, "c1": 0.0}, sparsify, consensus, density=0.5).merge_rows(pool, name, row)
    assert 1 not in read and {0, 2, 3} <= set(read)
    rows[1] = rows[3]
    reference = TaskVectorRecipe(WEIGHTS, sparsify, consensus, density=0.5).merge_rows(pool, name, row)
    assert read.count(1) >= 1 and torch.equal(skipped, reference)


def test_ties_keeps_the_first_tied_entries_across_chunks():
    """Magnitudes from a few values (as a bfloat16 task vector has) over more than two search chunks:
    exactly `keep` entries, every one above the threshold, and of those tied at it the first by position."""
    generator = torch.Generator().manual_seed(0)
    row = torch.randint(-2, 3, (2 * TIE_CHUNK + 12345,), generator=generator).float()
    for keep in (1, TIE_CHUNK // 3, int(0.7 * row.numel())):  # ties in the first chunk only, and spanning chunks
        threshold = _magnitude_threshold(row.abs(), keep)
        mask = _top_magnitudes(row.abs(), keep, threshold)
        tied = row.abs() == threshold
        kept_tied, dropped_tied = (mask & tied).nonzero(), (~mask & tied).nonzero()
        assert int(mask.sum()) == keep
        assert bool(mask[row.abs() > threshold].all())
        assert len(dropped_tied) == 0 or kept_tied.max() < dropped_tied.min()


def test_slerp_ends_at_its_checkpoints_and_keeps_norms_between(tmp_path):
    pool = load_pool(load_spec(write_pool(tmp_path / "pool", 2, arch="gpt2")))
    merger = Merger(pool)
    name = "transformer.h.1.attn.c_proj.weight"
    for t, source in ((0.0, "c0"), (1.0, "c1")):
        torch.testing.assert_close(merger.apply(SlerpRecipe("c0", "c1", t)).state_dict()[name], pool.checkpoint(source).tensor(name))
    a, b = pool.checkpoint("c0").tensor(name).double(), pool.checkpoint("c1").tensor(name).double()
    halfway = merger.apply(SlerpRecipe("c0", "c1", 0.5)).state_dict()[name].double()
    assert halfway.norm() > ((a + b) / 2).norm()  # the arc bulges past the chord


@pytest.mark.parametrize("recipe", [
    LinearRecipe({"c0": 0.5}, relative=True),
    TaskVectorRecipe({"c0": 0.5, "c1": 0.2}, "magnitude", True, density=0.5, scale=0.9),
    SlerpRecipe("c1", "c0", 0.25),
    LayerwiseRecipe(({"c0": 0.5, "c1": 0.5}, {"c1": 1.0}), {"c0": 1.0}, block_size=1),
])
def test_recipes_round_trip_through_json(recipe):
    assert recipe_from_json(recipe.to_json()) == recipe


@pytest.mark.parametrize(("recipe", "message"), [
    (TaskVectorRecipe({"c0": 1.0}, "magnitude", True, density=0.2), "ties merge works on task vectors and needs a pool with a base"),
    (SlerpRecipe("c0", "zz", 0.5), "slerp: 'zz' is not a checkpoint of the pool"),
    (SlerpRecipe("c0", "c0", 0.5), "needs two different checkpoints"),
    (LayerwiseRecipe(({"c0": 1.0},), {"c0": 1.0}, block_size=1), "1 blocks of 1 layers, but the model's 2 layers need 2"),
])
def test_recipes_a_pool_cannot_make_are_refused(tmp_path, recipe, message):
    pool = load_pool(load_spec(write_pool(tmp_path / "pool", 2, arch="llama")))
    with pytest.raises(RecyclerError, match=message):
        Merger(pool).apply(recipe)
