"""Benchmark: the time a normal request takes while the worst attack of each class is in flight.

The scene is the one tests/test_service_hostile.py builds: a tiny pool of 3 checkpoints (the only
allowed root) with a suite (`suite/`). The real service (`create_app`, `runner=False`, so nothing
runs a study) is served by uvicorn on a free localhost port: by default in a forked child process,
so the clients here do not share its GIL and an attack still in flight when the window ends can be
cut by killing it; `--mode thread` serves it from a thread of this process instead (the clients
then compete with the service for the GIL, which inflates every time). Per scenario a fresh service
(its own data folder) is started, then:
  - `--attackers` threads each send one hostile `POST /api/studies` after another, for the whole
    measuring window (each attack's spec points at a suite folder of its own, `pool/evil_<name>/`,
    or a checkpoint folder of its own, so the normal submission stays valid);
  - this thread sends `--requests` normal `GET /api/studies` and as many normal, valid
    `POST /api/studies` of the untouched spec (alternating), each timed from send to answer.
The window ends after `--requests` pairs or `--window` seconds (whichever first); the attackers then
finish the request they are in and stop (process mode: within `--drain` seconds, else the service
is killed and those attacks are reported as unanswered, with how long they had run). Reported per
scenario: the attacks' own answer time (median), their status codes, and the normal requests'
median and max, against the baseline (no attack) of the same run. Each attack is expected to be
refused (403/422); one that is accepted (201) is named below the table.

    .venv/bin/python scripts/bench_hostile.py [--requests 20] [--attackers 4] [--window 10] [--files 10000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recycler.demo.tiny import write_pool  # noqa: E402
from recycler.service import ServiceConfig, create_app  # noqa: E402
from recycler.yaml_files import MAX_YAML_BYTES  # noqa: E402
from tests.suites import write_suite  # noqa: E402
from tests.test_service_hostile import BILLION_LAUGHS, EVIL  # noqa: E402

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Scene:
    """The pool (the only allowed root), the untouched spec, and a marker task code would write."""

    def __init__(self, base: Path, files: int) -> None:
        self.base = base
        self.pool = base / "pool"
        self.marker = base / "marker"
        self.files = files
        self.spec = yaml.safe_load(write_pool(self.pool, 3).read_text())
        write_suite(self.pool / "suite")
        self.spec.update(suite="suite/suite.yaml",
                         search={"space": "simplex", "trials": 4, "sampler": "RandomSampler", "seed": 1},
                         resources={"workers": 1})

    def body(self, **change: object) -> dict:
        return {"spec": {**self.spec, **change}, "root": str(self.pool)}

    def evil_suite(self, name: str, extra: str = "") -> tuple[Path, dict]:
        """A suite folder of the attack's own (pool/evil_<name>), sums.yaml with `extra` appended;
        returns its task folder and the spec change that submits it."""
        folder = self.pool / f"evil_{name}"
        write_suite(folder)
        tasks = folder / "tasks"
        if extra:
            with open(tasks / "sums.yaml", "a") as sums:
                sums.write(extra)
        return tasks, {"suite": f"evil_{name}/suite.yaml"}


def _many_files(folder: Path, count: int, suffix: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"f{i:05d}{suffix}").write_text(text)


def _yaml_of_size(tasks: Path, size: int, body: Callable[[int], str]) -> None:
    """sums.yaml grown to exactly `size` bytes by a last key whose text `body(n)` is n bytes long."""
    sums = tasks / "sums.yaml"
    head = sums.read_bytes()
    sums.write_bytes(head + body(size - len(head)).encode())
    assert sums.stat().st_size == size, sums.stat().st_size


def _scalar(n: int) -> str:  # `description: 'xxxx…'\n`, n bytes
    return "description: '" + "x" * (n - len("description: ''\n")) + "'\n"


def _dense(n: int) -> str:  # `metadata: [0,0,…,0]\n`, n bytes: a node every 2 bytes (the parser's worst)
    inner = n - len("metadata: []\n")
    items = (inner + 1) // 2
    text = ",".join(["0"] * items)
    text = text if len(text) == inner else text + " "  # pad to the exact size
    return f"metadata: [{text}]\n"


# Each attack: (class, label, make(scene) -> the spec change it submits).
def _alias(s: Scene) -> dict:
    return s.evil_suite("alias", BILLION_LAUGHS)[1]


def _fifo(s: Scene) -> dict:
    tasks, change = s.evil_suite("fifo")
    os.mkfifo(tasks / "stuck.yaml")
    return change


def _size(name: str, size: int, body: Callable[[int], str]) -> Callable[[Scene], dict]:
    def make(s: Scene) -> dict:
        tasks, change = s.evil_suite(name)
        _yaml_of_size(tasks, size, body)
        return change
    return make


def _code(s: Scene) -> dict:
    tasks, change = s.evil_suite("code", "process_docs: !function evil.process\n")
    (tasks / "evil.py").write_text(EVIL.format(marker=str(s.marker)))
    return change


def _hostname(s: Scene) -> dict:
    return s.evil_suite("hostname", "dataset_kwargs:\n  data_files:\n    test: /etc/hostname\n")[1]


def _glob(matching: bool) -> Callable[[Scene], dict]:
    def make(s: Scene) -> dict:
        name = "glob" if matching else "globwalk"
        tasks, change = s.evil_suite(name, "dataset_kwargs:\n  data_files:\n    test: data/**/*.jsonl\n")
        row = json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n"
        _many_files(tasks / "data" / "many", s.files, ".jsonl" if matching else ".txt", row)
        return change
    return make


def _checkpoint(s: Scene) -> dict:
    folder = s.pool / "ckpt_many"
    shutil.copytree(s.pool / "ckpt1", folder)
    _many_files(folder, s.files, ".extra", "x")
    return {"checkpoints": [s.spec["checkpoints"][0], {"name": "c1", "path": "ckpt_many"}, s.spec["checkpoints"][2]]}


ATTACKS: list[tuple[str, str, Callable[[Scene], dict]]] = [
    ("alias", "545-byte billion laughs in sums.yaml", _alias),
    ("non-regular file", "FIFO named stuck.yaml in the task folder", _fifo),
    ("size", f"sums.yaml of {MAX_YAML_BYTES} B (the bound), one long scalar", _size("under", MAX_YAML_BYTES, _scalar)),
    ("size", f"sums.yaml of {MAX_YAML_BYTES} B (the bound), a flow list of ~512k scalars", _size("dense", MAX_YAML_BYTES, _dense)),
    ("size", f"sums.yaml of {MAX_YAML_BYTES + 1} B (bound + 1)", _size("over", MAX_YAML_BYTES + 1, _scalar)),
    ("code", "process_docs: !function evil.process", _code),
    ("files outside", "data_files: /etc/hostname", _hostname),
    ("files (glob)", "data_files data/**/*.jsonl over {files} matching .jsonl files", _glob(True)),
    ("files (glob)", "data_files data/**/*.jsonl over {files} non-matching .txt files", _glob(False)),
    ("checkpoint", "checkpoint folder with {files} extra files", _checkpoint),
]


@dataclass
class Result:
    label: str
    kind: str = ""
    get: list[float] = field(default_factory=list)
    post: list[float] = field(default_factory=list)
    post_status: set[int] = field(default_factory=set)
    attack: list[float] = field(default_factory=list)
    attack_status: dict[str, int] = field(default_factory=dict)
    attack_detail: str = ""
    cut: list[float] = field(default_factory=list)  # attacks still unanswered when the service was killed
    window: float = 0.0
    drain: float = 0.0


def _server(scene: Scene, data: Path, port: int) -> uvicorn.Server:
    app = create_app(ServiceConfig(data=data, roots=[scene.pool], token=TOKEN, runner=False))
    return uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", timeout_graceful_shutdown=5))


def _serve(scene: Scene, data: Path, port: int) -> None:
    _server(scene, data, port).run()


class Service:
    """The real app under uvicorn on a free localhost port: in a thread of this process (`thread`:
    the clients share the service's GIL), or in a forked child process of its own (`process`: the
    clients do not, and requests still in flight when the window ends are cut by killing it)."""

    def __init__(self, scene: Scene, data: Path, mode: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.mode = mode
        if mode == "thread":
            self.server = _server(scene, data, self.port)
            self.runner = threading.Thread(target=self.server.run, daemon=True)
        else:
            self.runner = multiprocessing.get_context("fork").Process(target=_serve, args=(scene, data, self.port), daemon=True)

    def _up(self) -> bool:
        if self.mode == "thread":
            return self.server.started
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/api/studies", headers=AUTH, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def __enter__(self) -> Service:
        self.runner.start()
        deadline = time.monotonic() + 60
        while not self._up():
            if time.monotonic() > deadline or not self.runner.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def kill(self) -> None:
        """Ends the service now, requests in flight included (process mode only)."""
        if self.mode == "process" and self.runner.is_alive():
            self.runner.kill()
            self.runner.join()

    def __exit__(self, *_: object) -> None:
        if self.mode == "thread":
            self.server.should_exit = True
            self.runner.join(timeout=15)
        else:
            self.kill()


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers=AUTH, timeout=120)


def scenario(scene: Scene, label: str, change: dict | None, args: argparse.Namespace, index: int) -> Result:
    result = Result(label)
    data = scene.base / f"data-{index}"
    with Service(scene, data, args.mode) as service, _client(service.url) as client:
        url = service.url
        normal = scene.body()
        # warm-up (not counted): the first request of a fresh app
        client.get("/api/studies")
        assert client.post("/api/studies", json=normal).status_code == 201
        stop, killed = threading.Event(), threading.Event()
        lock = threading.Lock()

        def attack() -> None:
            with _client(url) as own:
                body = scene.body(**change)
                while not stop.is_set():
                    started = time.perf_counter()
                    try:
                        response = own.post("/api/studies", json=body)
                        status, detail = str(response.status_code), response.json().get("detail", "accepted (201)")
                    except Exception as error:  # noqa: BLE001  (a timeout is a result here)
                        status, detail = type(error).__name__, str(error)
                    elapsed = time.perf_counter() - started
                    with lock:
                        if killed.is_set():  # cut when the window ended: not an answer
                            result.cut.append(elapsed)
                            return
                        result.attack.append(elapsed)
                        result.attack_status[status] = result.attack_status.get(status, 0) + 1
                        result.attack_detail = result.attack_detail or str(detail)[:160]

        attackers = [threading.Thread(target=attack, daemon=True) for _ in range(args.attackers if change else 0)]
        for thread in attackers:
            thread.start()
        time.sleep(0.3 if attackers else 0)  # the attacks in flight before the first normal request
        window_start = time.perf_counter()
        for _ in range(args.requests):
            started = time.perf_counter()
            response = client.get("/api/studies")
            result.get.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            started = time.perf_counter()
            response = client.post("/api/studies", json=normal)
            result.post.append(time.perf_counter() - started)
            result.post_status.add(response.status_code)
            if time.perf_counter() - window_start > args.window and len(result.get) >= 3:
                break
        result.window = time.perf_counter() - window_start
        stop.set()
        drain_start = time.perf_counter()
        for thread in attackers:
            thread.join(timeout=None if args.mode == "thread" else max(0.0, args.drain - (time.perf_counter() - drain_start)))
        if any(thread.is_alive() for thread in attackers):
            killed.set()
            service.kill()
            for thread in attackers:
                thread.join()
        result.drain = time.perf_counter() - drain_start
    shutil.rmtree(data, ignore_errors=True)
    return result


def solo(scene: Scene, changes: list[tuple[str, str, dict]], args: argparse.Namespace) -> None:
    """Each attack once on an idle service (a fresh one each), up to 120 s."""
    print(f"machine: nproc {len(os.sched_getaffinity(0))}, Python {platform.python_version()}, load average "
          f"{os.getloadavg()[0]:.1f}; each attack sent once, alone")
    print()
    print("| class | attack | answer | time | detail |")
    print("|---|---|---|---|---|")
    for i, (kind, label, change) in enumerate(changes, 1):
        with Service(scene, scene.base / f"solo-{i}", args.mode) as service, _client(service.url) as client:
            started = time.perf_counter()
            try:
                response = client.post("/api/studies", json=scene.body(**change))
                status, detail = str(response.status_code), response.json().get("detail", "accepted (201)")
            except httpx.HTTPError as error:
                status, detail = type(error).__name__, str(error)
            elapsed = time.perf_counter() - started
            snapshots = scene.base / f"solo-{i}" / "suites"
            files = sum(len(f) for _, _, f in os.walk(snapshots)) if snapshots.exists() else 0
        print(f"| {kind} | {label} | {status} | {elapsed:.2f} s | {str(detail)[:120]}; {files} files in the service's suite copies |")
        shutil.rmtree(scene.base / f"solo-{i}", ignore_errors=True)


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f}" if values else "-"


def _ratio(values: list[float], base: list[float]) -> str:
    if not values or not base:
        return "-"
    return f"{statistics.median(values) / statistics.median(base):.1f}x / {max(values) / max(base):.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20, help="normal GET/POST pairs per scenario")
    parser.add_argument("--attackers", type=int, default=4, help="threads repeating the attack")
    parser.add_argument("--window", type=float, default=8.0, help="most seconds of normal requests per scenario")
    parser.add_argument("--files", type=int, default=10_000, help="extra files for the glob and checkpoint attacks")
    parser.add_argument("--only", default="", help="run only the attacks whose class or label contains this")
    parser.add_argument("--mode", choices=("process", "thread"), default="process",
                        help="the service in a child process (default) or in a thread of this one, beside the clients")
    parser.add_argument("--drain", type=float, default=5.0,
                        help="process mode: seconds the attacks in flight get after the window before the service is killed")
    parser.add_argument("--solo", action="store_true",
                        help="instead: each attack sent once, alone, to an idle service (its own time and answer)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    import logging
    logging.getLogger("recycler").setLevel(logging.ERROR)
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    try:
        scene = Scene(base, args.files)
        attacks = [(kind, label.format(files=args.files), make) for kind, label, make in ATTACKS
                   if args.only.lower() in f"{kind} {label}".lower()]
        changes = [(kind, label, make(scene)) for kind, label, make in attacks]
        if args.solo:
            solo(scene, changes, args)
            return
        results = [scenario(scene, "baseline (no attack)", None, args, 0)]
        for i, (kind, label, change) in enumerate(changes, 1):
            result = scenario(scene, label, change, args, i)
            result.kind = kind
            results.append(result)
            print(f"  done: {kind}: {label} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
        results.append(scenario(scene, "baseline again (after the attacks)", None, args, len(changes) + 1))
        marker = scene.marker.exists()
    finally:
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)

    base_result = results[0]
    print(f"machine: {platform.node()}, nproc {len(os.sched_getaffinity(0))} (cpu_count {os.cpu_count()}), "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    where = "a thread of the clients' process" if args.mode == "thread" else "a child process of its own"
    print(f"service: uvicorn {uvicorn.__version__} in {where}, 1 worker, runner off; {args.attackers} attacker threads; "
          f"up to {args.requests} normal GET+POST pairs or {args.window:.0f} s per scenario; {args.files} files for the "
          "glob and checkpoint attacks")
    print()
    print("| class | attack | attack answers | attack time (median) | GET median / max (ms) | POST median / max (ms) "
          "| GET vs baseline (median / max) | POST vs baseline (median / max) | normal pairs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        statuses = ", ".join(f"{code} x{n}" for code, n in sorted(r.attack_status.items())) or "-"
        attack_time = f"{statistics.median(r.attack) * 1000:.0f} ms" if r.attack else "-"
        if r.cut:
            statuses += f", {len(r.cut)} unanswered after {min(r.cut):.0f}-{max(r.cut):.0f} s (cut)"
            attack_time = attack_time if r.attack else f"> {min(r.cut):.0f} s"
        print(f"| {r.kind or '-'} | {r.label} | {statuses} | {attack_time} | {_ms(r.get)} | {_ms(r.post)} "
              f"| {_ratio(r.get, base_result.get)} | {_ratio(r.post, base_result.post)} | {len(r.get)} |")
    print()
    for r in results[1:-1]:
        print(f"- {r.label}: {r.attack_detail}")
    slow = [r for r in results if r.get and max(r.get + r.post) > 1.0]
    accepted = [r for r in results[1:-1] if set(r.attack_status) - {"403", "422"}]
    bad_post = [r for r in results if r.post_status != {201}]
    print()
    print("normal requests over 1 s: " + ("; ".join(f"{r.label} (GET max {max(r.get):.2f} s, POST max {max(r.post):.2f} s)"
                                                  for r in slow) or "none"))
    print("attacks not refused (not 403/422): " + ("; ".join(f"{r.label} ({r.attack_status})" for r in accepted) or "none"))
    print("attacks unanswered when the window ended (see --solo for their answer): "
          + ("; ".join(f"{r.label} ({len(r.cut)} cut after {min(r.cut):.0f} s)" for r in results if r.cut) or "none"))
    print("normal POSTs not 201: " + ("; ".join(f"{r.label} ({sorted(r.post_status)})" for r in bad_post) or "none"))
    print(f"task code ran (marker written): {marker}")
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
