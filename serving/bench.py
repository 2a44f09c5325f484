"""Measure the local model server's own cost: start-up time and Predict latency vs in-process.

``python -m serving.bench [--model_base_path models/fashion] [--repeats 60] [--json out.json]``

1. start ``python -m serving`` on the model (``ModelServerProcess``) and time spawn -> AVAILABLE;
2. load the newest version in this process with ``tf.saved_model.load`` (the floor);
3. at batch 1 and batch 32, alternate blocks of in-process signature calls and gRPC Predict calls
   (same images, same outputs) so both see the same background load on a shared machine; report
   median and p90 in milliseconds and the ratio server / in-process of the medians. Blocks, not
   single calls: TensorFlow's thread pool keeps spinning for a moment after a call, and that
   would steal the cores from the other process's next call.

The in-process call includes ``tf.constant`` on the input and ``.numpy()`` on the outputs, the
conversions a caller pays anyway; the gRPC call includes encoding the request and decoding the
response with ``serving_api.tensors``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import grpc
import numpy as np

from contract import OUTPUT_PROBABILITIES, SIGNATURE_NAME
from serving.launcher import ModelServerProcess
from serving.versions import versions_on_disk
from serving_api import protos, tensors
from serving_api.memory import keep_large_buffers_on_heap

BLOCK = 5
"""Timed calls per block before switching between in-process and gRPC."""


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1e3, 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1e3, 2),
        "n": len(ordered),
    }


def measure(base_path: str, model_name: str, repeats: int, log_path: str) -> dict:
    """Run the measurement.

    Args:
        base_path: model base path with integer version folders.
        model_name: name to serve it under.
        repeats: timed calls per side at batch 1 (batch 32: a third, at least 10).
        log_path: the server's log file.

    Returns:
        ``{"startup_to_available_s", "version", "batch1": {...}, "batch32": {...}}``; each batch
        entry holds ``in_process`` and ``grpc`` summaries and ``ratio`` (gRPC / in-process median).
    """
    import tensorflow as tf

    version, folder = max(versions_on_disk(base_path).items())
    args = ["--model_name", model_name, "--model_base_path", base_path]
    with ModelServerProcess(args, log_path=log_path) as server:
        startup = server.startup_seconds
        loaded = tf.saved_model.load(folder)
        function = loaded.signatures[SIGNATURE_NAME]
        _, kwargs = function.structured_input_signature
        ((input_name, spec),) = kwargs.items()
        height, width = int(spec.shape[1]), int(spec.shape[2])
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(32, height, width, 3), dtype=np.uint8)
        options = [
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.http2.max_frame_size", 16777215),
        ]
        channel = grpc.insecure_channel(server.grpc_address, options=options)
        stub = protos.prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def local(batch: np.ndarray) -> dict[str, np.ndarray]:
            result = function(**{input_name: tf.constant(batch)})
            return {k: v.numpy() for k, v in result.items()}

        def remote(batch: np.ndarray) -> dict[str, np.ndarray]:
            request = protos.predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.inputs[input_name].CopyFrom(tensors.to_tensor_proto(batch))
            response = stub.Predict(request, timeout=120)
            return {k: tensors.to_ndarray(v) for k, v in response.outputs.items()}

        report: dict = {"startup_to_available_s": round(startup, 2), "version": version}
        for size, count in ((1, repeats), (32, max(10, repeats // 3))):
            batch = images[:size]
            np.testing.assert_allclose(
                local(batch)[OUTPUT_PROBABILITIES], remote(batch)[OUTPUT_PROBABILITIES], atol=1e-5
            )
            for _ in range(3):  # warm both paths
                local(batch)
                remote(batch)
            in_process: list[float] = []
            over_grpc: list[float] = []
            while len(in_process) < count:
                for run, samples in ((local, in_process), (remote, over_grpc)):
                    run(batch)  # untimed: lets the other process's pool go idle
                    for _ in range(BLOCK):
                        start = time.perf_counter()
                        run(batch)
                        samples.append(time.perf_counter() - start)
            local_summary, grpc_summary = _summary(in_process), _summary(over_grpc)
            report[f"batch{size}"] = {
                "in_process": local_summary,
                "grpc": grpc_summary,
                "ratio": round(grpc_summary["median_ms"] / local_summary["median_ms"], 3),
            }
        channel.close()
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints the report as JSON."""
    keep_large_buffers_on_heap()  # as the server does; applies to both sides measured
    parser = argparse.ArgumentParser(prog="python -m serving.bench", description=__doc__)
    parser.add_argument("--model_base_path", default="models/fashion")
    parser.add_argument("--model_name", default="fashion")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--log", default="logs/serving-bench.log")
    parser.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    report = measure(
        str(Path(args.model_base_path).resolve()), args.model_name, args.repeats, args.log
    )
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
