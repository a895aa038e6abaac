"""Per-example results kept for every scored candidate, on a real search (local Ray, Optuna, lm-eval)
with a generation task: what is stored, that it adds up to the recorded scores, that it survives a
resume, and how `recycler front`, the report and the service show it beside a baseline's answers."""

import json
import shutil
import statistics

import pytest
import yaml
from optuna.trial import TrialState

from recycler.cli import main
from recycler.compare import candidate_name
from recycler.demo.tiny import write_pool
from recycler.examples import EXAMPLES_DIR, read_prompts, read_results
from recycler.front import front_records
from recycler.recipes import LinearRecipe
from recycler.search import run_search
from recycler.spec import load_spec
from recycler.study import load_study
from recycler.workers import MergeWorker
from tests.service_auth import AUTH
from tests.suites import add_generation_task, write_tasks


def write_generation_suite(folder):
    """`sums` (loglikelihood, acc) and `answer` (generation) held in, `pick` (multiple choice, acc) held out."""
    add_generation_task(write_tasks(folder / "tasks"))
    suite = {"name": "words", "task_dir": "tasks", "batch_size": 16,
             "held_in": [{"task": "sums", "metric": "acc"}, {"task": "answer", "metric": "exact_match,word"}],
             "held_out": [{"task": "pick", "metric": "acc"}]}
    (folder / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    return "suite/suite.yaml"


@pytest.fixture(scope="module")
def searched(tmp_path_factory, local_ray):
    """A finished 6-trial search of a three-checkpoint pool on the generation suite: (spec, folder)."""
    root = tmp_path_factory.mktemp("examples")
    spec_path = write_pool(root, 3)
    spec = yaml.safe_load(spec_path.read_text())
    spec.update(suite=write_generation_suite(root / "suite"), resources={"workers": 2},
                search={"space": "simplex", "trials": 6, "sampler": "RandomSampler", "seed": 1})
    spec_path.write_text(yaml.safe_dump(spec))
    spec = load_spec(spec_path)
    run_search(spec, root / "study", progress=False)
    return spec, root / "study"


def copy_of(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "study")


def test_every_scored_candidate_keeps_its_examples(searched):
    spec, folder = searched
    study, _ = load_study(folder)
    prompts = read_prompts(folder)
    assert {task: len(texts) for task, texts in prompts.items()} == {"sums": 40, "answer": 20, "pick": 40}
    assert prompts["answer"][0]["prompt"].endswith("=") and prompts["answer"][0]["target"].isdigit()

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    for trial in complete:
        kept = read_results(folder, trial.number)
        assert {task: len(r.scores) for task, r in kept.items()} == {task: len(texts) for task, texts in prompts.items()}
        assert [r.answers is not None for r in kept.values()] == [False, True, False]  # only the generation task has answers
        assert len(kept["answer"].answers) == 20 and all(isinstance(a, str) for a in kept["answer"].answers)
        for task in ("sums", "answer", "pick"):  # mean-aggregated metrics: the examples add up to the recorded score
            assert statistics.fmean(kept[task].scores) == pytest.approx(trial.user_attrs["scores"][task], abs=1e-12)
        assert not any(isinstance(value, list) for value in trial.user_attrs.values())  # per-example lists: not loaded with every trial
    slerp = read_results(folder, "slerp")  # a baseline the simplex cannot express, scored beside the trials
    assert statistics.fmean(slerp["pick"].scores) == pytest.approx(study.user_attrs["baseline:slerp"]["scores"]["pick"])
    assert sorted(p.name for p in (folder / EXAMPLES_DIR).iterdir()) == sorted(
        ["prompts.json", "baseline-slerp.json"] + [f"trial-{t.number:06d}.json" for t in complete])
    assert " " not in (folder / EXAMPLES_DIR / "trial-000000.json").read_text()  # compact

    # The answers are the worker's own: checkpoint c1 alone, scored again directly.
    c1 = next(t for t in complete if t.user_attrs.get("baseline") == "c1")
    direct = MergeWorker(spec).evaluate(LinearRecipe({"c1": 1.0}).to_json()).examples
    assert read_results(folder, c1.number) == direct
    assert len({tuple(read_results(folder, t.number)["answer"].answers) for t in complete}) > 1  # merges answer differently


def test_examples_are_read_again_after_a_resume(searched, tmp_path):
    spec, original = searched
    folder = copy_of(original, tmp_path)
    before = {p.name: p.read_text() for p in (folder / EXAMPLES_DIR).iterdir()}
    bigger = spec.model_copy(update={"search": spec.search.model_copy(update={"trials": 8})})
    study = run_search(bigger, folder, progress=False)
    after = {p.name: p.read_text() for p in (folder / EXAMPLES_DIR).iterdir()}
    assert {name: after[name] for name in before} == before  # nothing rewritten, the prompts included
    assert sorted(set(after) - set(before)) == ["trial-000006.json", "trial-000007.json"]
    for trial in study.trials:
        assert statistics.fmean(read_results(folder, trial.number)["sums"].scores) == pytest.approx(trial.user_attrs["scores"]["sums"])


def test_front_shows_answers_beside_a_baseline(searched, capsys):
    _, folder = searched
    capsys.readouterr()
    assert main(["front", str(folder), "--format", "json", "--rank", "balanced", "--limit", "1", "--examples", "3"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert all(("examples" in e) == (e["on_front"] or not e["baseline"]) for e in document["trials"])
    chosen = document["trials"][0]  # the most balanced front member, then the baselines for reference
    shown = chosen["examples"]
    assert chosen["on_front"] and shown["kept"] and list(shown["tasks"]) == ["answer"]  # generation tasks only
    beside = shown["beside"]
    assert beside is not None and beside != chosen["baseline_name"]
    baseline = next(e for e in document["trials"] if e["baseline_name"] == beside)
    ours = read_results(folder, chosen["trial"])["answer"]
    theirs = read_results(folder, baseline["trial"] if baseline["trial"] is not None else beside)["answer"]
    prompts = read_prompts(folder)["answer"]
    task = shown["tasks"]["answer"]
    differ = [i for i in range(20) if ours.answers[i] != theirs.answers[i]]
    assert task["total"] == 20 and task["differ"] == len(differ)
    expected = (differ + [i for i in range(20) if i not in differ])[:3]  # differing answers first, in the suite's order
    assert [row["index"] for row in task["examples"]] == expected
    for row in task["examples"]:
        i = row["index"]
        assert (row["prompt"], row["target"]) == (prompts[i]["prompt"], prompts[i]["target"])
        assert (row["answer"], row["score"]) == (ours.answers[i], ours.scores[i])
        assert (row["beside_answer"], row["beside_score"]) == (theirs.answers[i], theirs.scores[i])

    assert main(["front", str(folder), "--format", "json", "--examples", "2", "--beside", "slerp"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {e["examples"]["beside"] for e in document["trials"] if not e["baseline"]} == {"slerp"}
    assert all(len(e["examples"]["tasks"]["answer"]["examples"]) == 2 for e in document["trials"] if not e["baseline"])

    assert main(["front", str(folder), "--rank", "balanced", "--limit", "1", "--examples", "3"]) == 0
    table = capsys.readouterr().out
    assert f"{candidate_name(chosen)} beside {beside}, answer, {len(differ)} of 20 answers differ" in table

    assert main(["front", str(folder), "--examples", "2", "--beside", "nosuch"]) == 2
    assert capsys.readouterr().err.startswith("recycler: error: no baseline 'nosuch' in the study (has: c0, c1, c2, uniform, slerp)")
    assert main(["front", str(folder), "--beside", "slerp"]) == 2
    assert "--beside: only with --examples N" in capsys.readouterr().err
    assert main(["front", str(folder), "--format", "csv", "--examples", "2"]) == 2
    assert main(["front", str(folder), "--examples", "0"]) == 2


def test_report_shows_answers_of_the_most_balanced_member(searched, tmp_path):
    from recycler.selection import most_balanced
    from recycler.report import write_report

    _, folder = searched
    study, info = load_study(folder)
    page = write_report(folder, tmp_path / "report.html").read_text()
    chosen = most_balanced(front_records(study, info), info)
    section = page.split('<h2 id="examples">')[1]
    assert f"{candidate_name(chosen)}, the most balanced front member, beside baseline" in section
    assert "<h3>answer: " in section and "<h3>sums" not in section
    assert section.count('<table class="examples">') == 1 and section.split("</table>")[0].count("<tr>") == 1 + 3


def test_a_study_from_before_examples_still_gives_front_and_report(searched, tmp_path, capsys):
    from recycler.report import write_report

    _, original = searched
    folder = copy_of(original, tmp_path)
    shutil.rmtree(folder / EXAMPLES_DIR)
    capsys.readouterr()
    assert main(["front", str(folder), "--format", "json", "--examples", "3"]) == 0
    merges = [e for e in json.loads(capsys.readouterr().out)["trials"] if not e["baseline"]]
    assert merges and all(e["examples"] == {"beside": None, "kept": False, "tasks": {}} for e in merges)
    assert main(["front", str(folder)]) == 0 and "trial" in capsys.readouterr().out
    page = write_report(folder).read_text()
    assert 'id="front-plot"' in page and 'id="examples"' not in page


def test_the_service_gives_a_trials_answers_beside_a_baseline(tmp_path, local_ray, pool_spec):
    from tests.test_service_api import service, submit, wait_for

    spec = pool_spec(trials=5)
    spec["suite"] = write_generation_suite(tmp_path / "pool" / "suite")
    with service(tmp_path) as client:
        study = submit(client, tmp_path, spec)
        wait_for(client, study["id"], lambda s: s["state"] == "done")
        folder = tmp_path / "data" / "studies" / study["id"]
        front = client.get(f"/api/studies/{study['id']}/front", headers=AUTH).json()
        member = next(t for t in front["trials"] if not t["baseline"])
        url = f"/api/studies/{study['id']}/examples"
        shown = client.get(url, params={"trial": member["trial"], "beside": "uniform", "count": 4}, headers=AUTH).json()
        ours, theirs = read_results(folder, member["trial"])["answer"], read_results(folder, 3)["answer"]  # trial 3: uniform
        assert shown["beside"] == "uniform" and shown["kept"] and list(shown["tasks"]) == ["answer"]
        rows = shown["tasks"]["answer"]["examples"]
        assert len(rows) == 4 and all(r["answer"] == ours.answers[r["index"]] and r["beside_answer"] == theirs.answers[r["index"]] for r in rows)

        baseline = client.get(url, params={"baseline": "slerp"}, headers=AUTH).json()  # a baseline scored beside the search
        assert baseline["kept"] and baseline["beside"] != "slerp" and len(baseline["tasks"]["answer"]["examples"]) == 3
        narrowed = client.get(f"/api/studies/{study['id']}/front", params={"examples": 2, "beside": "uniform"}, headers=AUTH).json()
        assert next(t for t in narrowed["trials"] if t["trial"] == member["trial"])["examples"]["tasks"]["answer"]["examples"] == rows[:2]

        unknown = client.get(url, params={"trial": 99}, headers=AUTH)
        assert unknown.status_code == 422 and unknown.json()["detail"] == "trial 99 is not a completed trial of the study"
        assert client.get(url, params={"trial": 0, "beside": "nosuch"}, headers=AUTH).status_code == 422
        (folder / EXAMPLES_DIR / f"trial-{member['trial']:06d}.json").unlink()  # as in a study from before examples
        gone = client.get(url, params={"trial": member["trial"]}, headers=AUTH).json()
        assert gone["kept"] is False and gone["tasks"] == {}
