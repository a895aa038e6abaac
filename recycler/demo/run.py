"""`recycler demo`: build the demo pool if missing, search it, print the front, export, report."""

from __future__ import annotations

from pathlib import Path

from recycler.demo.build import build_demo_pool
from recycler.export import export_trial
from recycler.front import front_records, front_table
from recycler.report import write_report
from recycler.search import run_search
from recycler.selection import most_balanced
from recycler.spec import load_spec
from recycler.study import load_study


def run_demo(root: Path, trials: int, workers: int) -> None:
    """Everything a new user sees: a real pool, its front against the baselines, one export."""
    root = Path(root)
    pool_yaml = build_demo_pool(root / "pool")
    spec = load_spec(pool_yaml)
    spec = spec.model_copy(update={
        "search": spec.search.model_copy(update={"trials": trials}),
        "resources": spec.resources.model_copy(update={"workers": workers}),
    })
    study_dir = root / "study"
    print(f"searching {len(spec.checkpoints)} checkpoints, {trials} trials on {workers} workers; study in {study_dir}")
    run_search(spec, study_dir)
    study, info = load_study(study_dir)
    records = front_records(study, info)
    print(front_table(records, info).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    chosen = most_balanced(records, info)
    out = export_trial(study_dir, chosen["trial"], root / "export", overwrite=True)
    print(f"most balanced front member: trial {chosen['trial']}, exported to {out}")
    print(f"report: {write_report(study_dir, root / 'report.html')}")
