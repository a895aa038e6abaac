"""The merge engine on a GPU: resident and streamed weighted sums against the device's own
bandwidths, each reference measured in the same run, and streamed against resident for equality.

Needs torch and safetensors only (a GPU machine may have nothing else); builds its own pool of
random Llama-shaped checkpoints in its page cache. Prints one JSON document.

    python scripts/gpu_check.py --checkpoints 8 --layers 16 --hidden 2048 --out gpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recycler.residency import ResidentRows, StreamedRows, WeightedSum  # noqa: E402  (torch alone)


def llama_shapes(layers: int, hidden: int, vocab: int) -> dict[str, tuple[int, ...]]:
    inter = hidden * 11 // 4
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden)}
    for i in range(layers):
        for part in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"model.layers.{i}.self_attn.{part}.weight"] = (hidden, hidden)
        for part, shape in (("gate_proj", (inter, hidden)), ("up_proj", (inter, hidden)), ("down_proj", (hidden, inter))):
            shapes[f"model.layers.{i}.mlp.{part}.weight"] = shape
        shapes[f"model.layers.{i}.input_layernorm.weight"] = (hidden,)
    return shapes


def build_pool(folder: Path, count: int, shapes: dict[str, tuple[int, ...]], dtype: torch.dtype) -> list[Path]:
    files = []
    for i in range(count):
        generator = torch.Generator(device="cuda").manual_seed(i)
        tensors = {n: torch.randn(s, generator=generator, device="cuda", dtype=torch.float32).to(dtype).cpu() for n, s in shapes.items()}
        files.append(folder / f"ckpt{i}.safetensors")
        save_file(tensors, files[-1])
    return files


def seconds(action: Callable[[], None], repeats: int = 3) -> float:
    action()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def references(size: int = 1 << 31) -> dict[str, float]:
    """Device memory bandwidth (a device-to-device copy: bytes read plus written per second) and
    pinned host-to-device bandwidth, in GB/s."""
    source = torch.empty(size, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
    d2d = seconds(lambda: target.copy_(source))
    h2d = seconds(lambda: target.copy_(host, non_blocking=True))
    with tempfile.NamedTemporaryFile() as file:  # host memory: page cache into pinned memory, one copy
        save_file({"x": torch.ones(size, dtype=torch.uint8)}, file.name)
        mapped = safe_open(file.name, framework="pt").get_tensor("x")
        cache_to_pinned = seconds(lambda: host.copy_(mapped))
    return {"device_copy_GBps": 2 * size / d2d / 1e9, "pinned_h2d_GBps": size / h2d / 1e9,
            "page_cache_to_pinned_GBps": size / cache_to_pinned / 1e9}


def engine(files: list[Path], shapes: dict[str, tuple[int, ...]], dtype: torch.dtype, streamed: bool):
    handles = [safe_open(str(f), framework="pt") for f in files]
    source = lambda name: [h.get_tensor(name) for h in handles]  # noqa: E731  (memory-mapped views)
    sizes = {n: torch.Size(s) for n, s in shapes.items()}
    kind = StreamedRows if streamed else ResidentRows
    return kind(source, sizes, len(files), dtype, torch.device("cuda"))


def timed_engine(files, shapes, dtype, sums, streamed: bool) -> float:
    rows = engine(files, shapes, dtype, streamed)
    return seconds(lambda: rows.weighted_sums(sums))


def measure(files, shapes, dtype, coefficients) -> dict[str, float]:
    outputs = {n: torch.empty(s, dtype=dtype, device="cuda") for n, s in shapes.items()}
    sums = [WeightedSum(n, coefficients, out) for n, out in outputs.items()]
    model_bytes = sum(o.numel() * o.element_size() for o in outputs.values())
    result: dict[str, float] = {"checkpoints": len(files), "model_GB": model_bytes / 1e9}
    t = timed_engine(files, shapes, dtype, sums, streamed=False)
    result["resident_s"] = t
    result["resident_traffic_GBps"] = (len(files) + 1) * model_bytes / t / 1e9  # rows read, model written
    big = max(outputs, key=lambda n: outputs[n].numel())  # one large tensor: the kernel without per-tensor overhead
    t_big = timed_engine(files, {big: shapes[big]}, dtype, [s for s in sums if s.name == big], streamed=False)
    result["resident_one_tensor_traffic_GBps"] = (len(files) + 1) * outputs[big].numel() * outputs[big].element_size() / t_big / 1e9
    reference = {n: o.clone() for n, o in outputs.items()}
    torch.cuda.empty_cache()
    t = timed_engine(files, shapes, dtype, sums, streamed=True)
    result["streamed_s"] = t
    result["streamed_h2d_GBps"] = len(files) * model_bytes / t / 1e9  # rows moved host to device
    result["streamed_equals_resident"] = all(torch.equal(reference[n], outputs[n]) for n in outputs)
    result["max_abs_difference"] = max(float((reference[n].float() - outputs[n].float()).abs().max()) for n in outputs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--out", type=Path, help="write the JSON here as well")
    args = parser.parse_args()
    torch.set_num_threads(min(16, torch.get_num_threads()))
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, **references()}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in (torch.float32, torch.bfloat16):
            folder = Path(tmp) / str(dtype)
            folder.mkdir()
            shapes = llama_shapes(args.layers, args.hidden, args.vocab)
            started = time.perf_counter()
            files = build_pool(folder, args.checkpoints, shapes, dtype)
            coefficients = [1.0 / args.checkpoints] * args.checkpoints
            entry = {"build_s": time.perf_counter() - started, **measure(files, shapes, dtype, coefficients)}
            entry["resident_of_device_bandwidth"] = entry["resident_traffic_GBps"] / report["device_copy_GBps"]
            entry["one_tensor_of_device_bandwidth"] = entry["resident_one_tensor_traffic_GBps"] / report["device_copy_GBps"]
            entry["streamed_of_pinned_h2d"] = entry["streamed_h2d_GBps"] / report["pinned_h2d_GBps"]
            report[str(dtype).removeprefix("torch.")] = entry
            print(json.dumps({str(dtype): entry}), flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
