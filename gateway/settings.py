"""The gateway's configuration: one frozen dataclass read from environment variables.

Every field names its environment variable and documents its unit and default in the field's
metadata; :meth:`Settings.from_env` is the only place the environment is read.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field

from contract import SIGNATURE_NAME

LB_POLICIES = ("pick_first", "round_robin")
"""gRPC load-balancing policies ``SERVING_LB_POLICY`` accepts (gRPC's built-in names)."""


class SettingsError(ValueError):
    """A setting that does not parse or is out of range; the message names its variable."""


def _env(name: str, doc: str, default: typing.Any) -> typing.Any:
    return field(default=default, metadata={"env": name, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Gateway settings. Defaults suit one gateway next to one TF Serving on the same host.

    Attributes are documented by their ``doc`` metadata; ``describe()`` lists them with their
    environment variable names.
    """

    grpc_address: str = _env(
        "SERVING_GRPC_ADDRESS",
        "gRPC target of TF Serving: host:port, dns:///name:port (every address the name "
        "resolves to) or ipv4:addr:port,addr:port (a fixed list)",
        "localhost:8500",
    )
    lb_policy: str = _env(
        "SERVING_LB_POLICY",
        "how calls spread over the target's addresses: pick_first (one connection) or "
        "round_robin (every address, a retry after UNAVAILABLE goes to the next one)",
        "pick_first",
    )
    model_name: str = _env("MODEL_NAME", "model name in TF Serving's model config", "fashion")
    signature_name: str = _env(
        "SIGNATURE_NAME", "SavedModel signature called by Predict", SIGNATURE_NAME
    )
    deadline_seconds: float = _env(
        "SERVING_DEADLINE_SECONDS", "deadline of one gRPC call in seconds, retries included", 10.0
    )
    retries: int = _env(
        "SERVING_RETRIES", "extra attempts of a gRPC call that failed with UNAVAILABLE (0..4)", 2
    )
    retry_backoff_seconds: float = _env(
        "SERVING_RETRY_BACKOFF_SECONDS",
        "first retry backoff in seconds (doubles, with jitter)",
        0.1,
    )
    retry_after_seconds: int = _env(
        "RETRY_AFTER_SECONDS", "Retry-After header value sent with 503, in seconds", 5
    )
    grpc_max_message_bytes: int = _env(
        "GRPC_MAX_MESSAGE_BYTES",
        "gRPC send and receive message size limit in bytes",
        64 * 1024 * 1024,
    )
    max_body_bytes: int = _env(
        "MAX_BODY_BYTES",
        "largest request body in bytes (multipart or raw), else 413",
        32 * 1024 * 1024,
    )
    max_image_pixels: int = _env(
        "MAX_IMAGE_PIXELS",
        "largest width*height an image header may declare, else 413 before decoding; far below "
        "Pillow's decompression-bomb error at 178,956,970 pixels",
        40_000_000,
    )
    max_batch_images: int = _env(
        "MAX_BATCH_IMAGES", "most images in one /predict_batch request, else 413", 64
    )
    predict_chunk_size: int = _env(
        "PREDICT_CHUNK_SIZE",
        "most images sent in one gRPC Predict call (a chunk is sent as soon "
        "as its images are decoded, overlapping decoding and the model)",
        16,
    )
    predict_parallel_chunks: int = _env(
        "PREDICT_PARALLEL_CHUNKS",
        "most Predict calls of one request in flight at once, so the model server can run a "
        "request's chunks on two cores (1: each chunk waits for the previous one's answer)",
        2,
    )
    top_k: int = _env("TOP_K", "default length of the top_k list (query top_k overrides)", 3)
    api_key: str | None = _env(
        "GATEWAY_API_KEY",
        "if set, every endpoint except /health and /metrics needs X-API-Key",
        None,
    )
    decode_threads: int = _env(
        "DECODE_THREADS",
        "threads of the per-process pool that decodes uploads (shared by all requests)",
        4,
    )
    log_level: str = _env("LOG_LEVEL", "Python logging level of the gateway", "INFO")
    log_format: str = _env(
        "LOG_FORMAT",
        "'text' (readable lines) or 'json' (one JSON object per line: time, level, request_id, "
        "endpoint, status, latency_ms, version, cache)",
        "text",
    )
    cors_origins: str | None = _env(
        "CORS_ORIGINS",
        "comma-separated origins allowed to call the gateway from browser scripts "
        "(e.g. https://shop.example); unset: no CORS headers at all",
        None,
    )
    rate_limit: str | None = _env(
        "RATE_LIMIT",
        "requests allowed per caller, e.g. '120/minute' or '10/second;500/hour'; counted per API "
        "key when GATEWAY_API_KEY is set, else per client address; unset: no limit",
        None,
    )
    trusted_proxies: int = _env(
        "TRUSTED_PROXIES",
        "reverse proxies in front of the gateway whose X-Forwarded-For entry is trusted for the "
        "client address (0 = use the TCP peer)",
        0,
    )
    redis_url: str | None = _env(
        "REDIS_URL",
        "Redis for the rate-limit counts and the prediction cache, e.g. redis://redis:6379/0; "
        "unset: both kept in the process",
        None,
    )
    redis_timeout_seconds: float = _env(
        "REDIS_TIMEOUT_SECONDS",
        "connect and read timeout of one Redis call in seconds; a slower Redis is skipped",
        0.1,
    )
    cache_size: int = _env(
        "CACHE_SIZE",
        "predictions kept by the in-process LRU cache (0 = no prediction cache, also with Redis)",
        1024,
    )
    cache_ttl_seconds: int = _env(
        "CACHE_TTL_SECONDS", "lifetime of a prediction cached in Redis, in seconds", 86400
    )
    cache_version_check_seconds: float = _env(
        "CACHE_VERSION_CHECK_SECONDS",
        "how long the latest AVAILABLE version is trusted before asking TF Serving again, in "
        "seconds; bounds how long cached answers of a replaced version can be returned",
        5.0,
    )

    def __post_init__(self) -> None:
        positive = (
            "deadline_seconds",
            "grpc_max_message_bytes",
            "max_body_bytes",
            "max_image_pixels",
            "max_batch_images",
            "predict_chunk_size",
            "predict_parallel_chunks",
            "top_k",
            "decode_threads",
            "retry_after_seconds",
            "redis_timeout_seconds",
            "cache_ttl_seconds",
            "cache_version_check_seconds",
        )
        for name in (*positive, "retry_backoff_seconds"):
            value = getattr(self, name)
            if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
                raise SettingsError(f"{_env_name(name)} must be > 0, got {value!r}")
        if not 0 <= self.retries <= 4:
            raise SettingsError(f"SERVING_RETRIES must be in 0..4, got {self.retries}")
        if not self.grpc_address or not self.model_name:
            raise SettingsError("SERVING_GRPC_ADDRESS and MODEL_NAME must not be empty")
        if self.lb_policy not in LB_POLICIES:
            raise SettingsError(
                f"SERVING_LB_POLICY must be one of {', '.join(LB_POLICIES)}, got {self.lb_policy!r}"
            )
        for name in ("cache_size", "trusted_proxies"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{_env_name(name)} must be >= 0, got {getattr(self, name)}")
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"LOG_FORMAT must be 'text' or 'json', got {self.log_format!r}")
        if self.rate_limit is not None:
            _check_rate_limit(self.rate_limit)
        if self.cors_origins is not None and not self.cors_origin_list:
            raise SettingsError("CORS_ORIGINS must name at least one origin when set")
        levels = logging.getLevelNamesMapping()
        if self.log_level not in levels or self.log_level == "NOTSET":
            raise SettingsError(
                f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, "
                f"CRITICAL, got {self.log_level!r}"
            )

    @property
    def cors_origin_list(self) -> list[str]:
        """``CORS_ORIGINS`` split at commas, blanks dropped (empty when unset)."""
        return [o.strip() for o in (self.cors_origins or "").split(",") if o.strip()]

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: typing.Any
    ) -> Settings:
        """Build settings from environment variables, falling back to the documented defaults.

        Args:
            environ: the variables to read; ``os.environ`` if None. Empty values count as unset.
            **overrides: field values that take precedence over the environment (tests).

        Returns:
            The validated settings.

        Raises:
            SettingsError: a variable that does not parse as the field's type, or is out of
                range; the message names the variable.
        """
        environ = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, typing.Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"], "")
            if raw == "":
                continue
            kind = hints[f.name]
            try:
                if kind is int:
                    values[f.name] = int(raw)
                elif kind is float:
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                raise SettingsError(
                    f"{f.metadata['env']}={raw!r} is not a valid {kind.__name__}"
                ) from None
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_env_or_exit(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """:meth:`from_env` for start-up: a bad setting is one line on stderr and exit status 2.

        Args:
            environ: the variables to read; ``os.environ`` if None.

        Returns:
            The validated settings.

        Raises:
            SystemExit: code 2 after printing ``gateway: bad setting: <message>`` to stderr.
        """
        try:
            return cls.from_env(environ)
        except SettingsError as exc:
            exit_with_bad_setting(str(exc))

    @classmethod
    def describe(cls) -> list[dict[str, str]]:
        """The settings' documentation: environment variable, default and meaning of each field.

        Returns:
            One dict per field with keys ``env``, ``default``, ``doc``.
        """
        return [
            {"env": f.metadata["env"], "default": repr(f.default), "doc": f.metadata["doc"]}
            for f in dataclasses.fields(cls)
        ]


def _check_rate_limit(text: str) -> None:
    from limits import parse_many  # Flask-Limiter's parser, so a value here is a value there

    try:
        parse_many(text)
    except ValueError:
        raise SettingsError(
            f"RATE_LIMIT={text!r} is not a rate limit like '120/minute' or '10/second;500/hour'"
        ) from None


def _env_name(field_name: str) -> str:
    return next(f.metadata["env"] for f in dataclasses.fields(Settings) if f.name == field_name)


def exit_with_bad_setting(message: str) -> typing.NoReturn:
    """Print ``gateway: bad setting: <message>`` to stderr and exit with status 2 (usage error).

    Args:
        message: what is wrong, naming the environment variable.

    Raises:
        SystemExit: always, with code 2.
    """
    print(f"gateway: bad setting: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)
