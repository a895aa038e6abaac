"""recycler: search linear merges of a checkpoint pool for the Pareto front of capabilities.

A pool spec names the checkpoints (spec, pool), a search space turns Optuna's parameters into merge
recipes (space, recipes), workers materialize each candidate (merge, residency, engines) and score it
with lm-eval (suite, evaluate, workers) into one result type (results), the search prepares a study
and schedules them (preparation, search, worker_pools, cluster, coordination) and keeps the outcomes
in Optuna storage (ledger, records, study), and the front is read from there (pareto, front,
selection, report, export). The README's code map has each module's one job.
"""

__version__ = "0.1.0"
