"""The search loop on a real local Ray (2 CPUs) with real Optuna, on tiny random checkpoints."""

import json
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from recycler.cli import main
from recycler.coordination import folder_lock
from recycler.errors import RecyclerError
from recycler.examples import read_prompts, read_results
from recycler.front import front_records, hypervolume_history
from recycler.recipes import LinearRecipe, SlerpRecipe
from recycler.ledger import finished_trials
from recycler.preparation import prepare_study
from recycler.search import run_search
from recycler.selection import most_balanced
from recycler.study import load_study
from recycler.workers import MergeWorker


def test_search_runs_baselines_first_and_resumes(tmp_path, search_spec):
    spec = search_spec()
    folder = tmp_path / "study"
    study = run_search(spec, folder, progress=False, in_process=True)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert finished_trials(study) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    assert [t.user_attrs.get("baseline") for t in trials[:4]] == ["c0", "c1", "c2", "uniform"]
    assert trials[0].user_attrs["weights"] == pytest.approx({"c0": 1.0, "c1": 0.0, "c2": 0.0})
    assert trials[3].user_attrs["weights"] == pytest.approx({n: 1 / 3 for n in ("c0", "c1", "c2")})
    for t in trials[4:]:
        assert sum(t.user_attrs["weights"].values()) == pytest.approx(1.0) and min(t.user_attrs["weights"].values()) >= 0

    # A baseline's scores are what a worker gives that checkpoint alone, and the objectives are the held-in tasks.
    direct = MergeWorker(spec).evaluate(LinearRecipe({"c1": 1.0}).to_json()).scores
    assert trials[1].user_attrs["scores"] == pytest.approx(direct)
    assert trials[1].values == pytest.approx([direct["sums"], direct["pick"]])
    assert set(trials[1].user_attrs["scores"]) == {"sums", "pick", "carry"}

    study, info = load_study(folder)
    records = front_records(study, info)
    assert {r["trial"] for r in records if r["on_front"]} == {t.number for t in study.best_trials}
    assert {r["baseline_name"] for r in records if r["baseline"]} == {"c0", "c1", "c2", "uniform", "slerp"}
    slerp = next(r for r in records if r["baseline_name"] == "slerp")  # not a simplex point: scored beside the trials
    assert slerp["trial"] is None and slerp["settings"] == {"t": 0.5}
    assert slerp["scores"] == pytest.approx(MergeWorker(spec).evaluate(SlerpRecipe("c0", "c1", 0.5).to_json()).scores)
    assert len(hypervolume_history(study, info)) == 8

    before = {t.number: (t.params, t.values) for t in study.trials}
    bigger = spec.model_copy(update={"search": spec.search.model_copy(update={"trials": 11})})
    study = run_search(bigger, folder, progress=False, in_process=True)
    assert finished_trials(study) == 11 and len(study.trials) == 11
    assert {t.number: (t.params, t.values) for t in study.trials if t.number in before} == before
    assert sum("baseline" in t.user_attrs for t in study.trials) == 4
    for t in study.trials:  # every scored candidate kept its per-example results, before and after the resume
        kept = read_results(folder, t.number)
        assert {task: len(r.scores) for task, r in kept.items()} == {"sums": 40, "pick": 40, "carry": 25}
        assert sum(kept["sums"].scores) / 40 == pytest.approx(t.user_attrs["scores"]["sums"])
    assert read_results(folder, "slerp") is not None and set(read_prompts(folder)) == {"sums", "pick", "carry"}


def test_interrupted_trials_are_failed_and_run_again(tmp_path, search_spec):
    spec = search_spec(trials=6)
    folder = tmp_path / "study"
    prepared = prepare_study(spec, folder)
    study, space = prepared.study, prepared.space
    running = study.ask()  # a search killed while this trial was being scored leaves it RUNNING
    running.set_user_attr("recipe", space.suggest(running).to_json())  # as the driver records it
    study = run_search(spec, folder, progress=False, in_process=True)
    by_number = {t.number: t for t in study.trials}
    assert by_number[0].state == TrialState.FAIL
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == 0]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == by_number[0].params
    assert retry[0].user_attrs["baseline"] == "c0"
    assert finished_trials(study) == 6


def test_front_json_from_the_command(tmp_path, search_spec, capsys):
    """`recycler front` and `recycler export --pick` through the command's entry point (one real
    process: the first call)."""
    spec = search_spec(trials=6, space="linear")
    folder = tmp_path / "study"
    run_search(spec, folder, progress=False, in_process=True)
    result = subprocess.run([sys.executable, "-m", "recycler.cli", "front", str(folder), "--format", "json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    front = json.loads(result.stdout)

    def recycler(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        status = main(list(args))
        return status, capsys.readouterr().out
    assert front["objectives"] == ["sums", "pick"] and front["held_out"] == ["carry"]
    study = optuna.load_study(study_name="tiny", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "journal.log"))))
    assert {e["trial"] for e in front["trials"] if e["on_front"]} == {t.number for t in study.best_trials}
    entry = front["trials"][0]
    assert set(entry) >= {"trial", "weights", "scores", "baseline"}
    assert set(entry["weights"]) == {"c0", "c1", "c2"} and set(entry["scores"]) == {"sums", "pick", "carry"}
    assert study.metric_names == ["sums", "pick"]

    # Narrowed: members meeting a constraint, ranked by a preference, limited; baselines still listed.
    members = [e for e in front["trials"] if e["on_front"]]
    bar = sorted(e["scores"]["pick"] for e in members)[len(members) // 2]
    status, narrowed = recycler("front", str(folder), "--format", "json", "--where", f"pick>={bar}", "--rank", "sums=1",
                                "--limit", "2")
    assert status == 0
    kept = [e for e in json.loads(narrowed)["trials"] if e["on_front"]]
    eligible = sorted((e for e in members if e["scores"]["pick"] >= bar), key=lambda e: -e["scores"]["sums"])
    assert [e["trial"] for e in kept] == [e["trial"] for e in eligible[:2]]
    assert {e["baseline_name"] for e in json.loads(narrowed)["trials"] if e["baseline"]} >= {"c0", "c1", "c2", "uniform"}

    status, table = recycler("front", str(folder))
    assert status == 0
    header = table.splitlines()[0].split()
    assert header[:4] == ["trial", "kind", "method", "front"] and "ho:carry" in header and "w:c0" not in header

    assert recycler("export", str(folder), "--pick", "sums=1", "--where", f"pick>={bar}", "--out", str(tmp_path / "picked"))[0] == 0
    assert json.loads((tmp_path / "picked" / "recycler.json").read_text())["scores"] == eligible[0]["scores"]


def test_report_and_export_of_a_trial(tmp_path, search_spec):
    from recycler.export import export_trial
    from recycler.report import write_report

    spec = search_spec(trials=6)
    folder = tmp_path / "study"
    run_search(spec, folder, progress=False, in_process=True)
    page = write_report(folder).read_text()
    assert 'id="front-plot"' in page and 'id="hv-plot"' in page and "<script src=" not in page
    assert 'id="tradeoff-plot"' in page and '"type":"parcoords"' in page
    assert "Pareto front" in page and "baselines" in page and "carry (held-out)" in page
    study, info = load_study(folder)
    assert page.count("<td>*</td>") == len(study.best_trials)
    balanced = most_balanced(front_records(study, info), info)
    assert main(["report", str(folder), "--rank", "balanced", "--limit", "1", "--out", str(tmp_path / "narrow.html")]) == 0
    narrowed = (tmp_path / "narrow.html").read_text()
    assert narrowed.count("<td>*</td>") == 1 and 'id="narrowing"' in narrowed
    assert f"<td>{balanced['trial']}</td>" in narrowed.split("<table")[1].split("<td>*</td>")[0]

    best = study.best_trials[0]
    out = export_trial(folder, best.number, tmp_path / "export")
    card = (out / "README.md").read_text()
    assert info.fingerprint in card and f"| sums | {best.user_attrs['scores']['sums']:.4f} |" in card
    exported = json.loads((out / "recycler.json").read_text())
    assert exported["recipe"] == best.user_attrs["recipe"]


def test_verify_rechecks_files_and_scores_of_an_export(tmp_path, search_spec):
    from recycler.export import export_trial
    from recycler.verify import verify_export

    spec = search_spec(trials=6)
    folder = tmp_path / "study"
    study = run_search(spec, folder, progress=False, in_process=True)
    trial = max(study.best_trials, key=lambda t: t.number)
    out = export_trial(folder, trial.number, tmp_path / "export")
    result = verify_export(out)
    assert set(result.scores) == {"sums", "pick", "carry"}
    for recorded, measured in result.scores.values():
        assert abs(recorded - measured) <= 1e-6
    assert result.files == len([p for p in out.iterdir()]) - 1

    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(RecyclerError, match="model.safetensors: sha256 differs from the manifest"):
        verify_export(out)


def test_a_shared_database_refuses_a_study_name_of_another_pool(tmp_path, local_ray, search_spec):
    """Two people's studies named alike in one database (SQLite here, as a shared RDB) must not mix."""
    import yaml

    from recycler.demo.tiny import write_pool
    from recycler.errors import RecyclerError
    from recycler.spec import load_spec

    url = f"sqlite:///{tmp_path / 'team.db'}"
    spec = search_spec(trials=4)
    run_search(spec, tmp_path / "mine", storage=url, progress=False)

    other_path = write_pool(tmp_path / "other", 3, width=24)  # another pool, the same study name
    other = yaml.safe_load(other_path.read_text())
    other.update(name=spec.name, suite=str(tmp_path / "suite" / "suite.yaml"), search=spec.search.model_dump(mode="json"))
    other_path.write_text(yaml.safe_dump(other))
    with pytest.raises(RecyclerError, match=f"--storage: the study '{spec.name}' in this database searches another pool"):
        prepare_study(load_spec(other_path), tmp_path / "theirs", storage=url)
    assert not (tmp_path / "theirs").exists()  # nothing written

    linear = spec.model_copy(update={"search": spec.search.model_copy(update={"space": "linear"})})
    with pytest.raises(RecyclerError, match="searches other objectives or another space"):
        prepare_study(linear, tmp_path / "linear", storage=url)

    joined = prepare_study(spec, tmp_path / "second-driver", storage=url)  # the same pool: a second driver joins
    assert finished_trials(joined.study) == 4


def test_a_second_driver_on_a_study_folder_with_a_journal_is_refused_with_one_line(tmp_path, search_spec):
    """A journal file has no heartbeats, so one `recycler run` at a time holds its study folder."""
    spec = search_spec(trials=2)
    folder = tmp_path / "study"
    folder.mkdir()
    with folder_lock(folder), pytest.raises(RecyclerError, match="another recycler run .* is running this study"):
        run_search(spec, folder, progress=False)
    assert not load_study(folder)[0].trials[0].state.is_finished()  # the holder's queue was left alone


def test_corpus_metrics_held_in_and_held_out_are_searched_and_shown(tmp_path, search_spec, capsys):
    """lm-eval's corpus-level f1 (its per-example value is a pair, its score an aggregate): scored,
    recorded, on the front, in the report and beside a baseline's answers, per-example values kept
    as not comparable."""
    import yaml

    from recycler.compare import with_examples
    from tests.suites import add_f1_task

    spec = search_spec(trials=5, workers=1)
    for name in ("pickf1", "pairf1"):
        add_f1_task(tmp_path / "suite" / "tasks", name, choices=2)
    suite = yaml.safe_load((tmp_path / "suite" / "suite.yaml").read_text())
    suite.update(held_in=[{"task": "sums"}, {"task": "pickf1", "metric": "f1"}], held_out=[{"task": "pairf1", "metric": "f1"}])
    (tmp_path / "suite" / "suite.yaml").write_text(yaml.safe_dump(suite))
    study = run_search(spec, tmp_path / "study", progress=False, in_process=True)
    assert finished_trials(study) == 5 and all(t.state == TrialState.COMPLETE for t in study.trials)
    _, info = load_study(tmp_path / "study")
    records = front_records(study, info, include_all=True)
    assert all(isinstance(r["scores"]["pickf1"], float) and isinstance(r["scores"]["pairf1"], float) for r in records)
    results = read_results(tmp_path / "study", 0)
    assert results["pickf1"].scores == [None] * len(results["pickf1"].scores)
    assert with_examples(tmp_path / "study", records, info, 2)
    assert main(["front", str(tmp_path / "study"), "--examples", "2"]) in (None, 0)
    assert "pairf1" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "study")]) in (None, 0)


def test_front_of_a_study_without_a_completed_trial_is_a_sentence(tmp_path, search_spec, capsys):
    prepare_study(search_spec(trials=4), tmp_path / "study")
    assert main(["front", str(tmp_path / "study")]) in (None, 0)
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path / 'study'}: no trial has completed yet (4 waiting; run `recycler run`") and "Empty DataFrame" not in out
