import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from recycler.demo.tiny import write_checkpoint, write_pool
from recycler.merge import Merger
from recycler.pool import load_pool
from recycler.recipes import LinearRecipe
from recycler.spec import load_spec
from recycler.suite import load_suite
from tests.suites import hf_scorer, write_suite, write_tasks


def load(folder):
    return AutoModelForCausalLM.from_pretrained(str(folder)).eval(), AutoTokenizer.from_pretrained(str(folder))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_scores_equal_lm_eval_simple_evaluate_from_disk(tmp_path, arch):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    checkpoint = write_checkpoint(tmp_path / "ckpt", arch=arch, seed=7)
    write_tasks(tmp_path / "abs_tasks", absolute=True)
    suite = load_suite(str(write_suite(tmp_path, task_dir="abs_tasks")))
    ours = hf_scorer(suite, *load(checkpoint)).score()

    theirs = simple_evaluate(
        model="hf",
        model_args=f"pretrained={checkpoint},add_bos_token=False,dtype=float32",
        tasks=["sums", "pick", "carry"],
        task_manager=TaskManager(include_path=str(tmp_path / "abs_tasks"), include_defaults=False),
        batch_size=16,
        device="cpu",
        limit=None,
        bootstrap_iters=0,
    )["results"]
    expected = {"sums": theirs["sums"]["acc,none"], "pick": theirs["pick"]["acc_norm,none"]}
    assert {k: ours.scores[k] for k in expected} == pytest.approx(expected, abs=1e-12)
    assert 0 < ours.scores["pick"] < 1  # a random model is right on some choices, wrong on others
    # carry is limited to 25 examples in the suite; lm-eval scores its 40
    full = theirs["carry"]["perplexity,none"]
    assert ours.scores["carry"] != full and ours.scores["carry"] > 1
    assert 0 < ours.costs.forward_seconds < ours.costs.trial_seconds


def test_batched_scores_equal_batch_one(tmp_path):
    model, tokenizer = load(write_checkpoint(tmp_path / "ckpt", seed=3))
    batched = hf_scorer(load_suite(str(write_suite(tmp_path, batch_size=64))), model, tokenizer).score()
    single = hf_scorer(load_suite(str(write_suite(tmp_path, batch_size=1))), model, tokenizer).score()
    assert batched.scores == pytest.approx(single.scores, rel=1e-5)


def test_rescoring_after_an_in_place_merge_sees_the_new_weights(tmp_path):
    pool = load_pool(load_spec(write_pool(tmp_path / "pool", 2)))
    merger = Merger(pool)
    scorer = hf_scorer(load_suite(str(write_suite(tmp_path))), merger.model, load(pool.reference.path)[1])
    first = scorer.score()
    again = scorer.score()
    assert again.scores == first.scores
    merger.apply(LinearRecipe({"c1": 1.0}))
    other = scorer.score()
    model, tokenizer = load(pool.checkpoints[1].path)
    fresh = hf_scorer(load_suite(str(write_suite(tmp_path))), model, tokenizer).score()
    assert other.scores == pytest.approx(fresh.scores, rel=1e-6)
    assert other.scores != first.scores



def test_each_request_is_tokenized_once_per_scorer(tmp_path):
    """The scorer overrides HFLM's private `_encode_pair` to remember tokenizations: if lm-eval
    renames it or stops calling it, this fails instead of the scorer silently slowing down."""
    model, tokenizer = load(write_checkpoint(tmp_path / "ckpt", seed=3))
    scorer = hf_scorer(load_suite(str(write_suite(tmp_path))), model, tokenizer)
    first = scorer.score()
    remembered = dict(scorer.lm._pairs)
    assert remembered, "HFLM no longer tokenizes loglikelihood requests through _encode_pair"
    assert scorer.score().scores == first.scores
    assert scorer.lm._pairs == remembered  # the second pass tokenized nothing new


def test_forward_tokens_count_the_positions_the_model_ran(tmp_path):
    """At batch size 1 nothing is padded: a loglikelihood request runs its prompt and answer but the
    last token (which only the previous position predicts), and identical requests run once."""
    model, tokenizer = load(write_checkpoint(tmp_path / "ckpt", seed=3))
    suite = write_suite(tmp_path, batch_size=1, held_in=[{"task": "sums", "metric": "acc"}], held_out=[])
    scorer = hf_scorer(load_suite(str(suite)), model, tokenizer)
    rows = [json.loads(line) for line in (tmp_path / "tasks" / "data" / "sums.jsonl").read_text().splitlines()]

    def positions(chosen):
        requests = {(row["prompt"], row["answer"]) for row in chosen}
        return sum(len(tokenizer(prompt + answer + "\n").input_ids) - 1 for prompt, answer in requests)

    assert scorer.score().costs.forward_tokens == positions(rows)
    assert scorer.score({"sums": [0, 5]}).costs.forward_tokens == positions([rows[0], rows[5]])
    batched = hf_scorer(load_suite(str(write_suite(tmp_path, batch_size=16, held_in=[{"task": "sums", "metric": "acc"}],
                                                held_out=[]))), model, tokenizer)
    assert batched.score().costs.forward_tokens >= positions(rows)  # padded to each batch's longest


@pytest.mark.parametrize("weight_by_size", [True, False])
def test_a_group_scores_as_lm_eval_scores_it(tmp_path, weight_by_size):
    """A suite task naming an lm-eval group of two tasks of unequal size (40 and 15 examples): its
    score is simple_evaluate's for the group, weighted by size or not as the group says, and its
    examples are its members', one after another."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    checkpoint = write_checkpoint(tmp_path / "ckpt", seed=7)
    tasks = write_tasks(tmp_path / "abs_tasks", absolute=True)
    carry_data = tasks / "data" / "carry.jsonl"
    carry_data.write_text("".join(carry_data.read_text().splitlines(keepends=True)[:15]))
    (tasks / "arith.yaml").write_text("group: arith\ntask: [sums, carry]\naggregate_metric_list:\n"
                                      f"  - {{metric: perplexity, aggregation: mean, weight_by_size: {str(weight_by_size).lower()}}}\n")
    suite = load_suite(str(write_suite(tmp_path, task_dir="abs_tasks", held_in=[{"task": "arith", "metric": "perplexity"}],
                                       held_out=[])))
    scorer = hf_scorer(suite, *load(checkpoint))
    ours = scorer.score()

    theirs = simple_evaluate(
        model="hf",
        model_args=f"pretrained={checkpoint},add_bos_token=False,dtype=float32",
        tasks=["arith"],
        task_manager=TaskManager(include_path=str(tmp_path / "abs_tasks"), include_defaults=False),
        batch_size=16,
        device="cpu",
        bootstrap_iters=0,
    )["results"]
    assert ours.scores["arith"] == pytest.approx(theirs["arith"]["perplexity,none"], rel=1e-6)
    sums, carry = theirs["sums"]["perplexity,none"], theirs["carry"]["perplexity,none"]
    other = (sums + carry) / 2 if weight_by_size else (40 * sums + 15 * carry) / 55
    assert ours.scores["arith"] != pytest.approx(other, rel=1e-3)  # the weighting decided the score
    texts = suite.example_texts(scorer.tasks)["arith"]
    assert len(ours.examples["arith"].scores) == len(texts) == 55
    assert [t["prompt"] for t in texts[40:]] == [json.loads(line)["prompt"] for line in carry_data.read_text().splitlines()]
