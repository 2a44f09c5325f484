"""The try-it page: a static HTML page with its script and style, served by the gateway itself.

Browsers that open ``/`` (``Accept`` preferring ``text/html``) and everyone at ``/ui`` get
``gateway/static/index.html``; its script calls the same public endpoints any client calls
(``GET /classes``, ``POST /predict``), with the API key the person types (kept in the tab's
``sessionStorage`` only). No external CDN: the page's assets are under ``/static/``, and its
Content-Security-Policy allows nothing else.
"""

from __future__ import annotations

from pathlib import Path

from flask import Request, Response, send_from_directory

STATIC_FOLDER = str(Path(__file__).resolve().parent / "static")
"""Folder of the page and its assets (served at ``/static/``)."""

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Only the gateway's own assets; previews are ``blob:`` URLs of the picked files."""


def wants_html(request: Request) -> bool:
    """True when the client prefers HTML to JSON (a browser's ``Accept``; curl's ``*/*`` is not).

    Args:
        request: the Flask request.
    """
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return (
        best == "text/html"
        and request.accept_mimetypes["text/html"] > (request.accept_mimetypes["application/json"])
    )


def page() -> Response:
    """The page, never cached by the browser (its script is cached by ETag as usual)."""
    response = send_from_directory(STATIC_FOLDER, "index.html", max_age=0)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
