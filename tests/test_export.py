import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from recycler.demo.tiny import write_pool
from recycler.errors import RecyclerError
from recycler.export import export_merge
from recycler.merge import Merger
from recycler.pool import load_pool
from recycler.recipes import LinearRecipe
from recycler.spec import load_spec
from tests.mergekit_reference import read_folder, run_mergekit

CASES = {
    "gpt2-linear": ({"arch": "gpt2"}, LinearRecipe({"c0": 0.6, "c1": 0.3, "c2": 0.1})),
    "gpt2-negative": ({"arch": "gpt2"}, LinearRecipe({"c0": 1.4, "c1": -0.25, "c2": -0.15})),
    "llama-linear": ({"arch": "llama"}, LinearRecipe({"c0": 0.2, "c1": 0.2, "c2": 0.6})),
    "llama-bf16-sharded": ({"arch": "llama", "dtype": torch.bfloat16, "max_shard_size": "4KB"}, LinearRecipe({"c0": 1 / 3, "c1": 1 / 3, "c2": 1 / 3})),
    "gpt2-task-arithmetic": ({"arch": "gpt2", "base": True}, LinearRecipe({"c0": 0.5, "c1": 0.4, "c2": -0.3}, relative=True)),
    "llama-bf16-task-arithmetic": ({"arch": "llama", "base": True, "dtype": torch.bfloat16}, LinearRecipe({"c0": 0.3, "c1": 0.3, "c2": 0.3}, relative=True)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_equals_mergekit_on_the_exported_recipe(tmp_path, case):
    pool_kwargs, recipe = CASES[case]
    pool = load_pool(load_spec(write_pool(tmp_path / "pool", 3, **pool_kwargs)))
    out = export_merge(Merger(pool), recipe, tmp_path / "export", max_shard_size="4KB")
    ours = read_folder(out)
    theirs = run_mergekit(out / "mergekit.yaml", tmp_path / "mergekit")
    assert set(ours) == set(pool.tensor_names)
    assert set(ours) <= set(theirs) and set(theirs) - set(ours) <= {"lm_head.weight"}  # mergekit may write a tied head
    for name, tensor in ours.items():
        assert tensor.dtype == theirs[name].dtype == pool.dtype
        if pool.dtype == torch.float32:
            torch.testing.assert_close(tensor, theirs[name], rtol=1e-6, atol=1e-7)
        else:  # float32 sums in another order may round to the other neighbouring bfloat16 value
            torch.testing.assert_close(tensor.float(), theirs[name].float(), rtol=2**-7, atol=1e-6)
            exact = exact_merge(pool, recipe, name)
            assert ((tensor.double() - exact).abs() <= (theirs[name].double() - exact).abs() + 1e-9).all()


def exact_merge(pool, recipe, name) -> torch.Tensor:
    """The merge in float64, before any rounding: what both engines approximate."""
    rows = [member.tensor(name).double() for member in pool.members]
    return sum(c * row for c, row in zip(recipe.coefficients(pool), rows))


def test_export_is_a_standard_hf_checkpoint(tmp_path):
    pool = load_pool(load_spec(write_pool(tmp_path / "pool", 3, arch="llama", max_shard_size="4KB")))
    merger = Merger(pool)
    recipe = LinearRecipe({"c0": 0.5, "c1": 0.25, "c2": 0.25})
    out = export_merge(merger, recipe, tmp_path / "export", max_shard_size="4KB", scores={"addition": 0.5})
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert (out / "config.json").read_text() == (pool.reference.path / "config.json").read_text()
    assert (out / "tokenizer.json").read_text() == (pool.reference.path / "tokenizer.json").read_text()
    card = (out / "README.md").read_text()
    assert pool.fingerprint() in card and "| c1 |" in card and "| addition | 0.5000 |" in card

    loaded = AutoModelForCausalLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    ids = tokenizer("12+34=46", return_tensors="pt").input_ids
    resident = merger.apply(recipe)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, resident(ids).logits, rtol=0, atol=0)


def test_export_refuses_a_non_empty_target_and_leaves_it(tmp_path):
    pool = load_pool(load_spec(write_pool(tmp_path / "pool", 2)))
    merger = Merger(pool)
    target = tmp_path / "export"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(RecyclerError, match="export target is not empty"):
        export_merge(merger, LinearRecipe({"c0": 1.0}), target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]

    export_merge(merger, LinearRecipe({"c0": 1.0}), target, overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "pool"]


def test_a_failed_export_leaves_nothing_behind(tmp_path):
    pool = load_pool(load_spec(write_pool(tmp_path / "pool", 2)))
    with pytest.raises(RecyclerError):
        export_merge(Merger(pool), LinearRecipe({"nobody": 1.0}), tmp_path / "export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool"]
