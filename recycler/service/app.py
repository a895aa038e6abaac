"""The HTTP API and the page, in one FastAPI app. Every /api route needs the bearer token; the
page itself is a data-free shell whose script calls the API with the token it was given."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from recycler.errors import RecyclerError
from recycler.service import page
from recycler.service.models import (
    ExportRequest,
    ExportStatus,
    FrontDocument,
    HypervolumePoint,
    Plots,
    StudySummary,
    SubmitStudy,
)
from recycler.service.runner import Runner
from recycler.service.security import (
    MAX_BODY_BYTES,
    AllowedRoots,
    BodyLimit,
    PathNotAllowed,
    token_matches,
)
from recycler.service.specs import check_spec_paths, refuse_parent_parts
from recycler.service.store import ExportRow, Store, StudyRow
from recycler.spec import parse_spec


@dataclass
class ServiceConfig:
    """Where state lives, which paths requests may name, the token; `runner` off serves the API alone."""

    data: Path
    roots: list[Path]
    token: str
    address: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    runner: bool = True


def create_app(config: ServiceConfig) -> FastAPI:
    store = Store(config.data)
    roots = AllowedRoots(config.roots)
    runner = Runner(store, address=config.address)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if config.runner:
            runner.start()
        yield
        if config.runner:
            runner.stop()

    app = FastAPI(title="recycler", summary="Search linear merges of a checkpoint pool for a Pareto front.", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.state.store, app.state.runner = store, runner

    @app.exception_handler(RecyclerError)
    async def _bad_input(_: Request, error: RecyclerError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(PathNotAllowed)
    async def _forbidden(_: Request, error: PathNotAllowed) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=403)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return JSONResponse({"detail": f"{where}: {first['msg']}"}, status_code=422)

    def require_token(request: Request) -> None:
        if not token_matches(request.headers.get("authorization"), config.token):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)])

    def study_row(study_id: str) -> StudyRow:
        row = store.study(study_id)
        if row is None:
            raise HTTPException(404, f"no study '{study_id}'")
        return row

    def started(row: StudyRow) -> Path:
        folder = store.study_folder(row.id)
        if not (folder / "study.json").is_file():
            raise HTTPException(409, f"study '{row.id}' has not started ({row.state}{': ' + row.error if row.error else ''})")
        return folder

    @api.post("/studies", status_code=201, response_model=StudySummary)
    def submit_study(body: SubmitStudy) -> StudySummary:
        """Validate the spec and queue the study; paths outside the allowed roots are refused before any is read."""
        root = roots.check(body.root or roots.roots[0], "root")
        refuse_parent_parts(body.spec)
        spec = parse_spec(body.spec, root, "spec")
        check_spec_paths(spec, roots)
        row = store.add_study(spec.name, spec.model_dump_json(), spec.search.trials)
        runner.wake("studies")
        return _summary(store, row)

    @api.get("/studies", response_model=list[StudySummary])
    def list_studies() -> list[StudySummary]:
        return [_summary(store, row) for row in store.studies()]

    @api.get("/studies/{study_id}", response_model=StudySummary)
    def get_study(study_id: str) -> StudySummary:
        return _summary(store, study_row(study_id))

    @api.post("/studies/{study_id}/cancel", response_model=StudySummary)
    def cancel_study(study_id: str) -> StudySummary:
        """A queued study is cancelled at once; a running one after its trials in flight."""
        store.request_cancel(study_row(study_id).id)
        return _summary(store, study_row(study_id))

    @api.get("/studies/{study_id}/front", response_model=FrontDocument)
    def get_front(study_id: str, where: list[str] = Query(default=[]), rank: str | None = None,
                  limit: int | None = None) -> dict[str, Any]:
        """The Pareto front and the baselines: `recycler front --format json`, narrowed as
        `--where` (repeatable), `--rank` and `--limit` narrow it."""
        return _front_document(started(study_row(study_id)), include_all=False, where=where, preference=rank, limit=limit)

    @api.get("/studies/{study_id}/trials", response_model=FrontDocument)
    def get_trials(study_id: str) -> dict[str, Any]:
        """Every completed trial: `recycler front --format json --all`."""
        return _front_document(started(study_row(study_id)), include_all=True)

    @api.get("/studies/{study_id}/hypervolume", response_model=list[HypervolumePoint])
    def get_hypervolume(study_id: str) -> list[HypervolumePoint]:
        from recycler.front import hypervolume_history
        from recycler.study import load_study

        study, info = load_study(started(study_row(study_id)))
        return [HypervolumePoint(trial=n, hypervolume=v) for n, v in hypervolume_history(study, info)]

    @api.get("/studies/{study_id}/plots", response_model=Plots)
    def get_plots(study_id: str) -> Plots:
        from recycler.front import front_records, hypervolume_history
        from recycler.report import front_figure, hypervolume_figure, tradeoff_figure
        from recycler.study import load_study

        study, info = load_study(started(study_row(study_id)))
        records = front_records(study, info, include_all=True)
        front = front_figure(records, info.objectives)
        tradeoffs = tradeoff_figure(records, info.objectives, info.held_out)
        history = hypervolume_figure(hypervolume_history(study, info))
        return Plots(front=json.loads(front.to_json()), tradeoffs=json.loads(tradeoffs.to_json()),
                     hypervolume=json.loads(history.to_json()))

    @api.post("/studies/{study_id}/exports", status_code=202, response_model=ExportStatus)
    def start_export(study_id: str, body: ExportRequest) -> ExportStatus:
        """Queue an export of one completed trial; poll it for its manifest."""
        from recycler.export import check_export_target

        out = roots.check(body.out, "out")
        row = study_row(study_id)
        started(row)
        check_export_target(out, overwrite=False)
        export = store.add_export(row.id, body.trial, str(out))
        runner.wake("exports")
        return _export_status(export)

    @api.get("/studies/{study_id}/exports/{export_id}", response_model=ExportStatus)
    def get_export(study_id: str, export_id: str) -> ExportStatus:
        export = store.export(export_id)
        if export is None or export.study_id != study_id:
            raise HTTPException(404, f"no export '{export_id}' of study '{study_id}'")
        return _export_status(export)

    app.include_router(api)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page() -> str:
        return page.index_html()

    @app.get("/studies/{study_id}", response_class=HTMLResponse, include_in_schema=False)
    def study_page(study_id: str) -> str:
        return page.study_html(study_id)

    @app.get("/static/plotly.js", include_in_schema=False)
    def plotly_js() -> Response:
        return Response(page.plotly_js(), media_type="application/javascript", headers={"Cache-Control": "max-age=86400"})

    return app


def _summary(store: Store, row: StudyRow) -> StudySummary:
    from recycler.search import finished_trials
    from recycler.study import load_study

    finished = 0
    folder = store.study_folder(row.id)
    if (folder / "study.json").is_file():
        study, _ = load_study(folder)
        finished = finished_trials(study)
    return StudySummary(id=row.id, name=row.name, state=row.state, finished=finished, budget=row.budget,
                        error=row.error, created=row.created, updated=row.updated)


def _front_document(folder: Path, include_all: bool, **narrowing: Any) -> dict[str, Any]:
    from recycler.front import front_records
    from recycler.selection import narrow
    from recycler.study import load_study

    study, info = load_study(folder)
    records = narrow(front_records(study, info, include_all=include_all), info, **narrowing)
    return {"study": info.name, "objectives": info.objectives, "held_out": info.held_out, "trials": records}


def _export_status(row: ExportRow) -> ExportStatus:
    from recycler.export import MANIFEST_FILE

    manifest = None
    if row.state == "done":
        manifest = json.loads((Path(row.out) / MANIFEST_FILE).read_text())
    return ExportStatus(id=row.id, study_id=row.study_id, trial=row.trial, out=row.out, state=row.state,
                        error=row.error, manifest=manifest)
