"""The prediction cache: model outputs of one image, keyed by what determines them. No Flask here.

Key = model name, resolved model version, preprocessing spec (the shared decoder's contract and the
signature's input size and dtype) and the SHA-256 of the image bytes. The value is the model's
output row for that image (every output the Predict response had, e.g. ``probabilities`` and
``classes``), so any ``top_k`` can be answered from it.

Two stores: an in-process LRU (:class:`LocalStore`, ``CACHE_SIZE`` entries) or Redis
(:class:`RedisStore`, when ``REDIS_URL`` is set; entries expire after ``CACHE_TTL_SECONDS``).
Redis failing or slower than ``REDIS_TIMEOUT_SECONDS`` never fails a request:
:class:`PredictionCache` answers "miss", stores nothing, logs once per outage, counts the error in
``gateway_cache_errors_total`` and leaves Redis alone for a few seconds before trying again.

Which version a request would get is resolved by :class:`VersionResolver` from TF Serving's
model status, trusted for ``CACHE_VERSION_CHECK_SECONDS``: a newly AVAILABLE version stops cached
answers of the old one within that time. Requests by version label are not cached (the status API
does not resolve labels).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

import preprocessing
from gateway.errors import GatewayError
from gateway.serving_client import AVAILABLE, VersionSelector, VersionStatus

log = logging.getLogger(__name__)

Row = dict[str, np.ndarray]
"""The outputs of one image: output key -> the image's row (``probabilities`` float32 ``(K,)``,
``classes`` bytes ``(K,)``, scalars as 0-d arrays)."""

_PREPROCESSING_DIGEST = hashlib.sha256(
    json.dumps(preprocessing.SPEC, sort_keys=True).encode()
).hexdigest()[:12]


def image_digest(data: bytes) -> str:
    """SHA-256 of the image bytes, hex."""
    return hashlib.sha256(data).hexdigest()


def cache_key(model: str, version: int, input_spec: str, digest: str) -> str:
    """The cache key of one image.

    Args:
        model: model name.
        version: the resolved (or answering) version.
        input_spec: the signature's input as ``HxWxC:dtype`` (e.g. ``224x224x3:uint8``).
        digest: :func:`image_digest` of the bytes.

    Returns:
        ``gw:pred:<model>:<version>:<preprocessing digest>-<input_spec>:<digest>``.
    """
    return f"gw:pred:{model}:{version}:{_PREPROCESSING_DIGEST}-{input_spec}:{digest}"


def encode_row(row: Mapping[str, np.ndarray]) -> bytes:
    """Serialise one image's outputs (JSON; float32 values survive exactly as doubles).

    Args:
        row: output key -> array of any shape, numeric, bool or bytes.

    Returns:
        UTF-8 JSON ``{key: [dtype, shape, flat values]}``.
    """
    body = {}
    for key, value in row.items():
        array = np.asarray(value)
        if array.dtype.kind in "OSU":
            flat = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.ravel()]
            body[key] = ["bytes", list(array.shape), flat]
        else:
            body[key] = [array.dtype.str, list(array.shape), array.ravel().tolist()]
    return json.dumps(body, separators=(",", ":")).encode()


def decode_row(blob: bytes) -> Row:
    """Inverse of :func:`encode_row` (strings come back as bytes, as gRPC returns them).

    Raises:
        ValueError: ``blob`` is not an encoded row.
    """
    row: Row = {}
    for key, (dtype, shape, flat) in json.loads(blob).items():
        if dtype == "bytes":
            values = np.empty(len(flat), dtype=object)
            values[:] = [v.encode("utf-8") for v in flat]
        else:
            values = np.asarray(flat, dtype=np.dtype(dtype))
        row[key] = values.reshape(shape)
    return row


class StoreError(Exception):
    """The store could not be reached or answered wrongly."""


class Store(Protocol):
    """Where cached rows live."""

    name: str

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The stored values, None where absent. Raises StoreError."""

    def set_many(self, items: Mapping[str, bytes]) -> None:
        """Store values. Raises StoreError."""


class LocalStore:
    """A thread-safe in-process LRU of at most ``size`` entries."""

    name = "local"

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """See :class:`Store`."""
        out = []
        with self._lock:
            for key in keys:
                value = self._data.get(key)
                if value is not None:
                    self._data.move_to_end(key)
                out.append(value)
        return out

    def set_many(self, items: Mapping[str, bytes]) -> None:
        """See :class:`Store`."""
        with self._lock:
            for key, value in items.items():
                self._data[key] = value
                self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


class RedisStore:
    """Redis (``MGET`` / pipelined ``SET EX``), shared by every worker and replica.

    Args:
        url: ``redis://host:port/db``.
        ttl_seconds: lifetime of each entry.
        timeout_seconds: connect and read timeout of one call.
    """

    name = "redis"

    def __init__(self, url: str, ttl_seconds: int, timeout_seconds: float) -> None:
        import redis  # only when REDIS_URL is set

        self._errors = (redis.RedisError, OSError)
        self._ttl = ttl_seconds
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry_on_timeout=False,
        )

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """See :class:`Store`."""
        try:
            return list(self._client.mget(list(keys)))
        except self._errors as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from None

    def set_many(self, items: Mapping[str, bytes]) -> None:
        """See :class:`Store`."""
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(key, value, ex=self._ttl)
                pipe.execute()
        except self._errors as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from None


class PredictionCache:
    """Looks up and stores rows, failing open when the store fails.

    Args:
        store: where rows live.
        on_lookup: called with ``("hit" | "miss", count)`` after each lookup (metrics).
        on_error: called with ``(store name, operation)`` for each failed store call (metrics).
        pause_seconds: after a failure, how long the store is skipped (each skipped lookup is a
            miss) so a down Redis costs one timeout per pause, not one per request.
    """

    def __init__(
        self,
        store: Store,
        *,
        on_lookup: Callable[[str, int], None] = lambda result, n: None,
        on_error: Callable[[str, str], None] = lambda store, operation: None,
        pause_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self._on_lookup = on_lookup
        self._on_error = on_error
        self._pause = pause_seconds
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._down = False

    def _failed(self, operation: str, exc: Exception) -> None:
        self._on_error(self.store.name, operation)
        with self._lock:
            self._down_until = time.monotonic() + self._pause
            first = not self._down
            self._down = True
        if first:
            log.warning(
                "prediction cache (%s) unavailable, answering without it: %s", self.store.name, exc
            )

    def _usable(self) -> bool:
        with self._lock:
            return time.monotonic() >= self._down_until

    def _recovered(self) -> None:
        if self._down:
            with self._lock:
                was, self._down = self._down, False
            if was:
                log.warning("prediction cache (%s) reachable again", self.store.name)

    def get(self, keys: Sequence[str]) -> list[Row | None]:
        """The cached rows of ``keys``, None for a miss (also for every key while the store fails).

        Args:
            keys: :func:`cache_key` values.

        Returns:
            One row or None per key.
        """
        rows: list[Row | None] = [None] * len(keys)
        if keys and self._usable():
            try:
                blobs = self.store.get_many(keys)
            except StoreError as exc:
                self._failed("get", exc)
            else:
                self._recovered()
                for i, blob in enumerate(blobs):
                    if blob is not None:
                        try:
                            rows[i] = decode_row(blob)
                        except (ValueError, TypeError, KeyError):
                            log.warning("ignoring an unreadable cache entry %s", keys[i])
        hits = sum(row is not None for row in rows)
        if hits:
            self._on_lookup("hit", hits)
        if len(keys) - hits:
            self._on_lookup("miss", len(keys) - hits)
        return rows

    def put(self, rows: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Store rows by key; a failing store is logged and counted, never raised.

        Args:
            rows: key -> one image's outputs.
        """
        if not rows or not self._usable():
            return
        try:
            self.store.set_many({key: encode_row(row) for key, row in rows.items()})
        except StoreError as exc:
            self._failed("set", exc)
        else:
            self._recovered()


class VersionResolver:
    """Which version a request would be answered by, from GetModelStatus, cached briefly.

    Args:
        get_status: the serving client's ``get_status``.
        check_seconds: how long a status answer is trusted.
        clock: monotonic seconds (tests may pass their own).
    """

    def __init__(
        self,
        get_status: Callable[[], list[VersionStatus]],
        check_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._get_status = get_status
        self._check = check_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._available: frozenset[int] = frozenset()
        self._checked_at: float | None = None

    def _versions(self) -> frozenset[int] | None:
        with self._lock:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at >= self._check:
                try:
                    statuses = self._get_status()
                except GatewayError as exc:
                    log.info("version check failed (%s); not using the cache", exc.message)
                    return None
                self._available = frozenset(s.version for s in statuses if s.state == AVAILABLE)
                self._checked_at = now
            return self._available

    def saw(self, version: int) -> None:
        """A Predict response came from ``version``; if it is not a known AVAILABLE version, the
        next :meth:`resolve` asks TF Serving again instead of waiting out ``check_seconds``."""
        with self._lock:
            if version not in self._available:
                self._checked_at = None

    def resolve(self, selector: VersionSelector) -> int | None:
        """The version to key the cache with, or None to bypass the cache.

        Args:
            selector: the request's version choice.

        Returns:
            The pinned version if it is AVAILABLE; for the latest, the highest AVAILABLE version
            (TF Serving's choice); None for a label, an unavailable version, no AVAILABLE version
            or a failed status call.
        """
        if selector.label is not None:
            return None
        available = self._versions()
        if not available:
            return None
        if selector.version is not None:
            return selector.version if selector.version in available else None
        return max(available)
