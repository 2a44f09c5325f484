"""What the served model expects: input name, dtype and image size, read from GetModelMetadata.

Nothing about the model's input is a constant in the gateway. The signature is fetched when first
needed (at start-up if serving is up) and again whenever a Predict response reports a version other
than the one the cached signature describes, so a new version with another input size is picked up
by the next request.

The output keys are the contract's (docs/CONTRACTS.md section 2): ``probabilities`` (DT_FLOAT,
``[-1, num_classes]``) and ``classes`` (DT_STRING, ``[-1, num_classes]``, the version's labels);
a version with an abstain rule also has ``known_probability`` (DT_FLOAT ``[-1]``), ``abstain``
(DT_BOOL ``[-1]``) and ``abstain_reason`` (DT_STRING ``[-1]``), and the gateway asks for them only
when the version's signature lists them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from contract import OUTPUT_CLASSES, OUTPUT_PROBABILITIES, RULE_OUTPUTS
from gateway.errors import ErrorCode, GatewayError
from gateway.serving_client import LATEST, ServingClient, VersionSelector
from serving_api.tensors import TensorConversionError, dtype_name, numpy_dtype

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputSpec:
    """The image input of the signature.

    Attributes:
        version: the model version this spec was read from.
        name: input key, e.g. ``images``.
        dtype: NumPy dtype of the input, e.g. ``uint8``.
        dtype_name: TF name, e.g. ``DT_UINT8``.
        height: image height in pixels.
        width: image width in pixels.
        channels: 3 (RGB).
        num_classes: columns of the ``probabilities`` output, None if the signature leaves it open.
        has_rule: the signature has the abstain rule's outputs (:data:`RULE_OUTPUTS`).
    """

    version: int
    name: str
    dtype: np.dtype
    dtype_name: str
    height: int
    width: int
    channels: int
    num_classes: int | None = None
    has_rule: bool = False

    @property
    def outputs(self) -> tuple[str, ...]:
        """The output keys a Predict call of this version asks for."""
        return (OUTPUT_PROBABILITIES, OUTPUT_CLASSES, *(RULE_OUTPUTS if self.has_rule else ()))

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels, the size argument of ``preprocessing.decode``."""
        return self.height, self.width

    def as_json(self) -> dict:
        """JSON description, e.g. ``{"name": "images", "dtype": "DT_UINT8", "shape": [-1,...]}``."""
        return {
            "name": self.name,
            "dtype": self.dtype_name,
            "shape": [-1, self.height, self.width, self.channels],
        }


def parse_signature(version: int, signature: object) -> InputSpec:
    """Read the image input from a ``SignatureDef`` and check the contract's outputs exist.

    Args:
        version: the version the signature belongs to.
        signature: ``tensorflow.SignatureDef`` from GetModelMetadata.

    Returns:
        The input spec.

    Raises:
        GatewayError: ``serving_error`` if the signature does not have exactly one input of shape
            ``[-1, H, W, 3]`` with known H and W and a numeric dtype, lacks the
            ``probabilities``/``classes`` outputs, or has only some of :data:`RULE_OUTPUTS`.
    """
    if len(signature.inputs) != 1:
        raise GatewayError(
            ErrorCode.SERVING_ERROR,
            f"model version {version} has "
            f"{len(signature.inputs)} inputs; the gateway sends one image tensor",
        )
    missing = {OUTPUT_PROBABILITIES, OUTPUT_CLASSES} - set(signature.outputs)
    if missing:
        raise GatewayError(
            ErrorCode.SERVING_ERROR, f"model version {version} lacks outputs {sorted(missing)}"
        )
    rule = [key for key in RULE_OUTPUTS if key in signature.outputs]
    if rule and len(rule) != len(RULE_OUTPUTS):
        raise GatewayError(
            ErrorCode.SERVING_ERROR,
            f"model version {version} has abstain outputs {rule} but not "
            f"{sorted(set(RULE_OUTPUTS) - set(rule))}",
        )
    name, info = next(iter(signature.inputs.items()))
    dims = [d.size for d in info.tensor_shape.dim]
    if info.tensor_shape.unknown_rank or len(dims) != 4 or dims[3] != 3 or min(dims[1:3]) <= 0:
        raise GatewayError(
            ErrorCode.SERVING_ERROR,
            f"model version {version} input {name!r} has shape "
            f"{dims}; the gateway needs [-1, H, W, 3]",
        )
    try:
        dtype = numpy_dtype(info.dtype)
    except TensorConversionError as exc:
        raise GatewayError(ErrorCode.SERVING_ERROR, f"model version {version}: {exc}") from None
    out_dims = [d.size for d in signature.outputs[OUTPUT_PROBABILITIES].tensor_shape.dim]
    num_classes = int(out_dims[1]) if len(out_dims) == 2 and out_dims[1] > 0 else None
    return InputSpec(
        version=version,
        name=name,
        dtype=dtype,
        dtype_name=dtype_name(info.dtype),
        height=int(dims[1]),
        width=int(dims[2]),
        channels=3,
        num_classes=num_classes,
        has_rule=bool(rule),
    )


class ModelInfo:
    """Cache of the input spec per version selector, refreshed when the answering version changes.

    Args:
        client: the serving client used for GetModelMetadata.
    """

    def __init__(self, client: ServingClient) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._specs: dict[VersionSelector, InputSpec] = {}

    def input_spec(self, selector: VersionSelector = LATEST) -> InputSpec:
        """The input spec for requests with this selector, fetched on first use.

        Args:
            selector: the request's version choice.

        Returns:
            The cached or freshly fetched spec.

        Raises:
            GatewayError: serving errors of GetModelMetadata, or a signature the gateway cannot
                feed (see :func:`parse_signature`).
        """
        with self._lock:
            spec = self._specs.get(selector)
        return spec if spec is not None else self.refresh(selector)

    def refresh(self, selector: VersionSelector = LATEST) -> InputSpec:
        """Fetch the signature for ``selector`` again and cache it.

        Raises:
            GatewayError: as :meth:`input_spec`.
        """
        version, signature = self._client.get_signature(selector)
        spec = parse_signature(version, signature)
        with self._lock:
            old = self._specs.get(selector)
            self._specs[selector] = spec
        if old is None or old.version != spec.version:
            log.info(
                "model %s (%s): version %s, input %s",
                self._client.settings.model_name,
                _describe(selector),
                version,
                spec.as_json(),
            )
        return spec

    def observe(self, selector: VersionSelector, answered_version: int) -> InputSpec:
        """Note the version that answered a request; re-read the signature if it changed.

        Args:
            selector: the request's version choice.
            answered_version: ``model_spec.version`` of the Predict response.

        Returns:
            The spec now cached for ``selector``.
        """
        spec = self.input_spec(selector)
        if spec.version != answered_version:
            spec = self.refresh(selector)
        return spec

    def warm_up(self) -> None:
        """Fetch the latest version's signature now; log instead of failing if serving is down."""
        try:
            self.refresh(LATEST)
        except GatewayError as exc:
            log.warning(
                "model metadata not available at start-up (%s); will retry per request", exc.message
            )


def _describe(selector: VersionSelector) -> str:
    if selector.version is not None:
        return f"version {selector.version}"
    if selector.label is not None:
        return f"label {selector.label!r}"
    return "latest"


__all__ = ["InputSpec", "ModelInfo", "parse_signature"]
