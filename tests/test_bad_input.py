"""A catalogue of bad input across the pool spec, the checkpoints, the suite and the CLI.

Each case: one line on stderr naming the input and the problem, exit status 2, and nothing in
the working tree written or changed."""

import shutil

import pytest
import yaml
from safetensors.torch import load_file, save_file

from recycler.cli import main
from recycler.demo.tiny import write_pool
from recycler.search import run_search
from recycler.spec import load_spec
from tests.pools import BAD_POOLS
from tests.suites import write_suite


@pytest.fixture(scope="module")
def searched(tmp_path_factory, local_ray):
    """A pool, a suite and a finished small study, copied fresh into each case's folder."""
    root = tmp_path_factory.mktemp("searched")
    spec_path = write_pool(root, 3)
    write_suite(root / "suite")
    edit_spec(root, suite="suite/suite.yaml", search={"trials": 6, "sampler": "RandomSampler"}, resources={"workers": 2})
    run_search(load_spec(spec_path), root / "study", progress=False)
    return root


def edit_spec(root, **changes):
    path = root / "pool.yaml"
    spec = yaml.safe_load(path.read_text())
    spec.update(changes)
    path.write_text(yaml.safe_dump(spec))


def edit_suite(root, **changes):
    path = root / "suite" / "suite.yaml"
    suite = yaml.safe_load(path.read_text())
    suite.update(changes)
    path.write_text(yaml.safe_dump(suite))


def edit_tensors(root, checkpoint, edit):
    file = root / checkpoint / "model.safetensors"
    tensors = load_file(file)
    edit(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


def nan_weight(tensors):
    tensors["transformer.h.0.attn.c_proj.weight"][0, 0] = float("nan")


def corrupt_header(root):
    file = root / "ckpt2" / "model.safetensors"
    data = bytearray(file.read_bytes())
    data[8:20] = b"not json!!!!"
    file.write_bytes(bytes(data))


def other_pool(root):
    edit_tensors(root, "ckpt0", lambda t: t["transformer.ln_f.bias"].add_(1.0))


def failed_trial(root):
    """Append a failed trial to the study, as a dead worker would leave it."""
    import optuna

    from recycler.study import load_study

    study, _ = load_study(root / "study")
    trial = study.ask()
    trial.set_user_attr("error", "worker died")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)


def run(*extra):
    return ["run", "pool.yaml", "--study", "study", "--quiet", *extra]


def pool_case(name):
    corrupt, expected = BAD_POOLS[name]
    return (corrupt, run(), expected)


CASES = {
    # the pool spec
    "spec with unknown key": (lambda r: edit_spec(r, colour="red"), run(), "pool.yaml: colour: Extra inputs are not permitted"),
    "zero budget": (lambda r: edit_spec(r, search={"trials": 0}), run(), "pool.yaml: search.trials: Input should be greater than 0"),
    "negative workers": (lambda r: edit_spec(r, resources={"workers": -2}), run(), "resources.workers: Input should be greater than 0"),
    "unknown search space": (lambda r: edit_spec(r, search={"space": "spiral"}), run(), "search space 'spiral': no file"),
    "unknown objective": (lambda r: edit_spec(r, objectives=["poetry"]), run(), "objectives: 'poetry' is not a held-in task of suite 'arith'"),
    "held-out task as objective": (lambda r: edit_spec(r, objectives=["carry"]), run(), "objectives: 'carry' is not a held-in task"),
    "memory budget too small": (lambda r: edit_spec(r, resources={"memory_per_worker": "1kB"}), run(),
                                "resources.memory_per_worker: 1 kB cannot hold one model of this pool plus scratch: a worker needs at least"),
    "memory budget not a size": (lambda r: edit_spec(r, resources={"memory_per_worker": "lots"}), run(),
                                 "resources.memory_per_worker: 'lots' is neither 'auto' nor a size"),
    "unknown engine": (lambda r: edit_spec(r, resources={"engine": "sglang"}), run(),
                       r"resources.engine: .*'sglang' is not an engine \(engines: hf, vllm\)"),
    "engine vllm without vLLM installed": (lambda r: edit_spec(r, resources={"engine": "vllm"}), run(),
                                           r"resources.engine: vllm is not installed; install recycler\[vllm\] on GPU machines"),
    "KV cache not a size": (lambda r: edit_spec(r, resources={"kv_cache_per_worker": "lots"}), run(),
                            "resources.kv_cache_per_worker: 'lots' is not a size such as"),
    "unknown sampler": (lambda r: edit_spec(r, search={"sampler": "MagicSampler"}), run(), "search.sampler: unknown Optuna sampler 'MagicSampler'"),
    "spec not YAML": (lambda r: (r / "pool.yaml").write_text("name: [oops"), run(), "pool.yaml: not valid YAML"),
    "spec missing": (lambda r: (r / "pool.yaml").unlink(), run(), "pool.yaml: pool spec not found"),
    "unknown suite": (lambda r: edit_spec(r, suite="nosuch"), run(), "suite 'nosuch': no file"),
    # the suite
    "suite unknown task": (lambda r: edit_suite(r, held_in=[{"task": "poetry"}]), run(), "task 'poetry': no task of that name"),
    "suite unknown metric": (lambda r: edit_suite(r, held_in=[{"task": "sums", "metric": "bleu"}]), run(), "task 'sums': unknown metric 'bleu'"),
    "suite missing data": (lambda r: (r / "suite/tasks/data/sums.jsonl").unlink(), run(), "task 'sums': data file"),
    "suite empty data": (lambda r: (r / "suite/tasks/data/pick.jsonl").write_text(""), run(), "task 'pick': has no examples"),
    # the checkpoints
    "mismatched shapes": pool_case("mismatched shapes"),
    "mixed dtypes": pool_case("mixed dtypes"),
    "missing tensor": pool_case("missing tensor"),
    "truncated safetensors": pool_case("truncated safetensors"),
    "corrupted safetensors header": (corrupt_header, run(), "ckpt2/model.safetensors: not a valid safetensors file"),
    "NaN weights": (lambda r: edit_tensors(r, "ckpt1", nan_weight), run(), "checkpoint 'c1' .*tensor 'transformer.h.0.attn.c_proj.weight' holds NaN or inf"),
    "vocabulary mismatch": pool_case("different vocabularies"),
    "missing config.json": pool_case("missing config.json"),
    "checkpoint path missing": pool_case("path does not exist"),
    "one checkpoint": pool_case("one checkpoint"),
    "duplicate names": pool_case("duplicate names"),
    # the CLI and studies
    "study of another pool": (other_pool, run(), "study: study belongs to another pool"),
    "export target exists": (lambda r: (r / "taken").mkdir() or (r / "taken" / "x").write_text("x"), ["export", "study", "--trial", "0", "--out", "taken"], "taken: export target is not empty"),
    "trial not in study": (None, ["export", "study", "--trial", "99", "--out", "out"], "study: trial 99 is not in the study"),
    "export of a failed trial": (failed_trial, ["export", "study", "--trial", "6", "--out", "out"], "study: trial 6 did not complete \\(fail\\)"),
    "front of a non-study": (lambda r: (r / "empty").mkdir(), ["front", "empty"], "empty: not a study folder"),
    "malformed weight": (None, ["merge", "pool.yaml", "--weight", "c0:1", "--out", "out"], "--weight 'c0:1': expected NAME=NUMBER"),
    "verify a non-export": (lambda r: (r / "empty").mkdir(), ["verify", "empty"], "empty: no manifest.json"),
}


def snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, searched, tmp_path, capsys, monkeypatch):
    import re

    root = tmp_path / "case"
    shutil.copytree(searched, root)
    setup, argv, expected = CASES[case]
    if setup:
        setup(root)
    monkeypatch.chdir(root)
    before = snapshot(root)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recycler: error: "), err
    assert re.search(expected, err[0]), err[0]
    assert snapshot(root) == before


def test_the_catalogue_is_long_enough():
    assert len(CASES) >= 25
