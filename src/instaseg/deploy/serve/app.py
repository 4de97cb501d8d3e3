"""The FastAPI application of `instaseg serve`: one app for uvicorn workers and Ray Serve replicas alike.

Endpoints: ``POST /instance-segmentation`` (PaddleX's schema), ``POST /predict`` (instaseg's Result json; json
body or multipart upload), ``GET /health`` (alive), ``GET /ready`` (model loaded, taking requests), ``GET /metrics``
(Prometheus), ``GET /docs`` and ``/openapi.json``, and a small page at ``/`` to try a picture.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from instaseg.deploy.serve.config import ServeConfig
from instaseg.deploy.serve.guard import GuardMiddleware
from instaseg.deploy.serve.inputs import RequestError
from instaseg.deploy.serve.page import page_html
from instaseg.deploy.serve.routes import add_prediction_routes
from instaseg.deploy.serve.schemas import ErrorResponse, error_body, new_log_id
from instaseg.deploy.serve.service import Service
from instaseg.version import __version__

logger = logging.getLogger(__name__)
REASONS = {400: "bad request", 401: "unauthorized", 404: "not found", 405: "method not allowed"}


def create_app(config: ServeConfig, predictor: Any = None) -> FastAPI:
    """The service's app. ``predictor``: a loaded model to serve; by default ``config.model`` is loaded when the
    app starts (in each worker process)."""
    service = Service(config, predictor)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="instaseg",
        version=__version__,
        description="Instance segmentation over HTTP. `/instance-segmentation` speaks PaddleX's serving schema; "
        "`/predict` answers instaseg's Result json. Errors on every endpoint: `{logId, errorCode, errorMsg}`.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(GuardMiddleware, max_body_bytes=config.max_body_bytes, metrics=service.metrics)
    _add_error_handlers(app)
    _add_service_routes(app, service)
    add_prediction_routes(app, service)
    return app


def app_from_environment() -> FastAPI:
    """uvicorn's factory in each worker process: the config comes in `INSTASEG_SERVE_CONFIG`."""
    return create_app(ServeConfig.from_env())


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    log_id = new_log_id()
    if status >= 500:
        logger.warning("answered %d: %s (log id %s)", status, message, log_id)
    return JSONResponse(error_body(status, message, log_id), status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else REASONS.get(exc.status_code, "error")
        return error_response(exc.status_code, detail, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(422, problems or "invalid request")


def _add_service_routes(app: FastAPI, service: Service) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html())

    @app.get("/health", summary="Liveness: the process answers")
    async def health() -> dict:
        return {"logId": new_log_id(), "errorCode": 0, "errorMsg": "Healthy"}  # PaddleX's health answer

    @app.get("/ready", summary="Readiness: the model is loaded and requests are taken",
             responses={503: {"model": ErrorResponse}})
    async def ready() -> JSONResponse:
        if not service.ready:
            return error_response(503, "not ready: the model is loading or the service is stopping")
        return JSONResponse(service.describe())

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        if service.batcher is not None:
            service.metrics.queue_depth.set(service.batcher.depth())
        body, content_type = service.metrics.exposition()
        return Response(body, media_type=content_type)
