"""Stage 3: Predict through the model server over gRPC (its own cost on top of the model)."""

from __future__ import annotations

import itertools

import grpc
import numpy as np

from bench.stats import latency_summary, time_calls
from contract import OUTPUT_PROBABILITIES, SIGNATURE_NAME
from serving_api import protos, tensors

_MAX_MESSAGE = 64 * 1024 * 1024


def predict_latencies(
    address: str, model: str, input_name: str, images: np.ndarray, repeats: int
) -> dict:
    """Time unary Predict calls at batch 1 and batch 32 on one reused channel.

    Args:
        address: ``host:port`` of a TF Serving compatible server.
        model: model name in the model spec.
        input_name: the signature's input key (from GetModelMetadata).
        images: preprocessed uint8 images ``[n, H, W, 3]``, n >= 32.
        repeats: calls to time at batch 1 (batch 32 uses a tenth, at least 5).

    Returns:
        ``{"batch1": latency summary, "batch32": latency summary, "batch32_images_per_s": float}``.
    """
    options = [
        ("grpc.max_send_message_length", _MAX_MESSAGE),
        ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ]
    with grpc.insecure_channel(address, options=options) as channel:
        stub = protos.prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def request(batch: np.ndarray):
            req = protos.predict_pb2.PredictRequest()
            req.model_spec.name = model
            req.model_spec.signature_name = SIGNATURE_NAME
            req.inputs[input_name].CopyFrom(tensors.to_tensor_proto(batch))
            req.output_filter.append(OUTPUT_PROBABILITIES)
            return req

        singles = itertools.cycle(range(len(images)))
        batch1 = time_calls(
            lambda: stub.Predict(request(images[next(singles)][None]), timeout=30), repeats
        )
        runs = max(5, repeats // 10)
        batch32 = time_calls(lambda: stub.Predict(request(images[:32]), timeout=60), runs)
    return {
        "batch1": latency_summary(batch1),
        "batch32": latency_summary(batch32),
        "batch32_images_per_s": round(32 * runs / sum(batch32), 1),
    }
