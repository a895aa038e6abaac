"""One read of each checkpoint file: its sha256 and its floating tensors' finiteness, cached."""

import hashlib
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from recycler import checkpoint_scan
from recycler.checkpoint_scan import CACHE_FILE, scan_file, scan_files
from recycler.demo.tiny import write_pool
from recycler.errors import RecyclerError
from recycler.files import cache_dir, write_text_atomic
from recycler.pool import load_pool
from recycler.spec import load_spec

TENSORS = {  # every dtype a pool holds, odd sizes, and an integer tensor that is never checked
    "a": torch.randn(1001, dtype=torch.bfloat16), "b": torch.arange(7), "c": torch.randn(3, 5),
    "d": torch.randn(33, dtype=torch.float16), "e": torch.randn(4, dtype=torch.float64),
}


def write(path, changes=None):
    tensors = {name: tensor.clone() for name, tensor in TENSORS.items()}
    for name, (index, value) in (changes or {}).items():
        tensors[name].view(-1)[index] = value
    save_file(tensors, path, metadata={"format": "pt"})
    return path


@pytest.mark.parametrize("piece_bytes", [64 << 20, 64, 6])  # pieces cut inside tensors, even inside an F64 element's span
def test_one_read_gives_the_files_sha256_and_its_first_nonfinite_tensor(tmp_path, monkeypatch, piece_bytes):
    monkeypatch.setattr(checkpoint_scan, "PIECE_BYTES", piece_bytes)
    for name, changes in [("clean", {}), ("nan", {"d": (32, float("nan"))}), ("inf", {"a": (1000, float("-inf"))}),
                          ("both", {"c": (0, float("inf")), "e": (3, float("nan"))})]:
        path = write(tmp_path / f"{name}.safetensors", changes)
        scan = scan_file(path)
        assert scan.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        bad = [n for n, t in load_file(path).items() if t.is_floating_point() and not torch.isfinite(t).all()]
        offsets = {n: i["data_offsets"][0] for n, i in json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")]).items()
                   if n != "__metadata__"}
        assert scan.nonfinite == (min(bad, key=offsets.__getitem__) if bad else None), name


def test_scans_are_cached_by_path_size_and_mtime_so_a_restart_reads_no_tensor(tmp_path, monkeypatch):
    monkeypatch.setenv("RECYCLER_CACHE", str(tmp_path / "cache"))
    path = write(tmp_path / "weights.safetensors")
    first = scan_files([path])[path]
    assert first.nonfinite is None
    stamp = path.stat()
    write(path, {"c": (2, float("nan"))})  # same size; the old mtime put back: a cached verdict says finite
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert scan_files([path])[path] == first  # not read again
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000))
    again = scan_files([path])[path]
    assert again.nonfinite == "c" and again.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_unreadable_cache_only_costs_a_new_read(tmp_path, monkeypatch):
    monkeypatch.setenv("RECYCLER_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / CACHE_FILE).write_text("{not json")
    path = write(tmp_path / "weights.safetensors")
    assert scan_files([path])[path].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    entry = json.loads((tmp_path / "cache" / CACHE_FILE).read_text())[str(path.resolve())]
    write_text_atomic(cache_dir() / CACHE_FILE, json.dumps({str(path.resolve()): {**entry, "sha256": "from the cache"}}))
    assert scan_files([path])[path].sha256 == "from the cache"


def test_a_fifo_in_place_of_a_weight_file_is_refused_without_blocking(tmp_path, monkeypatch):
    monkeypatch.setenv("RECYCLER_CACHE", str(tmp_path / "cache"))
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(RecyclerError, match="checkpoint file: .*model.safetensors is not a regular file"):
        scan_files([fifo])
    assert not (tmp_path / "cache" / CACHE_FILE).exists()  # nothing cached of it


def test_a_pool_is_read_once_for_its_fingerprint_and_its_nan_check(tmp_path, monkeypatch):
    monkeypatch.setenv("RECYCLER_CACHE", str(tmp_path / "cache"))
    spec = load_spec(write_pool(tmp_path, 3))
    pool = load_pool(spec)
    pool.check_finite()
    sums = {str(file.resolve()): hashlib.sha256(file.read_bytes()).hexdigest() for m in pool.members for file in m.files}
    cached = json.loads((tmp_path / "cache" / CACHE_FILE).read_text())
    assert {key: entry["sha256"] for key, entry in cached.items()} == sums and all(e["nonfinite"] is None for e in cached.values())
    assert load_pool(spec).fingerprint() == pool.fingerprint()
    file = tmp_path / "ckpt1" / "model.safetensors"
    tensors = load_file(file)
    tensors["transformer.h.0.attn.c_proj.weight"][0, 0] = float("nan")
    save_file(tensors, file, metadata={"format": "pt"})
    with pytest.raises(RecyclerError, match="checkpoint 'c1' .*tensor 'transformer.h.0.attn.c_proj.weight' holds NaN or inf"):
        load_pool(spec).check_finite()
