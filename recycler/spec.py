"""The pool spec: a YAML file naming the checkpoints, the suite, the objectives, the search and the resources.

Validated at the edge with pydantic so every error names its field path; relative paths resolve
against the spec file's folder so a spec and its pool can move together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    ByteSize,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from recycler.config import Name, StrictModel, first_error, reference_or_inline, resolve_path
from recycler.engine import DEFAULT_ENGINE, engine_names
from recycler.errors import RecyclerError
from recycler.references import is_file_reference
from recycler.suite import SuiteSpec
from recycler.yaml_files import load_yaml_file


class CheckpointRef(StrictModel):
    """One checkpoint of the pool: an HF-format folder with config.json, tokenizer and safetensors."""

    name: Name
    path: Path

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info)


MAX_STAGES = 8  # a schedule is a few stages; each is stored on the study, with its examples


class Fidelity(StrictModel):
    """Screening: each candidate is scored on a fixed subset of every task's examples first (or on
    nested subsets, stage by stage), and finished only if it can still reach the front."""

    screen_fraction: float | list[float] = Field(
        description="share of each task's examples scored first; a rising list (0.1, 0.3): stages, each adding examples")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="one-sided confidence of the optimistic bound")
    member_credit: float = Field(
        default=0.0, ge=0, description="standard errors of its own full scores credited to each front member: a "
                                       "candidate that could beat it only by less is a tie, and dropped (0: exact "
                                       "dominance; BENCHMARKS.md section 8 measured 1 dropping front members on 100-example tasks)")
    history_after: int | None = Field(
        default=20, ge=5, description="fully scored trials after which the study's history also estimates full scores "
                                      "from the subset; null: never")
    seed: int = Field(default=0, description="draws the subset")

    @field_validator("screen_fraction")
    @classmethod
    def _rising_shares(cls, value: float | list[float]) -> float | list[float]:
        shares = value if isinstance(value, list) else [value]
        if len(shares) > MAX_STAGES:
            raise ValueError(f"at most {MAX_STAGES} stages, got {len(shares)}")
        if not shares or any(not 0 < share < 1 for share in shares):
            raise ValueError("each share must lie strictly between 0 and 1")
        if any(later <= earlier for earlier, later in zip(shares, shares[1:])):
            raise ValueError(f"stages must rise: {shares}")
        return value

    @property
    def stages(self) -> list[float]:
        return self.screen_fraction if isinstance(self.screen_fraction, list) else [self.screen_fraction]


class SearchConfig(StrictModel):
    """What to search and for how long."""

    space: str = Field(default="simplex", description="a space in search_spaces/ or a path to a space file")
    trials: int = Field(default=50, gt=0, description="trials in the study, baselines included")
    sampler: str = Field(default="default", description="'default' or an Optuna sampler class name")
    seed: int = 0
    max_retries: int = Field(default=2, ge=0, description="times a trial whose worker failed is run again")
    fidelity: Fidelity | None = Field(default=None, description="screen candidates on a subset first; off: score everything")

    @field_validator("space")
    @classmethod
    def _resolve_space(cls, value: str, info: ValidationInfo) -> str:
        return str(resolve_path(Path(value), info)) if is_file_reference(value) else value


class Resources(StrictModel):
    """How many worker actors score candidates, the GPUs each one holds, and the memory each may
    spend on the pool."""

    workers: int = Field(default=1, gt=0)
    gpus_per_worker: float = Field(
        default=0.0, ge=0.0,
        description="GPUs each worker holds; with engine vllm, k >= 2 GPUs are one engine's tensor parallelism",
    )
    engine: str = Field(default=DEFAULT_ENGINE, description="what scores candidates: 'hf' (transformers) or 'vllm'")
    kv_cache_per_worker: int = Field(
        default=1 << 30,
        description="bytes ('1GiB') of the worker's memory budget given to the engine's KV cache (engine vllm)",
    )
    memory_per_worker: Literal["auto"] | int = Field(
        default="auto",
        description="bytes ('24GB', '512MiB') a worker may hold for the model, scratch and, when they fit, the "
        "pool's stacks; 'auto': half of what its device (or its share of the machine) has free",
    )

    heartbeat_seconds: int = Field(
        default=10, gt=0,
        description="how often a driver tells a shared database that its trials are alive; a driver silent for 3 "
        "beats is taken for lost and its trials are queued again",
    )
    placement_timeout_seconds: int = Field(
        default=600, gt=0,
        description="how long workers may wait for room in the Ray cluster (at start, or to replace the last "
        "lost one) before the search ends with what the cluster lacks",
    )

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if value not in engine_names():
            raise ValueError(f"'{value}' is not an engine (engines: {', '.join(engine_names())})")
        return value

    @field_validator("memory_per_worker", "kv_cache_per_worker", mode="before")
    @classmethod
    def _size(cls, value: Any, info: ValidationInfo) -> Any:
        may_be_auto = info.field_name == "memory_per_worker"
        if value == "auto" and may_be_auto:
            return value
        try:
            size = TypeAdapter(ByteSize).validate_python(value)
        except ValidationError:
            expected = "neither 'auto' nor a size" if may_be_auto else "not a size"
            raise ValueError(f"{value!r} is {expected} such as '24GB' or '512MiB'") from None
        if size <= 0:
            raise ValueError(f"{value!r} is not a positive size")
        return int(size)

    @property
    def memory_budget(self) -> int | None:
        """The budget in bytes, or None for `auto`."""
        return None if self.memory_per_worker == "auto" else int(self.memory_per_worker)


class PoolSpec(StrictModel):
    """A pool of checkpoints of one architecture and what to search over it."""

    name: Name
    checkpoints: list[CheckpointRef] = Field(min_length=2)
    base: CheckpointRef | None = None
    suite: reference_or_inline(SuiteSpec) = Field(  # type: ignore[valid-type]
        default="demo", description="a suite name in eval_suites/, a path to a suite file, or a suite inline"
    )
    objectives: list[Name] | None = Field(
        default=None, description="held-in tasks to optimize; all of the suite's held-in tasks when omitted"
    )
    search: SearchConfig = SearchConfig()
    resources: Resources = Resources()

    @field_validator("suite")
    @classmethod
    def _resolve_suite(cls, value: str | SuiteSpec, info: ValidationInfo) -> str | SuiteSpec:
        if isinstance(value, str) and is_file_reference(value):
            return str(resolve_path(Path(value), info))
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> PoolSpec:
        seen: set[str] = set()
        refs = self.checkpoints + ([self.base] if self.base else [])
        for i, ref in enumerate(refs):
            if ref.name in seen:
                where = f"checkpoints.{i}.name" if i < len(self.checkpoints) else "base.name"
                raise ValueError(f"{where}: duplicate checkpoint name '{ref.name}'")
            seen.add(ref.name)
        return self

    @property
    def checkpoint_names(self) -> list[str]:
        return [ref.name for ref in self.checkpoints]


def parse_spec(data: Any, root: Path, source: str) -> PoolSpec:
    """Validate a spec mapping; relative paths resolve against root; errors name source and field."""
    if not isinstance(data, dict):
        raise RecyclerError(f"{source}: a pool spec must be a YAML mapping, got {type(data).__name__}")
    try:
        return PoolSpec.model_validate(data, context={"root": root})
    except ValidationError as error:
        raise RecyclerError(f"{source}: {first_error(error)}") from None


def load_spec(path: str | Path) -> PoolSpec:
    """Read and validate a pool spec file."""
    path = Path(path)
    if not path.is_file():
        raise RecyclerError(f"{path}: pool spec not found")
    return parse_spec(load_yaml_file(path, str(path)), path.resolve().parent, str(path))
