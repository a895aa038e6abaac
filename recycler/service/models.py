"""The API's request and response bodies; the OpenAPI schema is generated from them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StudyState = Literal["queued", "running", "done", "failed", "cancelled", "elsewhere"]  # elsewhere: run by another machine (service/shared.py)
ExportState = Literal["queued", "running", "done", "failed"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitStudy(_Body):
    """A pool spec as `recycler run` reads it from YAML, as a JSON object."""

    spec: dict[str, Any] = Field(description="the pool spec mapping")
    root: str | None = Field(default=None, description="folder that relative paths in the spec resolve against "
                                                       "(default: the first allowed root); must lie under an allowed root")


class StudySummary(BaseModel):
    id: str
    name: str
    state: StudyState
    finished: int = Field(description="trials finished (completed, or failed for good)")
    budget: int = Field(description="trials the study runs, baselines included")
    error: str | None
    created: float
    updated: float


class HypervolumePoint(BaseModel):
    trial: int
    hypervolume: float


class Plots(BaseModel):
    """Plotly figures (data and layout) for the page: the front, its trade-offs task by task
    (parallel coordinates), and hypervolume by trial."""

    front: dict[str, Any]
    tradeoffs: dict[str, Any]
    hypervolume: dict[str, Any]


class ExportRequest(_Body):
    trial: int = Field(ge=0)
    out: str = Field(description="folder to write the HF checkpoint to; must lie under an allowed root and be empty or absent")


class ExportStatus(BaseModel):
    id: str
    study_id: str
    trial: int
    out: str
    state: ExportState
    error: str | None
    manifest: dict[str, Any] | None = Field(description="the export's manifest.json once it is done")


AuditedAction = Literal["submit", "cancel", "export"]


class AuditEntry(BaseModel):
    """One action in DATA/audit.jsonl: when, by which token, on what, from which address."""

    time: float
    token: str = Field(description="the name of the token used")
    action: AuditedAction
    target: str = Field(description="the study (and for an export, the trial and the folder)")
    address: str | None = Field(description="the client's address as the server saw it")
