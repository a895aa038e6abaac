"""The merge engine on a GPU: resident, hybrid and streamed weighted sums against the device's own
bandwidths, each reference measured in the same run, and streamed and hybrid against resident for
equality; the streamed path's stages timed apart; the whole pool as one flat buffer, one kernel
launch per candidate (a lead for resident bfloat16); several processes streaming at once, as the
workers of a node's GPUs share its host memory; and one whole trial (a bf16 Llama merged on the
device, then a forward pass) against the same merge and forward pass on the CPU.

Needs torch, safetensors and transformers only (a GPU machine may have nothing else); builds its
own pool of random Llama-shaped checkpoints in its page cache. Prints one JSON document.

    python scripts/gpu_check.py --checkpoints 8 --layers 16 --hidden 2048 --processes 8 --out gpu.json
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
from recycler.residency import (  # noqa: E402  (torch alone)
    HybridRows,
    ResidentRows,
    StreamedRows,
    WeightedSum,
    weighted_sum_into,
)


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


def engine(files: list[Path], shapes: dict[str, tuple[int, ...]], dtype: torch.dtype, residency: str):
    """Rows of the pool on the GPU: 'resident', 'streamed', or 'hybrid' (the smaller tensors, half
    the bytes, stacked; the rest streamed, as a budget between the two gives)."""
    handles = [safe_open(str(f), framework="pt") for f in files]
    source = lambda name: [h.get_tensor(name) for h in handles]  # noqa: E731  (memory-mapped views)
    sizes = {n: torch.Size(s) for n, s in shapes.items()}
    device = torch.device("cuda")
    if residency != "hybrid":
        return (StreamedRows if residency == "streamed" else ResidentRows)(source, sizes, len(files), dtype, device)
    stacked, total, room = {}, sum(s.numel() for s in sizes.values()), 0
    for name in sorted(sizes, key=lambda n: (sizes[n].numel(), n)):
        if room + sizes[name].numel() > total // 2:
            break
        room += sizes[name].numel()
        stacked[name] = sizes[name]
    streamed = {n: s for n, s in sizes.items() if n not in stacked}
    return HybridRows(ResidentRows(source, stacked, len(files), dtype, device), StreamedRows(source, streamed, len(files), dtype, device))


def timed_engine(files, shapes, dtype, sums, residency: str) -> float:
    rows = engine(files, shapes, dtype, residency)
    return seconds(lambda: rows.weighted_sums(sums))


def measure(files, shapes, dtype, coefficients) -> dict[str, float]:
    outputs = {n: torch.empty(s, dtype=dtype, device="cuda") for n, s in shapes.items()}
    sums = [WeightedSum(n, coefficients, out) for n, out in outputs.items()]
    model_bytes = sum(o.numel() * o.element_size() for o in outputs.values())
    result: dict[str, float] = {"checkpoints": len(files), "model_GB": model_bytes / 1e9}
    t = timed_engine(files, shapes, dtype, sums, "resident")
    result["resident_s"] = t
    result["resident_traffic_GBps"] = (len(files) + 1) * model_bytes / t / 1e9  # rows read, model written
    big = max(outputs, key=lambda n: outputs[n].numel())  # one large tensor: the kernel without per-tensor overhead
    t_big = timed_engine(files, {big: shapes[big]}, dtype, [s for s in sums if s.name == big], "resident")
    result["resident_one_tensor_traffic_GBps"] = (len(files) + 1) * outputs[big].numel() * outputs[big].element_size() / t_big / 1e9
    reference = {n: o.clone() for n, o in outputs.items()}
    torch.cuda.empty_cache()
    t = timed_engine(files, shapes, dtype, sums, "streamed")
    result["streamed_s"] = t
    result["streamed_h2d_GBps"] = len(files) * model_bytes / t / 1e9  # rows moved host to device
    result["streamed_equals_resident"] = all(torch.equal(reference[n], outputs[n]) for n in outputs)
    result["max_abs_difference"] = max(float((reference[n].float() - outputs[n].float()).abs().max()) for n in outputs)
    for n in outputs:
        outputs[n].zero_()
    torch.cuda.empty_cache()
    result["hybrid_s"] = timed_engine(files, shapes, dtype, sums, "hybrid")
    result["hybrid_equals_resident"] = all(torch.equal(reference[n], outputs[n]) for n in outputs)
    result.update(stages(files, shapes, dtype, coefficients))
    torch.cuda.empty_cache()
    result.update(flat_kernels(files, shapes, dtype, coefficients, reference))
    return result


def stages(files, shapes, dtype, coefficients) -> dict[str, float]:
    """The streamed path's stages one at a time over the whole pool, in pieces of the engine's
    chunk: page cache -> pinned (one thread per row, as the engine copies; and 8 MiB slices on a
    fixed pool of single-threaded copies, the lead for the host side), pinned -> device
    (contiguous), and the kernel on rows already on the device. Each is a rate in GB/s of rows."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import numpy

    from recycler.residency import STREAM_CHUNK

    handles = [safe_open(str(f), framework="pt") for f in files]
    rows = {n: [h.get_tensor(n).reshape(-1) for h in handles] for n in shapes}
    chunk = min(STREAM_CHUNK, max(torch.Size(s).numel() for s in shapes.values()))
    pinned = torch.empty(len(files) * chunk, dtype=dtype, pin_memory=True)
    staged = torch.empty(len(files) * chunk, dtype=dtype, device="cuda")
    out = torch.empty(chunk, dtype=dtype, device="cuda")
    vector = torch.tensor(coefficients, dtype=torch.float32, device="cuda")
    pieces = [(n, start, min(start + chunk, torch.Size(s).numel())) for n, s in shapes.items()
              for start in range(0, torch.Size(s).numel(), chunk)]
    copiers = ThreadPoolExecutor(max_workers=len(files))
    total = len(files) * sum(torch.Size(s).numel() for s in shapes.values()) * dtype.itemsize

    def to_pinned() -> None:
        for name, start, end in pieces:
            host = pinned[: len(files) * (end - start)].view(len(files), end - start)
            list(copiers.map(lambda r: host[r].copy_(rows[name][r][start:end]), range(len(files))))

    slice_bytes = 8 << 20
    slicers = ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1))
    pinned_bytes = pinned.view(torch.uint8).numpy()

    def to_pinned_sliced() -> None:
        """The loaders' design (fastsafetensors' host bounce, kvikio's POSIX path): fixed-size byte
        slices, each one single-threaded memcpy (numpy's, which releases the GIL), on a fixed pool."""
        jobs = []
        for name, start, end in pieces:
            width = (end - start) * dtype.itemsize
            for r in range(len(files)):
                source = rows[name][r][start:end].view(torch.uint8).numpy()
                for offset in range(0, width, slice_bytes):
                    at = r * width + offset
                    jobs.append((pinned_bytes[at:at + min(slice_bytes, width - offset)], source[offset:offset + slice_bytes]))
            list(slicers.map(lambda job: numpy.copyto(*job), jobs))
            jobs.clear()

    def to_device() -> None:
        for name, start, end in pieces:
            n = len(files) * (end - start)
            staged[:n].copy_(pinned[:n], non_blocking=True)

    def kernel() -> None:
        for name, start, end in pieces:
            block = staged[: len(files) * (end - start)].view(len(files), end - start)
            weighted_sum_into(out[: end - start], vector, list(block))

    return {f"stage_{label}_GBps": total / seconds(action) / 1e9
            for label, action in (("page_cache_to_pinned", to_pinned), ("page_cache_to_pinned_sliced", to_pinned_sliced),
                                  ("pinned_to_device", to_device), ("kernel", kernel))}


def _flat_indexed_sum(out: torch.Tensor, pool: torch.Tensor, index: torch.Tensor, coefficients: torch.Tensor) -> None:
    out.copy_((pool[index].to(coefficients.dtype) * coefficients[:, None]).sum(0))


def flat_kernels(files, shapes, dtype, coefficients, reference: dict[str, torch.Tensor], device: str = "cuda") -> dict[str, float]:
    """The lead for resident bfloat16, not yet in the engine: the pool as one flat (rows, parameters)
    buffer and the merge as one flat buffer, so a candidate is one kernel launch, not one per tensor.
    Two kernels: the engine's own over the flat rows (specialized to the number of rows), and a
    gather-and-reduce with the rows' indices and coefficients as device tensors (compiled once for
    any number). Each as traffic in GB/s (rows read, merge written), with its equality to the
    engine's per-tensor result (`reference`)."""
    handles = [safe_open(str(f), framework="pt") for f in files]
    numels = {n: torch.Size(s).numel() for n, s in shapes.items()}
    total = sum(numels.values())
    pool = torch.empty((len(files), total), dtype=dtype, device=device)
    offset = 0
    for name, numel in numels.items():
        for i, handle in enumerate(handles):
            pool[i, offset:offset + numel].copy_(handle.get_tensor(name).reshape(-1))
        offset += numel
    expected = torch.cat([reference[n].reshape(-1) for n in numels])
    out = torch.empty(total, dtype=dtype, device=device)
    vector = torch.tensor(coefficients, dtype=torch.float32, device=device)
    traffic = (len(files) + 1) * total * dtype.itemsize
    result: dict[str, float] = {}
    t = seconds(lambda: weighted_sum_into(out, vector, list(pool.unbind(0))))
    result["flat_unrolled_traffic_GBps"] = traffic / t / 1e9
    result["flat_unrolled_equals_resident"] = torch.equal(out, expected)
    indexed = torch.compile(_flat_indexed_sum, dynamic=True)
    index = torch.arange(len(files), device=device)
    t = seconds(lambda: indexed(out, pool, index, vector))
    result["flat_indexed_traffic_GBps"] = traffic / t / 1e9
    result["flat_indexed_max_abs_difference"] = float((out.float() - expected.float()).abs().max())
    fewer = index[: max(1, len(files) // 2)]  # another number of rows: the same compiled kernel
    t = seconds(lambda: indexed(out, pool, fewer, vector[: len(fewer)]))
    result["flat_indexed_half_rows_traffic_GBps"] = (len(fewer) + 1) * total * dtype.itemsize / t / 1e9
    return result


def _stream_in_process(files, shapes, dtype, coefficients, repeats, start, results) -> None:
    """One of several processes: a streamed engine of its own over the shared files, `repeats`
    candidates once every process is ready (`start`), its seconds put on `results`."""
    outputs = {n: torch.empty(s, dtype=dtype, device="cuda") for n, s in shapes.items()}
    rows = engine(files, shapes, dtype, "streamed")
    sums = [WeightedSum(n, coefficients, out) for n, out in outputs.items()]
    rows.weighted_sums(sums)  # warm-up: compile, page tables
    torch.cuda.synchronize()
    start.wait(timeout=300)
    began = time.perf_counter()
    for _ in range(repeats):
        rows.weighted_sums(sums)
    torch.cuda.synchronize()
    results.put(time.perf_counter() - began)


def concurrent_streaming(files, shapes, dtype, coefficients, processes: int, repeats: int = 3) -> dict[str, float]:
    """`processes` workers streaming candidates at once from one host's page cache (on one GPU, as
    the workers of 8 GPUs would share the host's memory bandwidth): the aggregate host rate."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    start, results = context.Barrier(processes + 1), context.Queue()
    workers = [context.Process(target=_stream_in_process, args=(files, shapes, dtype, coefficients, repeats, start, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:  # a process that fails before the barrier (out of memory, a compile error) must not hang the run
        start.wait(timeout=300)
        began = time.perf_counter()
        times = [results.get(timeout=300) for _ in workers]
    except Exception as error:  # threading.BrokenBarrierError, queue.Empty
        for worker in workers:
            worker.kill()
        return {"processes": processes, "failed": f"{type(error).__name__}: {error}",
                "exit_codes": [worker.exitcode for worker in workers]}
    wall = time.perf_counter() - began
    for worker in workers:
        worker.join()
    streamed = processes * repeats * len(files) * sum(torch.Size(s).numel() for s in shapes.values()) * dtype.itemsize
    return {"processes": processes, "aggregate_host_GBps": streamed / wall / 1e9, "slowest_process_s": max(times)}


def whole_trial(checkpoints: int, layers: int, hidden: int) -> dict[str, float]:
    """One trial as a GPU worker runs it: a bf16 Llama pool merged into a model on the device
    (streamed), then a forward pass over a fixed batch; the same merge and forward pass on the CPU
    (stacked) for comparison."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
                         num_attention_heads=hidden // 128, num_key_value_heads=hidden // 128, tie_word_embeddings=False)
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        base = LlamaForCausalLM(config).to(torch.bfloat16).state_dict()
        files = []
        for i in range(checkpoints):
            generator = torch.Generator().manual_seed(i + 1)
            tensors = {n: (t.float() + 0.01 * torch.randn(t.shape, generator=generator)).to(torch.bfloat16).contiguous()
                       for n, t in base.items()}
            files.append(Path(tmp) / f"c{i}.safetensors")
            save_file(tensors, files[-1])
        shapes = {n: tuple(t.shape) for n, t in base.items()}
        coefficients = [1.0 / checkpoints] * checkpoints
        batch = torch.randint(0, config.vocab_size, (8, 128), generator=torch.Generator().manual_seed(0))
        logits = {}
        for device in ("cuda", "cpu"):
            model = LlamaForCausalLM(config).to(torch.bfloat16).to(device).eval()
            handles = [safe_open(str(f), framework="pt") for f in files]
            source = lambda name: [h.get_tensor(name) for h in handles]  # noqa: E731
            sizes = {n: torch.Size(s) for n, s in shapes.items()}
            kind = StreamedRows if device == "cuda" else ResidentRows
            rows = kind(source, sizes, checkpoints, torch.bfloat16, torch.device(device))
            parameters = dict(model.named_parameters())
            sums = [WeightedSum(n, coefficients, parameters[n].data) for n in shapes if n in parameters]
            with torch.no_grad():
                rows.weighted_sums(sums)  # warm-up: the kernel's compile and first calls are not the trial's
                if device == "cuda":
                    torch.cuda.synchronize()
                began = time.perf_counter()
                rows.weighted_sums(sums)
                if device == "cuda":
                    torch.cuda.synchronize()
                result[f"{device}_merge_s"] = time.perf_counter() - began
                began = time.perf_counter()
                logits[device] = model(batch.to(device)).logits.float().cpu()
                result[f"{device}_forward_s"] = time.perf_counter() - began
        result["logits_max_abs_difference"] = float((logits["cuda"] - logits["cpu"]).abs().max())
        result["top1_agreement"] = float((logits["cuda"].argmax(-1) == logits["cpu"].argmax(-1)).float().mean())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--processes", type=int, default=8, help="processes streaming at once (0: skip)")
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
            entry["streamed_of_page_cache_to_pinned"] = entry["streamed_h2d_GBps"] / report["page_cache_to_pinned_GBps"]
            for kernel in ("flat_unrolled", "flat_indexed", "flat_indexed_half_rows"):
                entry[f"{kernel}_of_device_bandwidth"] = entry[f"{kernel}_traffic_GBps"] / report["device_copy_GBps"]
            if args.processes and dtype == torch.bfloat16:
                entry["concurrent"] = concurrent_streaming(files, shapes, dtype, coefficients, args.processes)
            report[str(dtype).removeprefix("torch.")] = entry
            print(json.dumps({str(dtype): entry}), flush=True)
    report["whole_trial"] = whole_trial(args.checkpoints, layers=8, hidden=1024)
    print(json.dumps({"whole_trial": report["whole_trial"]}), flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
