"""The demo suite as shipped: its data is what the skills write, and it loads through lm-eval."""

from pathlib import Path

from recycler.demo.skills import TASKS, write_eval_data
from recycler.suite import SUITES_DIR, load_suite


def test_shipped_data_is_what_the_skills_generate(tmp_path):
    write_eval_data(tmp_path)
    shipped = SUITES_DIR / "demo" / "data"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in shipped.iterdir())
    for file in tmp_path.iterdir():
        assert file.read_text() == (shipped / file.name).read_text(), file.name


def test_demo_suite_splits_single_skills_from_chains():
    suite = load_suite("demo")
    assert len(suite.held_in) >= 4 and len(suite.held_out) >= 2
    assert set(suite.held_in) == {name for name, task in TASKS.items() if not task.held_out}
    assert {name.removesuffix("_gen") for name in suite.held_out} == {name for name, task in TASKS.items() if task.held_out}
    tasks = suite.build_tasks()
    assert tasks["upper_double_gen"].get_config("output_type") == "generate_until"
    assert all(len(tasks[name].eval_docs) == 100 for name in tasks)
    assert Path(tasks["add"].config.dataset_kwargs["data_files"]["test"]).is_absolute()
