"""The gateway's configuration: one frozen dataclass read from environment variables.

Every field names its environment variable and documents its unit and default in the field's
metadata; :meth:`Settings.from_env` is the only place the environment is read.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field


def _env(name: str, doc: str, default: typing.Any) -> typing.Any:
    return field(default=default, metadata={"env": name, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Gateway settings. Defaults suit one gateway next to one TF Serving on the same host.

    Attributes are documented by their ``doc`` metadata; ``describe()`` lists them with their
    environment variable names.
    """

    grpc_address: str = _env(
        "SERVING_GRPC_ADDRESS", "host:port of TF Serving's gRPC API", "localhost:8500")
    model_name: str = _env("MODEL_NAME", "model name in TF Serving's model config", "fashion")
    signature_name: str = _env(
        "SIGNATURE_NAME", "SavedModel signature called by Predict", "serving_default")
    deadline_seconds: float = _env(
        "SERVING_DEADLINE_SECONDS",
        "deadline of one gRPC call in seconds, retries included", 10.0)
    retries: int = _env(
        "SERVING_RETRIES", "extra attempts of a gRPC call that failed with UNAVAILABLE (0..4)", 2)
    retry_backoff_seconds: float = _env(
        "SERVING_RETRY_BACKOFF_SECONDS", "first retry backoff in seconds (doubles, with jitter)",
        0.1)
    retry_after_seconds: int = _env(
        "RETRY_AFTER_SECONDS", "Retry-After header value sent with 503, in seconds", 5)
    grpc_max_message_bytes: int = _env(
        "GRPC_MAX_MESSAGE_BYTES", "gRPC send and receive message size limit in bytes",
        64 * 1024 * 1024)
    max_body_bytes: int = _env(
        "MAX_BODY_BYTES", "largest request body in bytes (multipart or raw), else 413",
        32 * 1024 * 1024)
    max_image_pixels: int = _env(
        "MAX_IMAGE_PIXELS",
        "largest width*height an image header may declare, else 413 before decoding; far below "
        "Pillow's decompression-bomb error at 178,956,970 pixels", 40_000_000)
    max_batch_images: int = _env(
        "MAX_BATCH_IMAGES", "most images in one /predict_batch request, else 413", 64)
    predict_chunk_size: int = _env(
        "PREDICT_CHUNK_SIZE", "most images sent in one gRPC Predict call", 32)
    top_k: int = _env("TOP_K", "default length of the top_k list (query top_k overrides)", 3)
    api_key: str | None = _env(
        "GATEWAY_API_KEY", "if set, every endpoint except /health and /metrics needs X-API-Key",
        None)
    decode_threads: int = _env(
        "DECODE_THREADS", "threads decoding the images of one batch request", 4)
    log_level: str = _env("LOG_LEVEL", "Python logging level of the gateway", "INFO")

    def __post_init__(self) -> None:
        positive = ("deadline_seconds", "grpc_max_message_bytes", "max_body_bytes",
                    "max_image_pixels", "max_batch_images", "predict_chunk_size", "top_k",
                    "decode_threads", "retry_after_seconds")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{_env_name(name)} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.retries <= 4:
            raise ValueError(f"SERVING_RETRIES must be in 0..4, got {self.retries}")
        if self.retry_backoff_seconds <= 0:
            raise ValueError("SERVING_RETRY_BACKOFF_SECONDS must be > 0")
        if not self.grpc_address or not self.model_name:
            raise ValueError("SERVING_GRPC_ADDRESS and MODEL_NAME must not be empty")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 **overrides: typing.Any) -> Settings:
        """Build settings from environment variables, falling back to the documented defaults.

        Args:
            environ: the variables to read; ``os.environ`` if None. Empty values count as unset.
            **overrides: field values that take precedence over the environment (tests).

        Returns:
            The validated settings.

        Raises:
            ValueError: a variable that does not parse as the field's type, or is out of range.
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
                raise ValueError(
                    f"{f.metadata['env']}={raw!r} is not a valid {kind.__name__}") from None
        values.update(overrides)
        return cls(**values)

    @classmethod
    def describe(cls) -> list[dict[str, str]]:
        """The settings' documentation: environment variable, default and meaning of each field.

        Returns:
            One dict per field with keys ``env``, ``default``, ``doc``.
        """
        return [{"env": f.metadata["env"], "default": repr(f.default), "doc": f.metadata["doc"]}
                for f in dataclasses.fields(cls)]


def _env_name(field_name: str) -> str:
    return next(f.metadata["env"] for f in dataclasses.fields(Settings) if f.name == field_name)
