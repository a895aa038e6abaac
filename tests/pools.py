"""Pools broken one way each, shared by the tests of pool loading, the CLI and the bad-input catalogue.

`BAD_POOLS[case]` is (corrupt, expected): `corrupt(root)` breaks a pool that `write_pool(root, 3)`
wrote, and `expected` is a regular expression the one-line error must match."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from recycler.demo.tiny import write_checkpoint


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
