"""Benchmark: screening's rules against full evaluation and against the oracle ceiling.

Per suite (scripts/screening_suites.py) and seed, on the demo pool (default sampler, 2 Ray workers):
1. full evaluation: a study that scores every candidate in full (`--full-trials`, 100); its
   candidates keep their per-example results, so the rules can be replayed on them.
2. the ceiling, replayed on full evaluation's own candidates in trial order: the share of examples
   an oracle that knew every full score could save by dropping, at no cost, what the front before
   it dominates, exactly ("dominance") and with every front member credited one standard error of
   its full score ("within 1 SE").
3. each rule (`--rules`) replayed on the same candidates (no sampler in the loop, so no noise from
   the search's path): examples it spends, candidates it drops, wrong drops (a dropped candidate on
   the final front of full evaluation's candidates) and meaningful wrong drops (a dropped candidate
   whose full scores put it more than one standard error beyond every kept trial on some
   objective), the hypervolume of what it keeps ÷ full's, and the examples it needs to reach 0.99×
   full's final hypervolume ÷ the examples full evaluation itself needs to (the oracles' beside it).
4. online (`--online RULE ...`): one study per rule and seed run until it scored 1.05× full's
   examples; examples (and forward tokens) to reach full's 100-trial hypervolume ÷ full's, and the
   hypervolume at full's examples ÷ full's. Every dropped candidate is then scored in full
   (in-process) to count its wrong and meaningful wrong drops.
Studies are kept under --root and reused when run again (a finished study is only re-read).

    python scripts/bench_screening_rules.py --suites two six two500 layerwise generation --seeds 0 1 2 \
        --online paired default [--out scripts/bench_data/screening_rules.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from bench_screening import curve, examples_to_reach, hv_at_budget, run_study
from screening_suites import SUITES, suite_spec

from recycler.examples import read_prompts, read_results
from recycler.files import write_text_atomic
from recycler.front import reference_point
from recycler.pareto import FrontTracker, dominates, hypervolume
from recycler.records import stored_trials
from recycler.screening import FrontMember, Screening, choose_stages, credited
from recycler.spec import Fidelity, load_spec
from recycler.study import load_study

DATA = Path(__file__).resolve().parent / "bench_data"


@dataclass(frozen=True)
class Rule:
    """A screening setting, as `search.fidelity` would give it."""

    stages: list[float]
    confidence: float
    member_credit: float
    history_after: int | None

    def fidelity(self, seed: int) -> Fidelity:
        shares = self.stages if len(self.stages) > 1 else self.stages[0]
        return Fidelity(screen_fraction=shares, confidence=self.confidence, member_credit=self.member_credit,
                        history_after=self.history_after, seed=seed)


RULES = {
    "paired": Rule([0.2], 0.9, 0.0, None),  # issue 18's rule: exact dominance of the paired bound
    "credit": Rule([0.2], 0.9, 1.0, None),
    "stages": Rule([0.1, 0.3], 0.9, 1.0, None),
    "history": Rule([0.2], 0.9, 1.0, 20),
    "stages+history": Rule([0.1, 0.3], 0.9, 1.0, 20),
    "credited": Rule([0.1, 0.3], 0.95, 1.0, 20),
    "default": Rule([0.1, 0.3], 0.95, 0.0, 20),  # search.fidelity's defaults with the schedule 0.1, 0.3
}


def front_of(values: list[list[float]], directions: list[str]) -> list[list[float]]:
    return [v for v in values if not any(dominates(o, v, directions) for o in values)]


def within_noise(candidate: list[float], kept: list[FrontMember], directions: list[str]) -> bool:
    """Whether some kept trial, credited one standard error, is at least as good on every objective:
    a candidate that is not lies more than one standard error beyond every kept trial somewhere."""
    return any(all((c >= v) if d == "maximize" else (c <= v) for c, v, d in zip(credited(k, directions, 1.0), candidate, directions))
               for k in kept)


REACH = 0.99  # the replay's hypervolume target: this share of full evaluation's after all its candidates


class ReplayPath:
    """Cumulative examples and the hypervolume of what was kept, candidate by candidate."""

    def __init__(self, directions: list[str], reference) -> None:
        self.tracker = FrontTracker(directions, reference)
        self.examples: list[int] = []
        self.hypervolume: list[float] = []

    def step(self, examples: int, kept_values: list[float] | None) -> None:
        if kept_values is not None:
            self.tracker.add(kept_values)
        self.examples.append((self.examples[-1] if self.examples else 0) + examples)
        self.hypervolume.append(self.tracker.hypervolume)

    def ratio_to_reach(self, target: float, total: int) -> float | None:
        return next((e / total for e, h in zip(self.examples, self.hypervolume) if h >= target - 1e-12), None)


def replay(folder: Path, rule: Rule, seed: int) -> dict:
    """Full evaluation's candidates, in trial order, through `rule`; and the two oracles' ceilings."""
    study, info = load_study(folder)
    objectives, directions = info.objectives, info.directions
    trials = sorted(stored_trials(study, complete_only=True), key=lambda t: t.number)
    texts = read_prompts(folder)
    totals = {task: len(v) for task, v in texts.items()}
    screening = Screening(choose_stages(texts, rule.stages, seed), totals, rule.confidence, frozenset(objectives),
                          rule.member_credit, rule.history_after)
    results = {t.number: read_results(folder, t.number) for t in trials}
    members = {t.number: FrontMember(t.number, t.values, screening.on_subset(results[t.number], objectives),
                                     screening.standard_errors(results[t.number], objectives)) for t in trials}
    full_cost = sum(totals.values())
    stage_cost = [sum(map(len, stage.values())) for stage in screening.stages]
    reference = reference_point(study, info)
    kept: list[FrontMember] = []
    oracle_kept: list[FrontMember] = []
    spent, dropped, dominated, within = 0, [], 0, 0
    paths = {name: ReplayPath(directions, reference) for name in ("full", "rule", "oracle_dominance", "oracle_within_1_se")}
    for t in trials:
        member = members[t.number]
        paths["full"].step(full_cost, t.values)
        if t.baseline is None:
            before = [members[o.number] for o in trials if o.number < t.number]
            exactly = any(dominates(o.values, t.values, directions) for o in before)
            dominated += exactly
            paths["oracle_dominance"].step(0 if exactly else full_cost, None if exactly else t.values)
            oracle_front = [m for m in oracle_kept if not any(dominates(o.values, m.values, directions) for o in oracle_kept)]
            if any(dominates(credited(m, directions, 1.0), t.values, directions) for m in oracle_front):
                within += 1
                paths["oracle_within_1_se"].step(0, None)
            else:
                oracle_kept.append(member)
                paths["oracle_within_1_se"].step(full_cost, t.values)
            front = [m for m in kept if not any(dominates(o.values, m.values, directions) for o in kept)]
            for stage in range(len(screening.stages)):
                candidate = screening.on_subset(results[t.number], objectives, stage)
                if not screening.verdict(candidate, front, objectives, directions, stage, kept).finish:
                    dropped.append(member)
                    spent += stage_cost[stage]
                    paths["rule"].step(stage_cost[stage], None)
                    break
            else:
                kept.append(member)
                spent += full_cost
                paths["rule"].step(full_cost, t.values)
        else:
            oracle_kept.append(member)
            kept.append(member)
            spent += full_cost
            for name in ("rule", "oracle_dominance", "oracle_within_1_se"):
                paths[name].step(full_cost, t.values)
    all_values = [t.values for t in trials]
    final = front_of(all_values, directions)
    candidates = sum(t.baseline is None for t in trials)
    target = REACH * paths["full"].hypervolume[-1]
    saved = 1 - spent / (len(trials) * full_cost)
    ceiling = {"dominance": dominated / len(trials), "within_1_se": within / len(trials)}
    return {
        "candidates": candidates,
        "dropped": len(dropped),
        "examples_ratio": spent / (len(trials) * full_cost),
        "saved": saved,
        "ceiling": ceiling,
        "saved_of_ceiling": {k: saved / v if v else None for k, v in ceiling.items()},
        "wrong": sum(m.values in final for m in dropped),
        "meaningful_wrong": sum(not within_noise(m.values, kept, directions) for m in dropped),
        "hypervolume_ratio": hypervolume(front_of([m.values for m in kept], directions), directions, reference)
        / hypervolume(final, directions, reference),
        "final_front": len(final),
        "examples_ratio_to_reach": {name: path.ratio_to_reach(target, len(trials) * full_cost) for name, path in paths.items()},
    }


def tokens_curve(folder: Path) -> list[int]:
    """Cumulative forward tokens per trial, in trial order (as bench_screening.curve counts examples)."""
    spent, out = 0, []
    for t in sorted(stored_trials(load_study(folder)[0]), key=lambda t: t.number):
        spent += t.forward_tokens or 0
        out.append(spent)
    return out


def rescored_drops(folder: Path, worker) -> dict:
    """Every dropped candidate of a screening study scored in full (kept in the study folder, so a
    second run reads them): how many would have been on the final front (wrong), and how many more
    than one standard error beyond every kept trial (meaningful)."""
    study, info = load_study(folder)
    trials = stored_trials(study)
    complete = [t for t in trials if t.complete]
    kept = [FrontMember(t.number, t.values, {}, t.standard_errors) for t in complete]
    wrong = meaningful = 0
    dropped = [t for t in trials if t.screened_out]
    kept_file = folder / "bench_rescored.json"
    scores = json.loads(kept_file.read_text()) if kept_file.exists() else {}
    for t in dropped:
        if str(t.number) not in scores:
            scores[str(t.number)] = worker.evaluate(t.recipe).scores
            write_text_atomic(kept_file, json.dumps(scores))
        values = [scores[str(t.number)][o] for o in info.objectives]
        wrong += not any(dominates(c.values, values, info.directions) for c in complete)
        meaningful += not within_noise(values, kept, info.directions)
    return {"dropped": len(dropped), "wrong": wrong, "meaningful_wrong": meaningful,
            "candidates": sum(t.baseline is None and (t.complete or t.screened_out) for t in trials)}


def median(values: list) -> float | None:
    """The median, a value that was never reached (None) counting as the largest; None if that is the median."""
    middle = statistics.median(math.inf if v is None else v for v in values)
    return None if math.isinf(middle) else middle


def ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else value / reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=Path, default=Path("recycler-demo/pool/pool.yaml"))
    parser.add_argument("--root", type=Path, default=Path("recycler-demo/screening-rules"))
    parser.add_argument("--suites", nargs="+", default=list(SUITES), choices=SUITES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--full-trials", type=int, default=100)
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES, help="rules replayed on full's candidates")
    parser.add_argument("--online", nargs="*", default=[], choices=RULES, help="rules run as studies of their own")
    parser.add_argument("--budget-factor", type=float, default=1.05, help="an online study runs until this times full's examples")
    parser.add_argument("--max-trials", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DATA / "screening_rules.json")
    args = parser.parse_args()

    import optuna
    import ray
    import torch

    from recycler.cli import quiet_libraries
    from recycler.workers import MergeWorker

    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    pool_spec = load_spec(args.pool)
    results: dict = {"command": "python scripts/bench_screening_rules.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items()
        if k != "out" and v not in (None, [])), "rules": {k: vars(v) for k, v in RULES.items()}, "suites": {}}
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for name in args.suites:
            spec = suite_spec(pool_spec, name, args.root)
            suite = results["suites"][name] = {"seeds": {}}
            for seed in args.seeds:
                entry = suite["seeds"][str(seed)] = {}
                folder = args.root / name / f"full-s{seed}"
                seconds = run_study(spec, folder, args.full_trials, seed, args.workers, None)
                full = curve(folder)
                entry["full"] = {"seconds": seconds, "trials": full["trials"], "front": full["front"],
                                 "examples": full["examples"][-1], "forward_tokens": tokens_curve(folder)[-1],
                                 "hypervolume": full["hypervolume"][-1]}
                entry["replay"] = {rule: replay(folder, RULES[rule], seed) for rule in args.rules}
                for rule in args.online:
                    entry[rule] = online(spec, args, name, seed, rule, entry["full"])
                write_text_atomic(args.out, json.dumps(results, indent=1))
    finally:
        ray.shutdown()
    if args.online:
        torch.set_num_threads(args.workers)
        for name in args.suites:
            worker = MergeWorker(suite_spec(pool_spec, name, args.root))
            for seed, entry in results["suites"][name]["seeds"].items():
                for rule in args.online:
                    entry[rule]["drops"] = rescored_drops(args.root / name / f"{rule}-s{seed}", worker)
            write_text_atomic(args.out, json.dumps(results, indent=1))
    for name, suite in results["suites"].items():
        suite["summary"] = summary(suite["seeds"], args.rules, args.online)
        for rule, row in suite["summary"].items():
            print(f"{name} {rule}: {json.dumps(row)}", flush=True)
    write_text_atomic(args.out, json.dumps(results, indent=1))


def online(spec, args, suite: str, seed: int, rule: str, full: dict) -> dict:
    """One study screened by `rule`, run until it scored `budget_factor` times full's examples."""
    folder = args.root / suite / f"{rule}-s{seed}"
    seconds = run_study(spec, folder, args.max_trials, seed, args.workers, RULES[rule].fidelity(seed),
                        stop_at_examples=int(full["examples"] * args.budget_factor))
    c = curve(folder)
    tokens = tokens_curve(folder)
    reach = examples_to_reach(c, full["hypervolume"])
    reach_tokens = next((k for k, h in zip(tokens, c["hypervolume"]) if h >= full["hypervolume"] - 1e-12), None)
    row = {"seconds": seconds, "trials": c["trials"], "screened_out": c["screened_out"],
           "examples_ratio_to_reach": None if reach is None else reach / full["examples"],
           "tokens_ratio_to_reach": None if reach_tokens is None else reach_tokens / full["forward_tokens"],
           "hv_ratio_at_equal_examples": hv_at_budget(c, full["examples"]) / full["hypervolume"],
           "hv_ratio_at_end": c["hypervolume"][-1] / full["hypervolume"]}
    print(f"{suite} seed {seed} {rule}: {json.dumps(row)}", flush=True)
    return row


def summary(seeds: dict, rules: list[str], online_rules: list[str]) -> dict:
    """Medians over seeds (a figure never reached counts as the largest); drops summed over seeds."""
    out = {}
    for rule in rules:
        rows = [entry["replay"][rule] for entry in seeds.values()]
        reach = [r["examples_ratio_to_reach"] for r in rows]
        out[f"replay {rule}"] = {
            "saved": median([r["saved"] for r in rows]),
            "ceiling_dominance": median([r["ceiling"]["dominance"] for r in rows]),
            "ceiling_within_1_se": median([r["ceiling"]["within_1_se"] for r in rows]),
            "saved_of_ceiling_within_1_se": median([r["saved_of_ceiling"]["within_1_se"] for r in rows]),
            "examples_to_reach_99_vs_full": [ratio(r["rule"], r["full"]) for r in reach],
            "median_examples_to_reach_99_vs_full": median([ratio(r["rule"], r["full"]) for r in reach]),
            "oracle_dominance_to_reach_99_vs_full": median([ratio(r["oracle_dominance"], r["full"]) for r in reach]),
            "dropped": sum(r["dropped"] for r in rows), "wrong": sum(r["wrong"] for r in rows),
            "meaningful_wrong": sum(r["meaningful_wrong"] for r in rows), "candidates": sum(r["candidates"] for r in rows),
            "hypervolume_ratio": [r["hypervolume_ratio"] for r in rows],
        }
    for rule in online_rules:
        rows = [entry[rule] for entry in seeds.values()]
        drops = [r.get("drops", {}) for r in rows]
        out[f"online {rule}"] = {
            "examples_ratio_to_reach": [r["examples_ratio_to_reach"] for r in rows],
            "median_examples_ratio_to_reach": median([r["examples_ratio_to_reach"] for r in rows]),
            "median_tokens_ratio_to_reach": median([r["tokens_ratio_to_reach"] for r in rows]),
            "hv_ratio_at_equal_examples": [r["hv_ratio_at_equal_examples"] for r in rows],
            "dropped": sum(d.get("dropped", 0) for d in drops), "wrong": sum(d.get("wrong", 0) for d in drops),
            "meaningful_wrong": sum(d.get("meaningful_wrong", 0) for d in drops),
            "candidates": sum(d.get("candidates", 0) for d in drops),
        }
    return out


if __name__ == "__main__":
    main()
