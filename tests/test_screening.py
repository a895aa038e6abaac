"""Screening (search.fidelity): candidates scored on a fixed subset first, finished only if they can
still reach the front. Unit tests of the subset, the bound and the merge of stages, then real
searches (local Ray, Optuna, lm-eval) on tiny random checkpoints."""

import json
import math

import pytest
from optuna.trial import TrialState

from recycler.errors import RecyclerError
from recycler.export import export_trial
from recycler.front import front_records
from recycler.recipes import recipe_from_json
from recycler.records import stored_trials
from recycler.report import write_report
from recycler.results import TaskExamples
from recycler.screening import FrontMember, Screening, choose_stages, complement, credited, standard_error
from recycler.ledger import examples_spent, finished_trials
from recycler.search import run_search
from recycler.study import load_study
from recycler.workers import MergeWorker


def prompts(lengths):
    return [{"prompt": "x" * n, "target": ""} for n in lengths]


def test_the_subset_is_stratified_by_prompt_length_seeded_and_the_right_size():
    texts = {"a": prompts(range(100)), "b": prompts([5] * 40)}
    (subset,) = choose_stages(texts, [0.2], seed=3)
    assert [subset] == choose_stages(texts, [0.2], seed=3) and [subset] != choose_stages(texts, [0.2], seed=4)
    assert len(subset["a"]) == 20 and len(subset["b"]) == 8
    assert [i // 5 for i in subset["a"]] == list(range(20))  # one from each fifth-percentile stratum
    assert sorted(subset["a"] + complement(subset, {"a": 100})["a"]) == list(range(100))


def test_stages_are_nested_stratified_and_the_first_is_the_one_stage_subset():
    texts = {"a": prompts(range(100)), "b": prompts([5] * 40)}
    first, second, third = choose_stages(texts, [0.1, 0.3, 0.6], seed=3)
    assert first == choose_stages(texts, [0.1], seed=3)[0]  # a schedule starts where one stage would
    assert [len(stage["a"]) for stage in (first, second, third)] == [10, 30, 60]
    assert [len(stage["b"]) for stage in (first, second, third)] == [4, 12, 24]
    assert set(first["a"]) < set(second["a"]) < set(third["a"]) and set(first["b"]) < set(second["b"])
    added = sorted(set(second["a"]) - set(first["a"]))
    assert [i // 5 for i in sorted(added + first["a"])][::3] == list(range(0, 20, 2))  # the union still spans every length
    screening = Screening([first, second, third], {"a": 100, "b": 40}, 0.9, frozenset({"a", "b"}))
    assert screening.stage_examples(1)["a"] == added and screening.stage_examples(0) == first
    assert screening.subset == third and sorted(screening.rest["a"] + third["a"]) == list(range(100))


def test_a_front_member_credited_its_standard_error_drops_a_candidate_within_it():
    # the candidate loses 4 of the member's examples and wins 3 others: plausibly better by up to
    # about 0.02, well within the member's own noise (a standard error near 0.05)
    member_examples = [1.0] * 60 + [0.0] * 40
    member = FrontMember(3, [0.6], {"t": member_examples}, [standard_error(member_examples)])
    assert member.standard_errors[0] == pytest.approx(math.sqrt(0.6 * 0.4 / 100))
    candidate = {"t": [0.0] * 4 + member_examples[4:60] + [1.0] * 3 + member_examples[63:]}
    exact = Screening([{"t": list(range(100))}], {"t": 500}, 0.9, frozenset({"t"}))
    noise_aware = Screening([{"t": list(range(100))}], {"t": 500}, 0.9, frozenset({"t"}), member_credit=1.0)
    assert exact.verdict(candidate, [member], ["t"], ["maximize"]).finish
    verdict = noise_aware.verdict(candidate, [member], ["t"], ["maximize"])
    assert not verdict.finish and verdict.dominated_by == 3
    assert 0.6 < verdict.optimistic[0] < 0.6 + member.standard_errors[0]
    assert noise_aware.verdict(candidate, [FrontMember(3, [0.6], {"t": member_examples})], ["t"], ["maximize"]).finish  # no error kept: no credit
    assert credited(member, ["minimize"], 1.0) == [pytest.approx(0.6 - member.standard_errors[0])]


def test_a_later_stage_is_judged_on_its_own_larger_subset():
    stages = [{"t": [0, 1]}, {"t": [0, 1, 2, 3, 4, 5, 6, 7]}]
    screening = Screening(stages, {"t": 40}, 0.9, frozenset({"t"}))
    member = FrontMember(1, [0.9], {"t": [1.0] * 8})
    assert screening.verdict({"t": [0.0, 1.0]}, [member], ["t"], ["maximize"], stage=0).finish  # 2 examples: too few to tell
    verdict = screening.verdict({"t": [0.0, 1.0] + [0.0] * 6}, [member], ["t"], ["maximize"], stage=1)
    assert not verdict.finish and verdict.stage == 1


def test_the_paired_bound_carries_the_members_full_score_and_widens_with_fewer_examples():
    screening = Screening([{"t": list(range(10))}], {"t": 100}, 0.95, frozenset({"t"}))
    # the subset is harder than the task: the member scores 0.5 on it but 0.8 in full
    member = FrontMember(7, [0.8], {"t": [1.0] * 5 + [0.0] * 5})
    same = {"t": [1.0] * 5 + [0.0] * 5}
    (upper,), _ = screening.optimistic(same, member, ["t"], ["maximize"])
    (lower,), _ = screening.optimistic(same, member, ["t"], ["minimize"])
    assert lower < 0.8 < upper < 1  # the subset's own difficulty cancels out
    assert screening.verdict(same, [member], ["t"], ["maximize"]).finish
    worse = {"t": [0.0] * 10}  # loses every example the member wins
    verdict = screening.verdict(worse, [member], ["t"], ["maximize"])
    assert not verdict.finish and verdict.dominated_by == 7 and verdict.optimistic[0] < 0.8
    few = Screening([{"t": [0, 1]}], {"t": 100}, 0.95, frozenset({"t"}))
    pair = FrontMember(7, [0.8], {"t": [1.0, 0.0]})
    assert few.optimistic({"t": [1.0, 0.0]}, pair, ["t"], ["maximize"])[0][0] > upper
    unbounded = Screening([{"t": list(range(10))}], {"t": 100}, 0.95, frozenset())  # not a mean: never a reason to drop
    assert unbounded.optimistic(worse, member, ["t"], ["maximize"])[0] == [math.inf]
    assert unbounded.verdict(worse, [member], ["t"], ["maximize"]).finish


def test_subset_scores_are_read_from_a_stage_or_a_full_evaluation():
    screening = Screening([{"t": [1, 3]}], {"t": 5}, 0.9, frozenset({"t"}))
    full = {"t": TaskExamples([0.0, 1.0, 0.0, 0.5, 1.0])}
    stage = {"t": TaskExamples([0.5, 1.0], indices=[3, 1])}
    assert screening.on_subset(full, ["t"]) == screening.on_subset(stage, ["t"]) == {"t": [1.0, 0.5]}


def test_two_stages_merge_into_example_order():
    first = TaskExamples([1.0, 0.0], ["a", "b"], [1, 3])
    second = TaskExamples([0.5, 0.25, 0.75], ["c", "d", "e"], [0, 2, 4])
    assert first.then(second) == TaskExamples([0.5, 1.0, 0.25, 0.0, 0.75], ["c", "a", "d", "b", "e"])
    third = TaskExamples([0.5], ["f"], [6])  # two stages that are not yet every example keep their indices
    assert first.then(third) == TaskExamples([1.0, 0.0, 0.5], ["a", "b", "f"], [1, 3, 6])
    assert first.then(third).then(second).indices == [0, 1, 2, 3, 4, 6]


def full_scores(spec, trial):
    return MergeWorker(spec).evaluate(trial.recipe).scores


def test_promoted_trials_score_exactly_what_full_evaluation_gives(tmp_path, search_spec):
    spec = search_spec(trials=10, fidelity={"screen_fraction": 0.3, "confidence": 0.999})
    study = run_search(spec, tmp_path / "study", progress=False, in_process=True)
    trials = stored_trials(study)
    promoted = [t for t in trials if t.complete and t.screening is not None]
    assert promoted and all(t.screening.finished for t in promoted)
    worker = MergeWorker(spec)
    for trial in promoted:
        full = worker.evaluate(trial.recipe).scores
        assert {k: trial.scores[k] for k in ("sums", "pick")} == {k: full[k] for k in ("sums", "pick")}
        assert trial.scores["carry"] == pytest.approx(full["carry"], rel=1e-6)  # perplexity: float sums in other batches
        assert trial.examples_scored == 40 + 40 + 25  # every example once, none twice
        assert trial.forward_tokens > 0
    baselines = [t for t in trials if t.baseline is not None]
    assert baselines and all(t.screening is None and t.examples_scored == 105 for t in baselines)
    assert baselines[0].forward_tokens == worker.evaluate(baselines[0].recipe).costs.forward_tokens


def test_screened_out_trials_stay_off_the_front_and_out_of_exports(tmp_path, search_spec):
    spec = search_spec(trials=16, fidelity={"screen_fraction": 0.25, "confidence": 0.55, "seed": 2, "member_credit": 1.0})
    spec = spec.model_copy(update={"objectives": ["pick"]})  # sums is 0 for every random merge: nothing to drop on
    folder = tmp_path / "study"
    study = run_search(spec, folder, progress=False, in_process=True)
    trials = stored_trials(study)
    dropped = [t for t in trials if t.screened_out]
    assert dropped, "a tiny random pool screened at 55% confidence drops some candidates"
    assert finished_trials(study) == 16 and len(trials) == 16  # the budget counts trials, dropped ones too
    assert all(t.state == TrialState.PRUNED and t.examples_scored == 10 + 10 + 6 for t in dropped)
    fewest_in_full = min(t.forward_tokens for t in trials if t.complete)
    assert all(0 < t.forward_tokens < fewest_in_full for t in dropped)  # a quarter of the examples
    assert all(not t.screening.finished for t in dropped)
    by_number = {t.number: t for t in trials}
    for trial in dropped:  # dominated, at screening, by a trial fully evaluated before it, credited one standard error
        member = by_number[trial.screening.dominated_by]
        assert member.complete and member.number < trial.number
        assert member.values[0] + member.standard_errors[0] > trial.screening.optimistic[0]
    assert all(len(t.subset_scores["pick"]) == 10 for t in trials if t.complete)  # what later candidates pair with
    spent = examples_spent(study)  # one count for the progress bar and the report: each drop skipped 105 - 26 examples
    assert (spent.dropped, spent.saved, spent.scored) == (len(dropped), len(dropped) * 79, sum(t.examples_scored for t in trials))
    assert f"{len(dropped)} trials dropped at screening saved {spent.saved:,}" in write_report(folder, tmp_path / "r.html").read_text()
    study, info = load_study(folder)
    records = front_records(study, info, include_all=True)
    shown = {r["trial"]: r for r in records if r["trial"] is not None}
    for trial in dropped:
        assert shown[trial.number]["screened_out"] and not shown[trial.number]["on_front"]
        assert shown[trial.number]["scores"] == trial.screening.scores
        assert shown[trial.number]["dominated_by"] == trial.screening.dominated_by
        assert shown[trial.number]["dropped_at_stage"] == 1  # one stage
        with pytest.raises(RecyclerError, match=f"trial {trial.number} did not complete \\(pruned\\)"):
            export_trial(folder, trial.number, tmp_path / "export")
    assert all(r["trial"] not in {t.number for t in dropped} for r in front_records(study, info))
    assert set(study.user_attrs["screening_stages"][0]) == {"sums", "pick", "carry"}


def test_a_schedule_of_stages_scores_each_example_once_and_finishes_exactly(tmp_path, search_spec):
    spec = search_spec(trials=14, fidelity={"screen_fraction": [0.25, 0.5], "confidence": 0.75, "seed": 0})
    spec = spec.model_copy(update={"objectives": ["pick"]})
    folder = tmp_path / "study"
    study = run_search(spec, folder, progress=False, in_process=True)
    first, second = study.user_attrs["screening_stages"]
    cost = [sum(map(len, first.values())), sum(map(len, second.values())), 105]
    assert cost[0] < cost[1] < cost[2] and all(set(first[t]) < set(second[t]) for t in first)
    screened = [t for t in stored_trials(study) if t.screening is not None]
    for trial in screened:  # a stage's verdict says what it cost: the examples of the stages it reached
        reached = trial.screening.stage + 1 if trial.screened_out else 3
        assert trial.examples_scored == cost[reached - 1]
    assert {t.screening.stage for t in screened if t.screened_out} == {0, 1}, "drops at both stages"
    worker = MergeWorker(spec)
    for trial in (t for t in screened if t.complete):
        assert trial.screening.stage == 1 and trial.screening.finished
        assert trial.scores["pick"] == worker.evaluate(trial.recipe).scores["pick"]
    other = spec.model_copy(update={"search": spec.search.model_copy(update={
        "trials": 16, "fidelity": spec.search.fidelity.model_copy(update={"screen_fraction": 0.25})})})
    with pytest.raises(RecyclerError, match=r"^search.fidelity.screen_fraction: this study screens in 2 stage\(s\), not 1"):
        run_search(other, folder, progress=False, in_process=True)
    for change in ({"screen_fraction": [0.2, 0.5]}, {"seed": 1}):  # the same number of stages, drawn otherwise
        other = spec.model_copy(update={"search": spec.search.model_copy(update={
            "trials": 16, "fidelity": spec.search.fidelity.model_copy(update=change)})})
        with pytest.raises(RecyclerError, match="^search.fidelity: this study's screening subsets were drawn with another"):
            run_search(other, folder, progress=False, in_process=True)
    assert finished_trials(load_study(folder)[0]) == 14  # nothing run


def test_the_subset_survives_a_resume(tmp_path, search_spec):
    spec = search_spec(trials=6, fidelity={"screen_fraction": 0.25, "confidence": 0.6})
    folder = tmp_path / "study"
    subset = json.dumps(run_search(spec, folder, progress=False, in_process=True).user_attrs["screening_stages"])
    more = spec.model_copy(update={"search": spec.search.model_copy(update={"trials": 10})})
    study = run_search(more, folder, progress=False, in_process=True)
    assert json.dumps(study.user_attrs["screening_stages"]) == subset
    assert finished_trials(study) == 10
    screened = [t for t in stored_trials(study) if t.screening is not None]
    assert all(t.examples_scored in (26, 105) for t in screened)
    assert recipe_from_json(screened[-1].recipe) is not None


def test_stopping_finishes_the_promoted_trials_in_flight(tmp_path, search_spec):
    from recycler.study import JOURNAL_FILE

    spec = search_spec(trials=10, workers=1, fidelity={"screen_fraction": 0.3, "confidence": 0.999})
    folder = tmp_path / "study"

    def promoted_once() -> bool:  # stop as soon as a screened candidate has been promoted
        journal = folder / JOURNAL_FILE
        return journal.is_file() and '"finished":true' in journal.read_text().replace(" ", "")

    study = run_search(spec, folder, progress=False, in_process=True, should_stop=promoted_once)
    trials = stored_trials(study)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    promoted = [t for t in trials if t.screening is not None and t.screening.finished]
    assert promoted and all(t.complete and t.examples_scored == 105 for t in promoted)
    assert finished_trials(study) < 10  # it did stop early


def test_a_suite_with_a_group_is_refused_before_anything_runs(tmp_path, search_spec):
    """A group's score is lm-eval's mean over its members, not put together from screened stages."""
    import yaml

    from recycler.preparation import prepare_study

    spec = search_spec(trials=4, fidelity={"screen_fraction": 0.3})
    suite_dir = tmp_path / "suite"
    (suite_dir / "tasks" / "arith.yaml").write_text(
        "group: arith\ntask: [sums, carry]\naggregate_metric_list: [{metric: acc, aggregation: mean}]\n")
    suite = yaml.safe_load((suite_dir / "suite.yaml").read_text())
    suite.update(held_in=[{"task": "arith"}, {"task": "pick", "metric": "acc_norm"}], held_out=[])
    (suite_dir / "suite.yaml").write_text(yaml.safe_dump(suite))
    with pytest.raises(RecyclerError, match="^search.fidelity: task 'arith' is an lm-eval group"):
        prepare_study(spec, tmp_path / "study")
    assert not (tmp_path / "study").exists()
