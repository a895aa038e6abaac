import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from recycler.demo.tiny import write_checkpoint, write_pool
from recycler.errors import RecyclerError
from recycler.pool import load_pool
from recycler.spec import load_spec


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


def _edit_tensors(folder: Path, edit) -> None:
    file = folder / "model.safetensors"
    tensors = load_file(file)
    edit(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


def _vocab_mismatch(root: Path) -> None:
    shutil.rmtree(root / "ckpt1")
    write_checkpoint(root / "ckpt1", seed=2, chars="0123456789+=-abcdefghiJ \n")


def _one_checkpoint(root: Path) -> None:
    spec = yaml.safe_load((root / "pool.yaml").read_text())
    spec["checkpoints"] = spec["checkpoints"][:1]
    (root / "pool.yaml").write_text(yaml.safe_dump(spec))


def _duplicate_names(root: Path) -> None:
    spec = yaml.safe_load((root / "pool.yaml").read_text())
    spec["checkpoints"][1]["name"] = "c0"
    (root / "pool.yaml").write_text(yaml.safe_dump(spec))


def _missing_path(root: Path) -> None:
    shutil.rmtree(root / "ckpt1")


def _truncate(root: Path) -> None:
    file = root / "ckpt1" / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-100])


def _config_change(root: Path) -> None:
    config = json.loads((root / "ckpt1" / "config.json").read_text())
    config["n_inner"] = 77
    (root / "ckpt1" / "config.json").write_text(json.dumps(config))


def _shape_change(tensors):
    tensors["transformer.h.0.mlp.c_fc.bias"] = torch.zeros(5)


def _dtype_change(tensors):
    tensors["transformer.h.0.mlp.c_fc.bias"] = tensors["transformer.h.0.mlp.c_fc.bias"].half()


BAD_POOLS = {
    "mismatched shapes": (lambda r: _edit_tensors(r / "ckpt1", _shape_change), "checkpoint 'c1'.*tensor 'transformer.h.0.mlp.c_fc.bias' has shape \\[5\\], but \\[64\\] in checkpoint 'c0'"),
    "mixed dtypes": (lambda r: _edit_tensors(r / "ckpt1", _dtype_change), "tensor 'transformer.h.0.mlp.c_fc.bias' has dtype torch.float16"),
    "missing tensor": (lambda r: _edit_tensors(r / "ckpt1", lambda t: t.pop("transformer.ln_f.bias")), "checkpoint 'c1'.*tensor 'transformer.ln_f.bias' is missing"),
    "extra tensor": (lambda r: _edit_tensors(r / "ckpt1", lambda t: t.update(extra=torch.zeros(2))), "tensor 'extra' is not in checkpoint 'c0'"),
    "truncated safetensors": (_truncate, "ckpt1/model.safetensors: not a valid safetensors file"),
    "missing config.json": (lambda r: (r / "ckpt1" / "config.json").unlink(), "ckpt1/config.json: config.json is missing"),
    "different architecture": (_config_change, "checkpoint 'c1'.*config.json 'n_inner' is 77, but None"),
    "different vocabularies": (_vocab_mismatch, "checkpoint 'c1'.*tokenizer vocabulary differs from checkpoint 'c0'"),
    "one checkpoint": (_one_checkpoint, "pool.yaml: checkpoints: List should have at least 2 items"),
    "duplicate names": (_duplicate_names, "pool.yaml: checkpoints.1.name: duplicate checkpoint name 'c0'"),
    "path does not exist": (_missing_path, "checkpoint 'c1': .*ckpt1: folder does not exist"),
    "no weights": (lambda r: (r / "ckpt1" / "model.safetensors").unlink(), "ckpt1: no model.safetensors or model.safetensors.index.json"),
    "no tokenizer": (lambda r: (r / "ckpt1" / "tokenizer.json").unlink(), "checkpoint 'c1'.*tokenizer"),
}


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
