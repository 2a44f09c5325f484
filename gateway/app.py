"""The Flask app factory and its thin routes (HTTP <-> :class:`gateway.predictor.Predictor`).

Endpoints and JSON shapes: docs/CONTRACTS.md section 4; the OpenAPI document at ``/openapi.json``
describes them. Authentication: when ``GATEWAY_API_KEY`` is set, every endpoint except
``/health``, ``/livez``, ``/metrics`` and the try-it page needs header ``X-API-Key``
(``/health`` is the orchestrator's readiness probe, ``/livez`` its liveness probe; ``/metrics`` is
scraped by Prometheus and carries counts and timings only, no request data; the page is static and
asks for the key itself).

Around the routes (:mod:`gateway.web` wires them): request ids and the access log line, CORS,
rate limits and the try-it page.
"""

from __future__ import annotations

import hmac
import logging

from flask import Flask, Response, jsonify, request

from gateway import __version__, logs, openapi, page, uploads, web
from gateway.cache import LocalStore, PredictionCache, RedisStore, VersionResolver
from gateway.errors import ErrorCode, GatewayError
from gateway.errors import register as register_errors
from gateway.metrics import Metrics
from gateway.model_info import ModelInfo
from gateway.predictor import Answer, ItemResult, Predictor
from gateway.serving_client import AVAILABLE, ServingClient
from gateway.settings import Settings
from serving_api.memory import keep_large_buffers_on_heap

log = logging.getLogger(__name__)

OPEN_ENDPOINTS = frozenset({"health", "livez", "metrics", "ui", "static"})
"""Endpoints that never need the API key."""

ENDPOINTS = (
    "GET /",
    "GET /health",
    "GET /livez",
    "GET /classes",
    "GET /metrics",
    "GET /openapi.json",
    "POST /predict",
    "POST /predict_batch",
    "GET /ui",
)


def _model_json(answer: Answer) -> dict:
    return {"name": answer.model_name, "version": answer.version}


def create_app(settings: Settings | None = None, *, warm_up: bool = True) -> Flask:
    """Create the gateway app with its own serving client, metrics registry and decode pool.

    Args:
        settings: configuration; read from the environment if None.
        warm_up: fetch the model's signature now (logs, never fails, if serving is down).

    Returns:
        The Flask app. ``app.extensions["gateway"]`` holds ``settings``, ``client``, ``metrics``,
        ``predictor`` for tests and the process launcher.
    """
    settings = settings if settings is not None else Settings.from_env()
    keep_large_buffers_on_heap()  # multi-MB Predict requests without fresh page faults per copy
    logs.configure(settings.log_level, settings.log_format)
    app = Flask("gateway", static_folder=page.STATIC_FOLDER, static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Let our own count check answer too_many_images before werkzeug's part limit answers 413.
    app.config["MAX_FORM_PARTS"] = max(1000, 2 * settings.max_batch_images + 16)
    app.json.sort_keys = False

    metrics = Metrics(model_name=settings.model_name)
    client = ServingClient(settings, on_call=metrics.observe_serving_call)
    info = ModelInfo(client)
    cache, resolver = _prediction_cache(settings, client, metrics)
    predictor = Predictor(client, info, settings, metrics, cache=cache, resolver=resolver)
    app.extensions["gateway"] = {
        "settings": settings,
        "client": client,
        "metrics": metrics,
        "predictor": predictor,
        "model_info": info,
        "cache": cache,
    }

    def count_rejection(error: GatewayError) -> None:
        if 400 <= error.status < 500:
            metrics.rejected.labels(reason=error.code).inc()

    register_errors(app, on_error=count_rejection)
    if warm_up:
        info.warm_up()

    def _needs_key() -> bool:
        if request.method == "OPTIONS" or request.endpoint in OPEN_ENDPOINTS:
            return False
        return not (request.endpoint == "index" and page.wants_html(request))

    def _check_key() -> None:
        if settings.api_key and _needs_key():
            sent = request.headers.get("X-API-Key", "")
            if not hmac.compare_digest(sent.encode(), settings.api_key.encode()):
                raise GatewayError(ErrorCode.UNAUTHORIZED, "missing or wrong X-API-Key header")

    web.install(app, settings, metrics, check_key=_check_key)

    @app.get("/")
    def index() -> Response:
        if page.wants_html(request):
            return page.page()
        body: dict = {
            "service": "fashion-gateway",
            "version": __version__,
            "model": {"name": settings.model_name},
            "endpoints": list(ENDPOINTS),
        }
        try:
            statuses = client.get_status()
            spec = info.input_spec()
        except GatewayError as exc:
            body["serving"] = {"available": False, "error": exc.body()}
            return jsonify(body)
        body["serving"] = {"available": any(s.state == AVAILABLE for s in statuses)}
        body["model"].update(
            versions=[{"version": s.version, "state": s.state} for s in statuses],
            input=spec.as_json(),
            num_classes=spec.num_classes,
            latest_version=spec.version,
        )
        return jsonify(body)

    @app.get("/health")
    def health() -> Response:
        retry = {"Retry-After": str(settings.retry_after_seconds)}
        try:
            statuses = client.get_status()
        except GatewayError as exc:
            raise GatewayError(
                ErrorCode.SERVING_UNAVAILABLE, f"not ready: {exc.message}", headers=retry
            ) from None
        available = [s.version for s in statuses if s.state == AVAILABLE]
        if not available:
            states = ", ".join(f"{s.version}: {s.state}" for s in statuses) or "none"
            raise GatewayError(
                ErrorCode.SERVING_UNAVAILABLE,
                f"no AVAILABLE version of model {settings.model_name!r} (versions {states})",
                headers=retry,
            )
        return jsonify(status="ok", model=settings.model_name, available_versions=available)

    @app.get("/livez")
    def livez() -> Response:
        # Liveness: this process answers HTTP. Never asks serving, so an orchestrator does not
        # restart healthy gateways while the model server is down (that is /health's job).
        return jsonify(status="alive")

    @app.get("/classes")
    def classes() -> Response:
        options = uploads.query_options(request, settings)
        name, version, labels = predictor.labels(options.selector)
        return jsonify(model={"name": name, "version": version}, classes=labels)

    @app.get("/metrics", endpoint="metrics")
    def metrics_endpoint() -> Response:
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    api_document = openapi.document(settings, __version__)  # fixed for the app's lifetime

    @app.get("/openapi.json", endpoint="openapi")
    def openapi_document() -> Response:
        return jsonify(api_document)

    @app.post("/predict")
    def predict() -> Response:
        options = uploads.query_options(request, settings)
        upload = uploads.single_image(request, settings)
        answer = predictor.classify([upload.data], top_k=options.top_k, selector=options.selector)
        web.note_answer(answer.version, answer.cache)
        item = answer.items[0]
        if item.error is not None:
            raise item.error
        return jsonify(model=_model_json(answer), prediction=item.classification.as_json())

    @app.post("/predict_batch")
    def predict_batch() -> Response:
        options = uploads.query_options(request, settings)
        files = uploads.batch_images(request, settings)
        readable = [f for f in files if f.error is None]
        answer = (
            predictor.classify(
                [f.data for f in readable], top_k=options.top_k, selector=options.selector
            )
            if readable
            else Answer(settings.model_name, None, [])  # as when no image decodes
        )
        web.note_answer(answer.version, answer.cache)
        results = iter(answer.items)
        predictions = []
        for index, upload in enumerate(files):
            entry: dict = {"index": index, "filename": upload.filename}
            item = ItemResult(error=upload.error) if upload.error else next(results)
            if item.error is not None:
                count_rejection(item.error)
                entry["error"] = item.error.body()
            else:
                entry.update(item.classification.as_json())
            predictions.append(entry)
        return jsonify(model=_model_json(answer), predictions=predictions)

    @app.get("/ui", endpoint="ui")
    def ui() -> Response:
        return page.page()

    return app


def _prediction_cache(
    settings: Settings, client: ServingClient, metrics: Metrics
) -> tuple[PredictionCache | None, VersionResolver | None]:
    """The prediction cache the settings ask for: none, in-process LRU or Redis."""
    if settings.cache_size == 0:
        return None, None
    if settings.redis_url:
        store = RedisStore(
            settings.redis_url, settings.cache_ttl_seconds, settings.redis_timeout_seconds
        )
    else:
        store = LocalStore(settings.cache_size)
    cache = PredictionCache(
        store,
        on_lookup=metrics.observe_cache_lookup,
        on_error=metrics.observe_cache_error,
        pause_seconds=settings.cache_version_check_seconds,
    )
    return cache, VersionResolver(client.get_status, settings.cache_version_check_seconds)
