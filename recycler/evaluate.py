"""Scoring an evaluation engine's model on a suite through lm-eval, with its requests built once.

lm-eval's `evaluate` rebuilds every request on each call; a search scores hundreds of merges of
the same model, so the scorer builds the tasks and their requests once, and per candidate re-runs
only the model (through the engine's lm-eval LM) and the metrics (each task's own `process_results`,
filters and aggregation), which keeps lm-eval's scoring semantics exactly.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection, Mapping
from typing import Any

import torch

from recycler.engine import EvaluationEngine
from recycler.errors import RecyclerError
from recycler.library_seams import apply_filters_to
from recycler.results import CandidateResult, Costs, TaskExamples
from recycler.suite import Suite, SuiteTask, is_group, members, scored_filter

# Example indices by task, in the suite's example order: what a screening stage scores.
Selection = Mapping[str, Collection[int]]


class Scorer:
    """Scores whatever weights the engine's model holds right now, on one suite."""

    def __init__(self, suite: Suite, engine: EvaluationEngine) -> None:
        tokenizer = engine.lm.tokenizer
        suite.check_tokenizer(tokenizer, tokenizer.name_or_path or "the model")
        self.suite = suite
        self.tasks = suite.build_tasks()
        self.lm = engine.lm
        self._count = engine.count
        self._requests: dict[str, list[Any]] = defaultdict(list)
        chat = suite.spec.apply_chat_template
        for spec in suite.tasks:
            for task in members(self.tasks[spec.task]):
                task.build_all_requests(  # as lm-eval's own evaluate() builds them
                    limit=suite.limit(spec), rank=0, world_size=1,
                    system_instruction=suite.spec.system_instruction,
                    apply_chat_template=chat,
                    fewshot_as_multiturn=suite.spec.fewshot_as_multiturn,
                    chat_template=self.lm.apply_chat_template if chat else None,
                    tokenizer_name=self.lm.tokenizer_name if chat else "",
                )
                for instance in task.instances:
                    self._requests[instance.request_type].append(instance)

    @torch.no_grad()
    def score(self, examples: Selection | None = None) -> CandidateResult:
        """Run every request (or those of the selected examples) through the model and aggregate
        each task's metric over the examples scored; the costs are the scoring's (no merge)."""
        started = time.perf_counter()
        forward_before, tokens_before = self._count.seconds, self._count.tokens
        for request_type, every in self._requests.items():
            instances = [i for i in every if examples is None or i.doc_id in examples.get(i.task_name, ())]
            for instance in instances:
                instance.resps.clear()
                instance.filtered_resps.clear()
            repeated = [instance for instance in instances for _ in range(instance.repeats)]
            responses = getattr(self.lm, request_type)(repeated, disable_tqdm=True)
            for response, instance in zip(responses, repeated, strict=True):
                instance.resps.append(response)
        results = {spec.task: self._aggregate(spec, None if examples is None else set(examples.get(spec.task, ())))
                   for spec in self.suite.tasks}
        return CandidateResult(
            scores={task: score for task, (score, _) in results.items()},
            examples={task: examples for task, (_, examples) in results.items()},
            costs=Costs(forward_seconds=self._count.seconds - forward_before, trial_seconds=time.perf_counter() - started,
                        forward_tokens=self._count.tokens - tokens_before),
        )

    def _aggregate(self, spec: SuiteTask, chosen: set[int] | None) -> tuple[float, TaskExamples]:
        """The suite task's score as lm-eval aggregates it over the examples scored (all, or
        `chosen`), and each one's value of the metric; a group's (never screened: search refuses
        it) from all its members' examples, as lm-eval puts a group's score together."""
        task = self.tasks[spec.task]
        if is_group(task):
            if chosen is not None:
                raise RecyclerError(f"task '{spec.task}': an lm-eval group is scored whole, never on a selection of examples")
            parts = [self._examples(member, spec, None) for member in members(task)]
            return (self.suite.aggregate_group(task, spec, [values for values, _ in parts]),
                    TaskExamples.joined([examples for _, examples in parts]))
        values, examples = self._examples(task, spec, chosen)
        return self.suite.aggregate(task, spec, values), examples

    def _examples(self, task: Any, spec: SuiteTask, chosen: set[int] | None) -> tuple[list[Any], TaskExamples]:
        """One lm-eval task's values of the suite task's metric, per example scored (all, or
        `chosen`), for its aggregation, and as the per-example results report them."""
        scored = [i for i in task.instances if chosen is None or i.doc_id in chosen]
        apply_filters_to(task, scored)
        metric, filter_key = spec.metric_name, scored_filter(task, spec)
        by_doc: dict[int, list[Any]] = defaultdict(list)
        for instance in scored:
            by_doc[instance.doc_id].append(instance)
        values, answers = [], []
        docs = [(i, doc) for i, doc in task.doc_iterator(rank=0, limit=self.suite.limit(spec), world_size=1)
                if chosen is None or i in chosen]
        for doc_id, doc in docs:
            requests = sorted(by_doc[doc_id], key=lambda instance: instance.idx)
            filtered = [r.filtered_resps[filter_key] for r in requests]
            values.append(task.process_results(doc, filtered)[metric])
            answers.append(filtered[0] if isinstance(filtered[0], str) else str(filtered[0]))
        generated = task.get_config("output_type") == "generate_until"
        indices = None if chosen is None else [i for i, _ in docs]
        per_example = [float(v) if isinstance(v, (int, float)) else None for v in values]  # corpus metrics (bleu, f1) keep pairs
        return values, TaskExamples(per_example, answers if generated else None, indices)
