"""The HTTP edge around the routes: request ids, the access log, request metrics, CORS, limits.

Hook order matters and is fixed here. Before a route: the request id is bound (so every log line
of the request carries it), the rate limit is checked (so refused API keys are counted too), then
the API key. After it: rate-limit headers, then ``X-Request-Id``, ``X-Model-Version`` and
``X-Cache`` are added, and one access line is logged with the endpoint, status, latency, version
and cache result.

CORS (flask-cors) only when ``CORS_ORIGINS`` is set: those origins may call every endpoint from
browser scripts, preflights are answered without a key, the request-id, version, cache and
rate-limit headers are exposed to scripts, and credentials (cookies) are never allowed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flask import Flask, Response, g, request
from flask_cors import CORS

from gateway import ratelimit, request_ids
from gateway.metrics import Metrics
from gateway.settings import Settings

access_log = logging.getLogger("gateway.access")

VERSION_HEADER = "X-Model-Version"
"""The model version that answered a prediction."""

CACHE_HEADER = "X-Cache"
"""``hit`` when every image of the answer came from the prediction cache, else ``miss``."""

EXPOSED_HEADERS = (
    request_ids.HEADER,
    VERSION_HEADER,
    CACHE_HEADER,
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
)
"""Response headers browser scripts of allowed origins may read."""

ALLOWED_REQUEST_HEADERS = ("Content-Type", "X-API-Key", request_ids.HEADER)
"""Request headers allowed in cross-origin requests."""


def note_answer(version: int | None, cache: str | None) -> None:
    """Record the answering version and cache result of this request (headers and access log).

    Args:
        version: the model version that answered, None if none did.
        cache: ``hit``, ``miss`` or None (no cache).
    """
    g.model_version = version
    g.cache = cache


def install(
    app: Flask, settings: Settings, metrics: Metrics, *, check_key: Callable[[], None]
) -> None:
    """Add the edge's hooks to ``app`` in their fixed order.

    Args:
        app: the Flask app (routes may be added before or after).
        settings: CORS, rate-limit and proxy settings.
        metrics: request counts and latencies are recorded here.
        check_key: raises ``unauthorized`` when the request needs a key it lacks.
    """
    if settings.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)

    @app.before_request
    def _bind_request_id() -> None:
        g.start = time.perf_counter()
        g.request_id = request_ids.accept(request.headers.get(request_ids.HEADER))
        g.request_id_token = request_ids.bind(g.request_id)

    @app.teardown_request
    def _unbind_request_id(exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            request_ids.unbind(token)

    @app.after_request
    def _finish(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        seconds = time.perf_counter() - g.start if "start" in g else 0.0
        metrics.requests.labels(
            endpoint=endpoint, method=request.method, status=str(response.status_code)
        ).inc()
        metrics.request_seconds.labels(endpoint=endpoint).observe(seconds)
        if "request_id" in g:
            response.headers[request_ids.HEADER] = g.request_id
        version, cache = g.get("model_version"), g.get("cache")
        if version is not None:
            response.headers[VERSION_HEADER] = str(version)
        if cache is not None:
            response.headers[CACHE_HEADER] = cache
        access_log.info(
            "%s %s %d",
            request.method,
            request.path,
            response.status_code,
            extra={
                "endpoint": endpoint,
                "method": request.method,
                "status": response.status_code,
                "latency_ms": round(seconds * 1000, 2),
                "version": version,
                "cache": cache,
            },
        )
        return response

    ratelimit.install(app, settings)  # after the request id, before the key check
    app.before_request(check_key)

    if settings.cors_origins:
        CORS(
            app,
            origins=settings.cors_origin_list,
            methods=["GET", "POST", "OPTIONS"],
            allow_headers=list(ALLOWED_REQUEST_HEADERS),
            expose_headers=list(EXPOSED_HEADERS),
            supports_credentials=False,
            max_age=600,
        )
