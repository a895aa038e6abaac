from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from recycler.demo.tiny import write_pool
from recycler.errors import RecyclerError
from recycler.pool import load_pool
from recycler.spec import load_spec
from tests.pools import BAD_POOLS


def pool_from(path: Path):
    return load_pool(load_spec(path))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"arch": "gpt2"},
        {"arch": "llama"},
        {"arch": "gpt2", "dtype": torch.bfloat16},
        {"arch": "llama", "max_shard_size": "4KB"},
    ],
    ids=["gpt2", "llama", "bf16", "sharded"],
)
def test_valid_pools_load_lazily(tmp_path, kwargs):
    pool = pool_from(write_pool(tmp_path, 3, base=True, **kwargs))
    assert pool.names == ["c0", "c1", "c2"] and pool.base.name == "base"
    assert pool.dtype == kwargs.get("dtype", torch.float32)
    if "max_shard_size" in kwargs:
        assert len(pool.reference.files) > 1
    name = pool.tensor_names[0]
    on_disk = {}
    for file in pool.checkpoints[1].files:
        on_disk.update(load_file(file))
    assert torch.equal(pool.checkpoints[1].tensor(name), on_disk[name])
    assert pool.parameter_count == sum(t.numel() for t in on_disk.values())


def test_tied_gpt2_weights_are_stored_once(tmp_path):
    pool = pool_from(write_pool(tmp_path, 2))
    assert "transformer.wte.weight" in pool.tensor_names
    assert "lm_head.weight" not in pool.tensor_names


def test_fingerprint_is_stable_and_follows_the_bytes(tmp_path):
    spec = write_pool(tmp_path, 2)
    first = pool_from(spec).fingerprint()
    assert first == pool_from(spec).fingerprint() and len(first) == 64
    file = tmp_path / "ckpt1" / "model.safetensors"
    tensors = load_file(file)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, file, metadata={"format": "pt"})
    assert pool_from(spec).fingerprint() != first


@pytest.mark.parametrize("case", sorted(BAD_POOLS))
def test_bad_pools_name_the_checkpoint_and_problem(tmp_path, case):
    spec = write_pool(tmp_path, 3)
    corrupt, expected = BAD_POOLS[case]
    corrupt(tmp_path)
    with pytest.raises(RecyclerError, match=expected) as error:
        pool_from(spec)
    assert "\n" not in str(error.value)


def test_missing_shard_of_a_sharded_checkpoint(tmp_path):
    spec = write_pool(tmp_path, 2, max_shard_size="4KB")
    shard = sorted((tmp_path / "ckpt1").glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(RecyclerError, match=f"{shard.name}: shard named in model.safetensors.index.json is missing"):
        pool_from(spec)
