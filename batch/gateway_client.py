"""The job's only network code: HTTP to the gateway (docs/CONTRACTS.md sections 4 and 5).

``GET /health`` until 200, and ``POST /predict_batch`` with repeated multipart ``images`` fields.
Failures are sorted into two kinds the runner treats differently:

- :class:`TransientGatewayError`: HTTP 5xx, connection errors and timeouts, still failing after
  the bounded retries. The files stay in incoming for the next run (CONTRACTS.md section 5).
- :class:`RejectedRequestError`: a 4xx for the whole request (e.g. 401 ``unauthorized``, 413
  ``too_many_images`` / ``payload_too_large``). Retrying the same request cannot help.

A 429 ``rate_limited`` is neither: the job waits the ``Retry-After`` seconds the gateway sent (up to
:data:`RATE_LIMIT_WAIT_CAP`) and sends the same request again, up to :data:`RATE_LIMIT_WAITS`
times, without using up its retries; past that it is transient (the files stay in incoming).

Per-item errors inside a 200 response are not exceptions: they are returned to the caller.
"""

from __future__ import annotations

import mimetypes
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests

RETRY_BACKOFF_CAP = 30.0
"""Longest wait between two attempts after a failure, seconds (also caps a 503's Retry-After)."""

RATE_LIMIT_WAIT_CAP = 120.0
"""Longest wait after a 429, seconds (a per-minute limit asks for up to about 60)."""

RATE_LIMIT_WAITS = 20
"""Most 429 answers one request waits out before it counts as a transient failure."""


class GatewayError(Exception):
    """Base class of the client's errors."""


class GatewayUnavailableError(GatewayError):
    """``/health`` did not answer 200 within the timeout."""


class TransientGatewayError(GatewayError):
    """5xx, connection failure or timeout, after every retry.

    Attributes:
        code: the gateway's error code if it sent one (``serving_unavailable``, ...), else
            ``http_<status>``, ``connection_error`` or ``timeout``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RejectedRequestError(GatewayError):
    """The gateway refused the whole request with a 4xx status.

    Attributes:
        status: HTTP status.
        code: the gateway's error code (``unauthorized``, ``too_many_images``, ...).
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code


@dataclass(frozen=True)
class BatchAnswer:
    """A 200 response of ``/predict_batch``.

    Attributes:
        model_name: ``model.name`` of the response.
        model_version: ``model.version`` (the version that produced the predictions).
        predictions: the ``predictions`` list, in input order; each has either ``label``,
            ``confidence`` and ``top_k`` or an ``error`` object with ``code`` and ``message``.
    """

    model_name: str | None
    model_version: int | None
    predictions: list[dict[str, Any]]


def _error_of(response: requests.Response) -> tuple[str, str]:
    try:
        err = response.json()["error"]
        return str(err["code"]), str(err.get("message", ""))
    except (ValueError, KeyError, TypeError):
        return f"http_{response.status_code}", response.text[:200]


def _retry_after(response: requests.Response, default: float) -> float:
    """Seconds a 429 asks to wait (``Retry-After`` in seconds), within 0..RATE_LIMIT_WAIT_CAP."""
    value = response.headers.get("Retry-After", "").strip()
    seconds = float(value) if value.isdigit() else default
    return min(max(seconds, 0.0), RATE_LIMIT_WAIT_CAP)


class GatewayClient:
    """Calls the gateway. Thread-safe: each thread gets its own ``requests.Session``.

    Args:
        base_url: e.g. ``http://localhost:8080`` (no trailing slash).
        api_key: sent as ``X-API-Key`` when set.
        timeout: seconds per request (connect and read).
        retries: extra attempts after a 5xx, connection error or timeout.
        backoff: seconds before the first retry, doubled each retry, capped at
            :data:`RETRY_BACKOFF_CAP`. A 503's ``Retry-After`` (seconds) is honoured if longer.
        sleep: the wait function (tests may pass a recorder).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._sleep = sleep
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(self._headers)
            self._local.session = session
        return session

    def wait_healthy(self, timeout: float, poll: float = 0.5) -> dict[str, Any]:
        """Polls ``GET /health`` until it answers 200.

        Args:
            timeout: seconds to keep trying.
            poll: seconds between attempts.

        Returns:
            The health response's JSON body (``{}`` if it is not JSON).

        Raises:
            GatewayUnavailableError: no 200 within ``timeout``; the message has the last status
                or connection error.
        """
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                resp = self._session().get(
                    f"{self.base_url}/health", timeout=min(self._timeout, max(poll, 5.0))
                )
                if resp.status_code == 200:
                    try:
                        return resp.json()
                    except ValueError:
                        return {}
                last = f"HTTP {resp.status_code} {resp.text[:200]!r}"
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + poll > deadline:
                raise GatewayUnavailableError(
                    f"gateway {self.base_url} not healthy after {timeout:g} s (last: {last})"
                )
            self._sleep(poll)

    def predict_batch(
        self,
        items: Sequence[tuple[str, bytes]],
        top_k: int = 3,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> BatchAnswer:
        """Classifies images with one ``POST /predict_batch`` (retried on transient failures).

        Args:
            items: ``(filename, content)`` pairs, sent as repeated multipart field ``images``
                in this order.
            top_k: how many classes each prediction lists (query parameter ``top_k``).
            should_stop: checked before each retry; True gives up early (the runner sets it
                when another request already found the gateway down).

        Returns:
            The parsed 200 response.

        Raises:
            TransientGatewayError: 5xx / connection error / timeout after the retries, or a 200
                whose body is not the documented shape or has the wrong number of predictions.
            RejectedRequestError: a 4xx status for the whole request.
        """
        files = [
            ("images", (name, data, mimetypes.guess_type(name)[0] or "application/octet-stream"))
            for name, data in items
        ]
        attempt = 0
        limited = 0
        while True:
            wait = self._backoff * (2**attempt)
            try:
                resp = self._session().post(
                    f"{self.base_url}/predict_batch",
                    params={"top_k": top_k},
                    files=files,
                    timeout=self._timeout,
                )
            except requests.Timeout as exc:
                error = TransientGatewayError("timeout", f"/predict_batch timed out: {exc}")
            except requests.RequestException as exc:
                error = TransientGatewayError("connection_error", f"/predict_batch: {exc}")
            else:
                if resp.status_code == 200:
                    return self._parse(resp, len(items))
                code, message = _error_of(resp)
                if resp.status_code == 429 and limited < RATE_LIMIT_WAITS and not should_stop():
                    limited += 1
                    self._sleep(_retry_after(resp, default=self._backoff))
                    continue
                if resp.status_code == 429:
                    raise TransientGatewayError(
                        code, f"HTTP 429 {code}: still limited after {limited} waits: {message}"
                    )
                if resp.status_code < 500:
                    raise RejectedRequestError(resp.status_code, code, message)
                error = TransientGatewayError(code, f"HTTP {resp.status_code} {code}: {message}")
                retry_after = resp.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    wait = max(wait, float(retry_after))
            if attempt >= self._retries or should_stop():
                raise error
            self._sleep(min(wait, RETRY_BACKOFF_CAP))
            attempt += 1

    @staticmethod
    def _parse(resp: requests.Response, expected: int) -> BatchAnswer:
        try:
            body = resp.json()
            predictions = list(body["predictions"])
            model = body.get("model") or {}
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientGatewayError("bad_response", f"unexpected body: {exc}") from exc
        if len(predictions) != expected:
            raise TransientGatewayError(
                "bad_response", f"{len(predictions)} predictions for {expected} images"
            )
        version = model.get("version")
        return BatchAnswer(
            model.get("name"), int(version) if version is not None else None, predictions
        )
