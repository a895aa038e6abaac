import pytest
import torch

from recycler.demo.tiny import write_pool
from recycler.errors import RecyclerError
from recycler.merge import Merger
from recycler.pool import load_pool
from recycler.recipes import LinearRecipe
from recycler.spec import load_spec


def merger_for(tmp_path, **kwargs) -> Merger:
    return Merger(load_pool(load_spec(write_pool(tmp_path, 3, **kwargs))))


def expected_tensor(pool, name, coefficients):
    total = torch.zeros(pool.reference.tensors[name].shape, dtype=torch.float64)
    for member, c in zip(pool.members, coefficients):
        total += c * member.tensor(name).double()
    return total


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_linear_merge_in_place(tmp_path, dtype):
    merger = merger_for(tmp_path, dtype=dtype)
    pointers = {n: p.data_ptr() for n, p in merger.model.named_parameters()}
    weights = {"c0": 0.7, "c1": -0.2, "c2": 0.5}
    model = merger.apply(LinearRecipe(weights))
    assert model is merger.model
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == pointers
    params = dict(model.named_parameters())
    for name in merger.pool.tensor_names:
        want = expected_tensor(merger.pool, name, [0.7, -0.2, 0.5])
        got = params[name].detach()
        assert got.dtype == dtype
        if dtype == torch.float64:  # accumulated in float64, as the pool is stored
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        elif dtype == torch.float32:
            torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)
        else:  # float32 accumulation, then one rounding to bfloat16: within one bfloat16 ulp
            torch.testing.assert_close(got.double(), want, rtol=2**-7, atol=1e-6)


def test_tied_head_follows_the_merged_embedding(tmp_path):
    merger = merger_for(tmp_path)
    model = merger.apply(LinearRecipe({"c0": 0.5, "c1": 0.5}))
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    want = expected_tensor(merger.pool, "transformer.wte.weight", [0.5, 0.5, 0.0]).float()
    torch.testing.assert_close(model.lm_head.weight.detach(), want)


def test_a_single_checkpoint_reproduces_its_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    merger = merger_for(tmp_path, arch="llama")
    merger.apply(LinearRecipe({"c0": 0.3, "c1": 0.7}))
    model = merger.apply(LinearRecipe({"c2": 1.0}))
    alone = AutoModelForCausalLM.from_pretrained(str(merger.pool.checkpoints[2].path))
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, alone(ids).logits, rtol=0, atol=0)


def test_relative_merge_adds_task_vectors_to_the_base(tmp_path):
    merger = merger_for(tmp_path, base=True)
    model = merger.apply(LinearRecipe({"c0": 0.5, "c2": 0.25}, relative=True))
    pool = merger.pool
    name = "transformer.h.1.attn.c_attn.weight"
    base = pool.base.tensor(name).double()
    want = base + 0.5 * (pool.checkpoints[0].tensor(name).double() - base) + 0.25 * (pool.checkpoints[2].tensor(name).double() - base)
    torch.testing.assert_close(dict(model.named_parameters())[name].detach().double(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "recipe, expected",
    [
        (LinearRecipe({"zz": 1.0}), "'zz', which is not a checkpoint of the pool"),
        (LinearRecipe({"c0": float("nan")}), "weight of 'c0' is not a finite number"),
        (LinearRecipe({"c0": 1.0}, relative=True), "needs a pool with a base checkpoint"),
    ],
)
def test_bad_recipes(tmp_path, recipe, expected):
    merger = merger_for(tmp_path)
    with pytest.raises(RecyclerError, match=expected):
        merger.apply(recipe)
