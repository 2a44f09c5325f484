"""TF Serving warm-up requests: ``assets.extra/tf_serving_warmup_requests``.

Format (TF Serving "SavedModel Warmup" guide, tensorflow.org/tfx/serving/saved_model_warmup): a
TFRecord file whose records are serialized ``tensorflow.serving.PredictionLog`` messages
(``tensorflow_serving/apis/prediction_log.proto``); each ``predict_log.request`` is a
``PredictRequest`` replayed when the version loads, so the first real request does not pay for
lazy initialisation. At most 1000 records are read. One record per batch size: with batching
enabled, each size the batcher pads to should be warmed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from contract import INPUT_IMAGES, SIGNATURE_NAME

FILENAME: Final = "tf_serving_warmup_requests"
BATCH_SIZES: Final = (1, 32)
"""Warm-up batch sizes (docs/CONTRACTS.md §2)."""
MAX_RECORDS: Final = 1000
"""TF Serving reads no more than this many warm-up records (the warm-up guide)."""


def build_requests(
    model_name: str, images: np.ndarray, batch_sizes: Sequence[int] = BATCH_SIZES
) -> list[predict_pb2.PredictRequest]:
    """Make one Predict request per batch size from the first images of ``images``.

    Args:
        model_name: the served model name (``model_spec.name``), e.g. ``"fashion"``.
        images: ``uint8`` array ``(N, H, W, 3)`` with ``N >= max(batch_sizes)``.
        batch_sizes: the batch sizes wanted.

    Returns:
        Requests for signature ``serving_default`` with input ``images`` of shape ``[b, H, W, 3]``.

    Raises:
        ValueError: ``images`` is not uint8 ``(N, H, W, 3)``, has too few rows, or more than
            1000 records are asked for.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if not batch_sizes or len(batch_sizes) > MAX_RECORDS:
        raise ValueError(f"need 1..{MAX_RECORDS} batch sizes, got {len(batch_sizes)}")
    if max(batch_sizes) > len(images) or min(batch_sizes) < 1:
        raise ValueError(f"batch sizes {list(batch_sizes)} do not fit {len(images)} images")
    requests = []
    for size in batch_sizes:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = SIGNATURE_NAME
        request.inputs[INPUT_IMAGES].CopyFrom(tf.make_tensor_proto(images[:size]))
        requests.append(request)
    return requests


def write(path: Path, requests: Sequence[predict_pb2.PredictRequest]) -> None:
    """Write requests as a TFRecord of ``PredictionLog`` records.

    Args:
        path: the file to create (``.../assets.extra/tf_serving_warmup_requests``).
        requests: the Predict requests, in replay order.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def read(path: Path) -> list[prediction_log_pb2.PredictionLog]:
    """Parse a warm-up file.

    Args:
        path: a ``tf_serving_warmup_requests`` file.

    Returns:
        The records, in file order (at most ``MAX_RECORDS + 1`` are read, so an over-long file is
        detectable without reading it all).

    Raises:
        tf.errors.OpError: the file is missing or not a valid TFRecord.
        google.protobuf.message.DecodeError: a record is not a ``PredictionLog``.
    """
    records = []
    for raw in tf.data.TFRecordDataset(str(path)).take(MAX_RECORDS + 1):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(raw.numpy())
        records.append(log)
    return records
