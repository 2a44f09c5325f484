"""Rate limits with Flask-Limiter: ``RATE_LIMIT`` per caller, counted in Redis or in the process.

The caller is the API key when keys are checked (``GATEWAY_API_KEY`` set and the request's key is
right), else the client address (the TCP peer, or the address ``TRUSTED_PROXIES`` proxies
forwarded): a key the gateway does not check, or a wrong one, never buys a fresh count. With
``REDIS_URL`` one count is shared by every worker and replica; without it each process counts on
its own. A Redis that fails falls back to counting in the process until it is back (Flask-Limiter's
in-memory fallback); a request is never refused because the counter is unreachable.

Over the limit: 429 ``rate_limited`` with ``Retry-After`` (whole seconds, at least 1) and
``X-RateLimit-Limit``/``-Remaining``/``-Reset`` on every limited endpoint's responses. ``/health``,
``/livez``, ``/metrics``, the page's assets and CORS preflights are never limited.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time

from flask import Flask, Response, request
from flask_limiter import HeaderNames, Limiter

from gateway.settings import Settings

UNLIMITED_ENDPOINTS = frozenset({"health", "livez", "metrics", "static"})
"""Endpoints that are never counted (probes, the scraper, page assets)."""

_RESET = HeaderNames.RESET.value
_INTERNAL_RETRY_AFTER = "X-Gateway-Limiter-Retry-After"


def caller_key(settings: Settings) -> str:
    """The rate-limit key of the current request: ``key:<hash>`` or ``addr:<client address>``.

    Args:
        settings: for the API key.

    Returns:
        The key; the API key itself never appears in it (nor in Redis).
    """
    if settings.api_key:
        sent = request.headers.get("X-API-Key", "")
        if hmac.compare_digest(sent.encode(), settings.api_key.encode()):
            return "key:" + hashlib.sha256(sent.encode()).hexdigest()[:16]
    return f"addr:{request.remote_addr or 'unknown'}"


def install(app: Flask, settings: Settings) -> Limiter | None:
    """Add the limiter's hooks to ``app`` when ``RATE_LIMIT`` is set.

    Call it after the hooks that must run before the limit check (request ids) and before the API
    key check, so refused keys are counted too.

    Args:
        app: the Flask app.
        settings: ``RATE_LIMIT``, ``REDIS_URL``, ``REDIS_TIMEOUT_SECONDS``.

    Returns:
        The limiter, or None when no limit is set.
    """
    if not settings.rate_limit:
        return None

    # Registered before the limiter's own after_request, so it runs after it (Flask runs them in
    # reverse): Flask-Limiter puts its Retry-After on every response; only a 429 keeps one.
    @app.after_request
    def _retry_after_only_on_429(response: Response) -> Response:
        response.headers.pop(_INTERNAL_RETRY_AFTER, None)
        reset = response.headers.get(_RESET)
        if response.status_code == 429 and reset is not None and reset.isdigit():
            response.headers["Retry-After"] = str(max(1, math.ceil(int(reset) - time.time())))
        return response

    storage_options: dict = {}
    if settings.redis_url:
        storage_options = {
            "socket_timeout": settings.redis_timeout_seconds,
            "socket_connect_timeout": settings.redis_timeout_seconds,
        }
    limiter = Limiter(
        lambda: caller_key(settings),
        app=app,
        application_limits=[settings.rate_limit],  # one count per caller over all endpoints
        storage_uri=settings.redis_url or "memory://",
        storage_options=storage_options,
        strategy="fixed-window",
        headers_enabled=True,
        header_name_mapping={HeaderNames.RETRY_AFTER: _INTERNAL_RETRY_AFTER},
        key_prefix="gw",
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )

    @limiter.request_filter
    def _never_limited() -> bool:
        return request.method == "OPTIONS" or request.endpoint in UNLIMITED_ENDPOINTS

    return limiter
