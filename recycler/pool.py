"""A pool of checkpoints read lazily through safetensors, validated once, and fingerprinted.

Only headers are read to validate: tensors stay on disk (memory-mapped) until someone asks
for one, so a pool of many large checkpoints can be checked without loading it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from recycler.errors import RecyclerError
from recycler.checkpoint_scan import SAFETENSORS_DTYPES, FileScan, scan_files
from recycler.spec import CheckpointRef, PoolSpec

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# Keys of config.json that differ between runs of one architecture without changing it.
CONFIG_KEYS_IGNORED = frozenset(
    {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache", "output_attentions"}
)

@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is, from the safetensors header alone."""

    file: Path
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass
class Checkpoint:
    """One HF-format checkpoint folder, opened lazily."""

    name: str
    path: Path
    config: dict[str, Any]
    tensors: dict[str, TensorInfo]
    _handles: dict[Path, Any] = field(default_factory=dict, repr=False)

    @property
    def files(self) -> list[Path]:
        return sorted({info.file for info in self.tensors.values()})

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor, read through a memory map of its file."""
        file = self.tensors[name].file
        if file not in self._handles:
            self._handles[file] = safe_open(str(file), framework="pt")
        return self._handles[file].get_tensor(name)


def _read_header(name: str, file: Path) -> dict[str, TensorInfo]:
    try:
        with safe_open(str(file), framework="pt") as handle:
            infos = {}
            for key in handle.keys():
                piece = handle.get_slice(key)
                dtype = SAFETENSORS_DTYPES.get(piece.get_dtype())
                if dtype is None:
                    raise RecyclerError(f"checkpoint '{name}': {file}: tensor '{key}' has unsupported dtype {piece.get_dtype()}")
                infos[key] = TensorInfo(file=file, shape=tuple(piece.get_shape()), dtype=dtype)
            return infos
    except SafetensorError as error:
        raise RecyclerError(f"checkpoint '{name}': {file}: not a valid safetensors file ({error})") from None


def _read_weight_map(name: str, folder: Path) -> dict[str, Path]:
    index_path = folder / INDEX_FILE
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise RecyclerError(f"checkpoint '{name}': {index_path}: not a valid safetensors index (needs a 'weight_map')") from None
    return {key: folder / file for key, file in weight_map.items()}


def open_checkpoint(ref: CheckpointRef) -> Checkpoint:
    """Read a checkpoint's config and safetensors headers; no tensor is loaded."""
    folder = ref.path
    if not folder.is_dir():
        raise RecyclerError(f"checkpoint '{ref.name}': {folder}: folder does not exist")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise RecyclerError(f"checkpoint '{ref.name}': {config_path}: config.json is missing")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise RecyclerError(f"checkpoint '{ref.name}': {config_path}: not valid JSON ({error.msg})") from None

    if (folder / INDEX_FILE).is_file():
        weight_map = _read_weight_map(ref.name, folder)
        tensors: dict[str, TensorInfo] = {}
        for file in sorted(set(weight_map.values())):
            if not file.is_file():
                raise RecyclerError(f"checkpoint '{ref.name}': {file}: shard named in {INDEX_FILE} is missing")
            tensors.update(_read_header(ref.name, file))
        for key, file in weight_map.items():
            if key not in tensors or tensors[key].file != file:
                raise RecyclerError(f"checkpoint '{ref.name}': {file}: tensor '{key}' named in {INDEX_FILE} is not in this shard")
    elif (folder / WEIGHTS_FILE).is_file():
        tensors = _read_header(ref.name, folder / WEIGHTS_FILE)
    else:
        raise RecyclerError(f"checkpoint '{ref.name}': {folder}: no {WEIGHTS_FILE} or {INDEX_FILE}")
    if not tensors:
        raise RecyclerError(f"checkpoint '{ref.name}': {folder}: holds no tensors")
    return Checkpoint(name=ref.name, path=folder, config=config, tensors=tensors)


def _architecture(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in CONFIG_KEYS_IGNORED}


def _vocabulary(checkpoint: Checkpoint) -> dict[str, int]:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(checkpoint.path)).get_vocab()
    except (OSError, ValueError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RecyclerError(f"checkpoint '{checkpoint.name}': {checkpoint.path}: tokenizer cannot be loaded ({first_line})") from None


def _check_same(reference: Checkpoint, other: Checkpoint) -> None:
    where = f"checkpoint '{other.name}' ({other.path})"
    ref_arch, other_arch = _architecture(reference.config), _architecture(other.config)
    for key in sorted(set(ref_arch) | set(other_arch)):
        if ref_arch.get(key) != other_arch.get(key):
            raise RecyclerError(
                f"{where}: config.json '{key}' is {other_arch.get(key)!r}, "
                f"but {ref_arch.get(key)!r} in checkpoint '{reference.name}'"
            )
    for key in sorted(reference.tensors):
        if key not in other.tensors:
            raise RecyclerError(f"{where}: tensor '{key}' is missing (present in checkpoint '{reference.name}')")
    for key in sorted(other.tensors):
        if key not in reference.tensors:
            raise RecyclerError(f"{where}: tensor '{key}' is not in checkpoint '{reference.name}'")
        mine, theirs = other.tensors[key], reference.tensors[key]
        if mine.shape != theirs.shape:
            raise RecyclerError(
                f"{where}: tensor '{key}' has shape {list(mine.shape)}, "
                f"but {list(theirs.shape)} in checkpoint '{reference.name}'"
            )
        if mine.dtype != theirs.dtype:
            raise RecyclerError(
                f"{where}: tensor '{key}' has dtype {mine.dtype}, but {theirs.dtype} in checkpoint '{reference.name}'"
            )


def _check_vocabularies(reference: Checkpoint, others: list[Checkpoint]) -> None:
    expected = _vocabulary(reference)
    for other in others:
        vocab = _vocabulary(other)
        if vocab == expected:
            continue
        token = next(
            (t for t in sorted(set(vocab) | set(expected)) if vocab.get(t) != expected.get(t)),
            None,
        )
        raise RecyclerError(
            f"checkpoint '{other.name}' ({other.path}): tokenizer vocabulary differs from checkpoint "
            f"'{reference.name}' (token {token!r}: id {vocab.get(token)} vs {expected.get(token)})"
        )


@dataclass
class Pool:
    """A validated pool: the checkpoints to merge and, optionally, a base they were trained from."""

    checkpoints: list[Checkpoint]
    base: Checkpoint | None = None
    _scans: dict[Path, FileScan] | None = field(default=None, repr=False)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.checkpoints]

    @property
    def reference(self) -> Checkpoint:
        """The checkpoint whose config, tokenizer and layout the merge inherits."""
        return self.base or self.checkpoints[0]

    @property
    def members(self) -> list[Checkpoint]:
        return self.checkpoints + ([self.base] if self.base else [])

    def checkpoint(self, name: str) -> Checkpoint:
        for member in self.members:
            if member.name == name:
                return member
        raise RecyclerError(f"checkpoint '{name}' is not in the pool (has {', '.join(self.names)})")

    @property
    def tensor_names(self) -> list[str]:
        return sorted(self.reference.tensors)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype most of the pool's floating-point bytes are stored in."""
        sizes: dict[torch.dtype, int] = {}
        for info in self.reference.tensors.values():
            if info.dtype.is_floating_point:
                sizes[info.dtype] = sizes.get(info.dtype, 0) + torch.Size(info.shape).numel()
        return max(sizes, key=sizes.__getitem__)

    def rows(self, tensor_name: str) -> list[torch.Tensor]:
        """A tensor of every member (checkpoints in pool order, then the base): memory-mapped
        views of the files, so every process on a machine reads one copy, the page cache."""
        return [member.tensor(tensor_name) for member in self.members]

    @property
    def largest_tensor(self) -> int:
        """Elements of the largest floating-point tensor."""
        return max(torch.Size(i.shape).numel() for i in self.reference.tensors.values() if i.dtype.is_floating_point)

    @property
    def model_bytes(self) -> int:
        """Bytes of one checkpoint's floating-point tensors: one model's worth of memory."""
        return sum(
            torch.Size(i.shape).numel() * i.dtype.itemsize
            for i in self.reference.tensors.values()
            if i.dtype.is_floating_point
        )

    @property
    def parameter_count(self) -> int:
        return sum(torch.Size(i.shape).numel() for i in self.reference.tensors.values())

    def scans(self) -> dict[Path, FileScan]:
        """Every file's checksum and finiteness: one parallel read of the pool, or none where the
        cache knows the files (recycler/checkpoint_scan.py)."""
        if self._scans is None:
            self._scans = scan_files([file for member in self.members for file in member.files])
        return self._scans

    def check_finite(self) -> None:
        """Refuse NaN or inf in any floating tensor, naming the checkpoint and tensor."""
        for member in self.members:
            for file in member.files:
                tensor = self.scans()[file].nonfinite
                if tensor is not None:
                    raise RecyclerError(f"checkpoint '{member.name}' ({member.path}): tensor '{tensor}' holds NaN or inf")

    def fingerprint(self) -> str:
        """sha256 over tensor metadata and every file's checksum: what identifies the pool."""
        digest = hashlib.sha256()
        meta = [(k, list(i.shape), str(i.dtype)) for k, i in sorted(self.reference.tensors.items())]
        digest.update(json.dumps(meta).encode())
        for member in self.members:
            sums = [self.scans()[file].sha256 for file in member.files]
            digest.update(json.dumps([member.name, member is self.base, sums]).encode())
        return digest.hexdigest()


def load_pool(spec: PoolSpec) -> Pool:
    """Open and validate every checkpoint of a spec; the first mismatch is reported by name."""
    checkpoints = [open_checkpoint(ref) for ref in spec.checkpoints]
    base = open_checkpoint(spec.base) if spec.base else None
    pool = Pool(checkpoints=checkpoints, base=base)
    reference = pool.reference
    others = [member for member in pool.members if member is not reference]
    for other in others:
        _check_same(reference, other)
    if not any(info.dtype.is_floating_point for info in reference.tensors.values()):
        raise RecyclerError(f"checkpoint '{reference.name}': {reference.path}: holds no floating-point tensors to merge")
    _check_vocabularies(reference, others)
    return pool
