"""The HTTP API and the page, in one FastAPI app. Every /api route needs a bearer token; the
page itself is a data-free shell whose script calls the API with the token it was given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from recycler.errors import RecyclerError
from recycler.service import api, page
from recycler.service.audit import AuditLog
from recycler.service.runner import Runner
from recycler.service.security import (
    MAX_BODY_BYTES,
    AllowedRoots,
    BodyLimit,
    PathNotAllowed,
)
from recycler.service.store import Store
from recycler.service.tokens import Tokens

TOKENS_FILE = "tokens.json"
AUDIT_FILE = "audit.jsonl"


@dataclass
class ServiceConfig:
    """Where state lives, which paths requests may name (and which task folders may run code), the
    default token (full scope; named tokens are in DATA/tokens.json); `runner` off serves the API alone."""

    data: Path
    roots: list[Path]
    token: str
    trust_task_code: list[Path] = field(default_factory=list)
    address: str | None = None
    storage: str | None = None  # a database URL for every study's trials, shared with `recycler run`
    max_body_bytes: int = MAX_BODY_BYTES
    runner: bool = True


def create_app(config: ServiceConfig) -> FastAPI:
    store = Store(config.data)
    roots = AllowedRoots(config.roots, config.trust_task_code, private=[config.data])  # a root may hold DATA
    runner = Runner(store, roots, address=config.address, storage=config.storage)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if config.runner:
            runner.start()
        yield
        if config.runner:
            runner.stop()

    app = FastAPI(title="recycler", summary="Search linear merges of a checkpoint pool for a Pareto front.", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.state.service = api.Service(store=store, roots=roots, runner=runner,
                                    tokens=Tokens(config.data / TOKENS_FILE, config.token), audit=AuditLog(config.data / AUDIT_FILE),
                                    storage=config.storage)
    app.state.runner = runner
    app.add_exception_handler(RecyclerError, _bad_input)
    app.add_exception_handler(PathNotAllowed, _forbidden)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.include_router(api.router)
    app.include_router(_pages)
    return app


async def _bad_input(_: Request, error: RecyclerError) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=422)


async def _forbidden(_: Request, error: PathNotAllowed) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=403)


async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return JSONResponse({"detail": f"{where}: {first['msg']}"}, status_code=422)


_pages = APIRouter(include_in_schema=False)


@_pages.get("/", response_class=HTMLResponse)
def index_page() -> str:
    return page.index_html()


@_pages.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(study_id: str) -> str:
    return page.study_html(study_id)


@_pages.get("/static/plotly.js")
def plotly_js() -> Response:
    return Response(page.plotly_js(), media_type="application/javascript", headers={"Cache-Control": "max-age=86400"})
