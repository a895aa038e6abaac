"""The /api routes. Each reads the service's parts (store, allowed roots, runner, tokens, audit log)
from the app, so the routes are plain functions and one app's state never leaks into another's.

Every route needs a token (401 without one) of the `read` scope at least; a route that changes
something asks for its scope itself, as a dependency, and writes what it did to the audit log."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from recycler.errors import RecyclerError
from recycler.records import ExampleComparison, FrontDocument
from recycler.service.audit import AuditLog
from recycler.service.models import (
    AuditEntry,
    ExportRequest,
    ExportStatus,
    HypervolumePoint,
    Plots,
    StudySummary,
    SubmitStudy,
)
from recycler.service.runner import Runner
from recycler.service.security import AllowedRoots
from recycler.service.snapshots import snapshot_spec
from recycler.service.specs import check_spec_paths, refuse_parent_parts
from recycler.service.store import ExportRow, Store, StudyRow
from recycler.service.tokens import Caller, Scope, Tokens
from recycler.spec import parse_spec
from recycler.study import is_study_folder


@dataclass(frozen=True)
class Service:
    """What the routes work with; kept on `app.state.service`."""

    store: Store
    roots: AllowedRoots
    runner: Runner
    tokens: Tokens
    audit: AuditLog
    storage: str | None  # the database the studies are kept in, shared with `recycler run` elsewhere


def _service(request: Request) -> Service:
    return request.app.state.service


def _caller(request: Request, service: Annotated[Service, Depends(_service)]) -> Caller:
    caller = service.tokens.identify(request.headers.get("authorization"))
    if caller is None:
        raise HTTPException(401, "missing, wrong or revoked bearer token", headers={"WWW-Authenticate": "Bearer"})
    return caller


def _scope(needed: Scope) -> Any:
    """A dependency: the caller, if its token's scope allows `needed`; else 403."""

    def allowed(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
        if not caller.may(needed):
            raise HTTPException(403, f"token '{caller.name}' has scope '{caller.scope}'; this needs '{needed}'")
        return caller

    return Depends(allowed)


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


MAX_MANIFEST_BYTES = 16 << 20
ServiceDep = Annotated[Service, Depends(_service)]
Submitter = Annotated[Caller, _scope("submit")]
Exporter = Annotated[Caller, _scope("export")]
router = APIRouter(prefix="/api", dependencies=[_scope("read")])


def _study_row(service: Service, study_id: str) -> StudyRow:
    row = service.store.study(study_id)
    if row is None:
        raise HTTPException(404, f"no study '{study_id}'")
    return row


def _started(service: Service, study_id: str) -> Path:
    """The folder of a study that has begun running; 409 before that."""
    row = _study_row(service, study_id)
    folder = service.store.study_folder(row.id)
    if not is_study_folder(folder):
        raise HTTPException(409, f"study '{row.id}' has not started ({row.state}{': ' + row.error if row.error else ''})")
    return folder


@router.post("/studies", status_code=201, response_model=StudySummary)
def submit_study(body: SubmitStudy, service: ServiceDep, caller: Submitter, request: Request) -> StudySummary:
    """Validate the spec and queue the study; paths outside the allowed roots, and task code
    outside the roots trusted for it, are refused before any file is read. The study runs from a
    copy of its suite made here (recycler/service/snapshots.py)."""
    root = service.roots.check(body.root or service.roots.roots[0], "root")
    refuse_parent_parts(body.spec)
    spec = parse_spec(body.spec, root, "spec")
    check_spec_paths(spec, service.roots)
    if service.storage is not None and _name_taken(service, spec.name):  # it would join that study's trials
        raise HTTPException(409, f"spec name: a study '{spec.name}' is already in the service's database; give this "
                                 "study another name")
    spec = snapshot_spec(spec, service.roots, service.store.snapshots)
    row = service.store.add_study(spec.name, spec.model_dump_json(), spec.search.trials)
    service.audit.record(caller.name, "submit", f"study {row.id} ({row.name})", _address(request))
    service.runner.wake("studies")
    return _summary(service.store, row)


def _name_taken(service: Service, name: str) -> bool:
    """A database study is its name, so a second study of one name would share the first's trials."""
    import optuna

    from recycler.coordination import database_storage

    in_database = optuna.get_all_study_names(database_storage(service.storage, None))
    return name in in_database or any(row.name == name for row in service.store.studies())


@router.get("/studies", response_model=list[StudySummary])
def list_studies(service: ServiceDep) -> list[StudySummary]:
    """Every study: those submitted here, and those `recycler run` keeps in the service's database."""
    if service.storage is not None:
        from recycler.service.shared import register_elsewhere

        register_elsewhere(service.store, service.storage)
    return [_summary(service.store, row) for row in service.store.studies()]


@router.get("/studies/{study_id}", response_model=StudySummary)
def get_study(study_id: str, service: ServiceDep) -> StudySummary:
    return _summary(service.store, _study_row(service, study_id))


@router.post("/studies/{study_id}/cancel", response_model=StudySummary)
def cancel_study(study_id: str, service: ServiceDep, caller: Submitter, request: Request) -> StudySummary:
    """A queued study is cancelled at once; a running one after its trials in flight."""
    row = _study_row(service, study_id)
    if row.state == "elsewhere":
        raise HTTPException(409, f"study '{row.id}' is run by `recycler run` on another machine; stop it there")
    service.store.request_cancel(row.id)
    service.audit.record(caller.name, "cancel", f"study {study_id}", _address(request))
    return _summary(service.store, _study_row(service, study_id))


@router.get("/studies/{study_id}/front", response_model=FrontDocument)
def get_front(study_id: str, service: ServiceDep, where: list[str] = Query(default=[]), rank: str | None = None,
              limit: int | None = None, examples: int | None = None, beside: str | None = None) -> FrontDocument:
    """The Pareto front and the baselines: `recycler front --format json`, narrowed as
    `--where` (repeatable), `--rank` and `--limit` narrow it; each merge and front member with up
    to `examples` answers per generation task beside the baseline `beside`, as `--examples` and
    `--beside` add them."""
    return _front_document(_started(service, study_id), include_all=False, where=where, preference=rank, limit=limit,
                           examples=examples, beside=beside)


@router.get("/studies/{study_id}/trials", response_model=FrontDocument)
def get_trials(study_id: str, service: ServiceDep) -> FrontDocument:
    """Every completed trial: `recycler front --format json --all`."""
    return _front_document(_started(service, study_id), include_all=True)


@router.get("/studies/{study_id}/examples", response_model=ExampleComparison)
def get_examples(study_id: str, service: ServiceDep, trial: int | None = None, baseline: str | None = None,
                 beside: str | None = None, count: int = Query(default=3, ge=1, le=100)) -> ExampleComparison:
    """A few answers per generation task of a completed trial (or of a baseline, by name) beside a
    baseline's (default: the most balanced other baseline that kept its examples), those that differ first."""
    from recycler.compare import compare, default_beside, find_candidate
    from recycler.front import front_records
    from recycler.study import load_study

    folder = _started(service, study_id)
    study, info = load_study(folder)
    records = front_records(study, info, include_all=True)
    candidate = find_candidate(records, trial=trial, baseline=baseline)
    return compare(folder, records, candidate, beside or default_beside(folder, records, info, candidate), count)


@router.get("/studies/{study_id}/hypervolume", response_model=list[HypervolumePoint])
def get_hypervolume(study_id: str, service: ServiceDep) -> list[HypervolumePoint]:
    from recycler.front import hypervolume_history
    from recycler.study import load_study

    study, info = load_study(_started(service, study_id))
    return [HypervolumePoint(trial=n, hypervolume=v) for n, v in hypervolume_history(study, info)]


@router.get("/studies/{study_id}/plots", response_model=Plots)
def get_plots(study_id: str, service: ServiceDep) -> Plots:
    from recycler.front import front_records, hypervolume_history
    from recycler.report import front_figure, hypervolume_figure, tradeoff_figure
    from recycler.study import load_study

    study, info = load_study(_started(service, study_id))
    records = front_records(study, info, include_all=True)
    front = front_figure(records, info.objectives)
    tradeoffs = tradeoff_figure(records, info.objectives, info.held_out)
    history = hypervolume_figure(hypervolume_history(study, info))
    return Plots(front=json.loads(front.to_json()), tradeoffs=json.loads(tradeoffs.to_json()),
                 hypervolume=json.loads(history.to_json()))


@router.post("/studies/{study_id}/exports", status_code=202, response_model=ExportStatus)
def start_export(study_id: str, body: ExportRequest, service: ServiceDep, caller: Exporter, request: Request) -> ExportStatus:
    """Queue an export of one completed trial; poll it for its manifest."""
    from recycler.export import check_export_target

    out = service.roots.check(body.out, "out")
    folder = _started(service, study_id)
    if _study_row(service, study_id).state == "elsewhere":  # its pool was never checked against the roots
        from recycler.study import read_info

        check_spec_paths(read_info(folder).pool_spec, service.roots)
    check_export_target(out, overwrite=False)
    export = service.store.add_export(study_id, body.trial, str(out))
    service.audit.record(caller.name, "export", f"study {study_id} trial {body.trial} to {out} (export {export.id})",
                         _address(request))
    service.runner.wake("exports")
    return _export_status(export, service.roots)


@router.get("/studies/{study_id}/exports/{export_id}", response_model=ExportStatus)
def get_export(study_id: str, export_id: str, service: ServiceDep) -> ExportStatus:
    export = service.store.export(export_id)
    if export is None or export.study_id != study_id:
        raise HTTPException(404, f"no export '{export_id}' of study '{study_id}'")
    return _export_status(export, service.roots)


@router.get("/audit", response_model=list[AuditEntry])
def get_audit(service: ServiceDep, _: Exporter) -> list[AuditEntry]:
    """The audit log, oldest first; for tokens of the full (`export`) scope."""
    return service.audit.entries()


def _summary(store: Store, row: StudyRow) -> StudySummary:
    from recycler.ledger import finished_trials
    from recycler.study import load_study

    finished = 0
    folder = store.study_folder(row.id)
    if is_study_folder(folder):
        try:
            finished = finished_trials(load_study(folder)[0])
        except RecyclerError:  # asked between study.json and the study's creation in its storage, or
            if row.state not in ("running", "elsewhere"):  # a study run elsewhere and since deleted there
                raise
    return StudySummary(id=row.id, name=row.name, state=row.state, finished=finished, budget=row.budget,
                        error=row.error, created=row.created, updated=row.updated)


def _front_document(folder: Path, include_all: bool, examples: int | None = None, beside: str | None = None,
                    **narrowing: Any) -> FrontDocument:
    from recycler.compare import with_examples
    from recycler.front import front_document, front_records
    from recycler.selection import narrow
    from recycler.study import load_study

    study, info = load_study(folder)
    records = narrow(front_records(study, info, include_all=include_all), info, **narrowing)
    return front_document(info, with_examples(folder, records, info, examples, beside))


def _export_status(row: ExportRow, roots: AllowedRoots) -> ExportStatus:
    """The export's state, with its manifest once done: read from the export folder, which lies in a
    root others may write, so checked where it is opened and bounded."""
    from recycler.export import MANIFEST_FILE
    from recycler.yaml_files import read_text_file

    manifest = None
    if row.state == "done":
        where = f"export {row.id}: {MANIFEST_FILE}"
        try:
            manifest = json.loads(read_text_file(Path(row.out) / MANIFEST_FILE, where, MAX_MANIFEST_BYTES, roots.contains))
        except ValueError:
            raise RecyclerError(f"{where}: not the manifest the export wrote (not JSON)") from None
        if not isinstance(manifest, dict):
            raise RecyclerError(f"{where}: not the manifest the export wrote")
    return ExportStatus(id=row.id, study_id=row.study_id, trial=row.trial, out=row.out, state=row.state,
                        error=row.error, manifest=manifest)
