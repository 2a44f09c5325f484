"""Behaviour of the local ``python -m serving`` that needs process control or its own metrics:
server-side batching, graceful SIGTERM, start-up messages (nothing to serve, ports taken).

(The API contract shared with a real TF Serving is in test_serving_contract.py.)
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import ROOT
from google.protobuf import text_format
from prometheus_client.parser import text_string_to_metric_families
from support import tiny_models

from serving.launcher import ModelServerProcess, free_port
from serving_api import protos, tensors

BATCH = 4
"""max_batch_size of the batching server below."""


def _predict_request(images: np.ndarray, model: str = "fashion"):
    request = protos.predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["images"].CopyFrom(tensors.to_tensor_proto(images))
    return request


def _metrics(server: ModelServerProcess) -> dict[tuple, float]:
    """The server's Prometheus samples: (name, sorted label items) -> value."""
    with urllib.request.urlopen(
        server.rest_url + "/monitoring/prometheus/metrics", timeout=10
    ) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _key(name: str, **labels: str) -> tuple:
    return (name, tuple(sorted(labels.items())))


@pytest.fixture(scope="module")
def batching_server(tiny_model_base, tmp_path_factory):
    folder = tmp_path_factory.mktemp("batching")
    # A long timeout: a batch can only run early because it reached max_batch_size.
    (folder / "batching.config").write_text(
        f"max_batch_size {{ value: {BATCH} }}\nbatch_timeout_micros {{ value: 3000000 }}\n"
        "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 4 }\n"
    )
    args = [
        "--model_name",
        "fashion",
        "--model_base_path",
        str(tiny_model_base),
        "--enable_batching",
        "--batching_parameters_file",
        str(folder / "batching.config"),
        f"--monitoring_config_file={ROOT / 'serving' / 'monitoring.config'}",
    ]
    server = ModelServerProcess(args, rest=True, log_path=folder / "server.log")
    server.start()
    yield server
    server.stop()


def test_concurrent_calls_are_merged_into_one_model_run(batching_server):
    channel = grpc.insecure_channel(batching_server.grpc_address)
    stub = protos.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    before = _metrics(batching_server)
    batches = [tiny_models.images(1, seed=i) for i in range(BATCH)]
    calls = [stub.Predict.future(_predict_request(x), timeout=30) for x in batches]
    responses = [call.result() for call in calls]
    after = _metrics(batching_server)
    for images, response in zip(batches, responses, strict=True):
        assert response.model_spec.version.value == 2
        np.testing.assert_allclose(
            tensors.to_ndarray(response.outputs["probabilities"]),
            tiny_models.expected(images, 2),
            atol=2e-6,
        )
    runs = _key("serving_model_runs_total", model_name="fashion", version="2")
    requests = _key("serving_requests_total", model_name="fashion", api="predict", status="OK")
    rows = _key("serving_batch_size_sum", model_name="fashion")
    assert after[runs] - before.get(runs, 0) == 1
    assert after[requests] - before.get(requests, 0) == BATCH
    assert after[rows] - before.get(rows, 0) == BATCH
    channel.close()


def test_metrics_include_process_python_and_build_info(batching_server):
    from buildinfo import git_commit, version

    samples = _metrics(batching_server)
    assert samples[_key("process_resident_memory_bytes")] > 50e6  # TensorFlow is loaded
    assert samples[_key("process_open_fds")] > 0
    assert any(name == "python_info" for name, _ in samples)
    build = _key(
        "serving_build_info", version=version(), git_commit=git_commit(), model_name="fashion"
    )
    assert samples[build] == 1.0


def test_a_call_larger_than_max_batch_size_is_refused(batching_server):
    channel = grpc.insecure_channel(batching_server.grpc_address)
    stub = protos.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as exc:
        stub.Predict(_predict_request(tiny_models.images(BATCH + 1)), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details() == (
        f"Task size {BATCH + 1} is larger than maximum input batch size {BATCH}"
    )
    channel.close()


def test_sigterm_finishes_the_call_in_flight_then_exits_0(batching_server):
    channel = grpc.insecure_channel(batching_server.grpc_address)
    stub = protos.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    images = tiny_models.images(1, seed=42)
    call = stub.Predict.future(_predict_request(images), timeout=30)
    # The call waits in the batch queue (3 s timeout, batch not full): it is in flight.
    queued = _key("serving_batch_queue_rows", model_name="fashion")
    deadline = time.monotonic() + 10
    while _metrics(batching_server).get(queued) != 1.0:
        assert time.monotonic() < deadline, "the call never reached the batch queue"
        time.sleep(0.05)
    batching_server.terminate()
    response = call.result()
    np.testing.assert_allclose(
        tensors.to_ndarray(response.outputs["probabilities"]),
        tiny_models.expected(images, 2),
        atol=2e-6,
    )
    assert batching_server.process.wait(timeout=60) == 0
    channel.close()


@pytest.mark.parametrize(("model", "code"), [("fashion", 0), ("nope", 1)])
def test_container_health_check_script_against_the_rest_api(tiny_server, model, code):
    script = ROOT / "serving" / "healthcheck.sh"
    port = tiny_server.rest_url.rsplit(":", 1)[1]
    result = subprocess.run(
        ["bash", str(script), model, port], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == code, result.stderr


def test_reload_config_rpc_replaces_the_served_models(tiny_server, tiny_model_base):
    channel = grpc.insecure_channel(tiny_server.grpc_address)
    models = protos.model_service_pb2_grpc.ModelServiceStub(channel)
    stub = protos.prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def reload(*entries: str) -> int:
        request = protos.model_management_pb2.ReloadConfigRequest()
        for entry in entries:
            config = request.config.model_config_list.config.add()
            text_format.Parse(entry, config)
        return models.HandleReloadConfigRequest(request, timeout=60).status.error_code

    fashion = f'name: "fashion" base_path: "{tiny_model_base}"'
    pinned = (
        f'name: "pinned" base_path: "{tiny_model_base}" '
        "model_version_policy { specific { versions: 1 } }"
    )
    try:
        assert reload(fashion, pinned) == 0
        images = tiny_models.images(2, seed=8)
        response = stub.Predict(_predict_request(images, model="pinned"), timeout=10)
        assert response.model_spec.version.value == 1
        np.testing.assert_allclose(
            tensors.to_ndarray(response.outputs["probabilities"]),
            tiny_models.expected(images, 1),
            atol=2e-6,
        )
        with pytest.raises(grpc.RpcError) as exc:
            reload('name: "bad" base_path: "/x" model_platform: "onnx"')
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        assert reload(fashion) == 0
    with pytest.raises(grpc.RpcError) as exc:
        stub.Predict(_predict_request(images, model="pinned"), timeout=10)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    channel.close()


def test_nothing_to_serve_is_a_warning_and_the_log_names_the_bound_address(tmp_path):
    base = tmp_path / "empty"
    base.mkdir()
    log = tmp_path / "server.log"
    with ModelServerProcess(
        ["--model_name=x", f"--model_base_path={base}"],
        rest=True,
        log_path=log,
        wait_for_model=False,
    ) as server:
        rest_port = server.rest_url.rsplit(":", 1)[1]
        text = log.read_text()
    assert (
        f"WARNING serving.manager: No versions of servable x found under base path {base}" in text
    )
    assert f"Running gRPC ModelServer at 127.0.0.1:{server.port} ..." in text
    assert f"Exporting HTTP/REST API at:127.0.0.1:{rest_port} ..." in text


@pytest.mark.parametrize("which", ["gRPC", "REST"])
def test_a_taken_port_is_one_error_line_and_exit_status_1(tmp_path, which):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        grpc_port, rest_port = (port, free_port()) if which == "gRPC" else (free_port(), port)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "serving",
                f"--port={grpc_port}",
                f"--rest_api_port={rest_port}",
                "--bind_address=127.0.0.1",
                f"--model_base_path={tmp_path}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.endswith(
        f"ERROR serving: Failed to start server: cannot bind {which} port "
        f"{port} on 127.0.0.1: Address already in use"
    ), result.stderr


def test_the_serving_image_entrypoint_flags_start_a_server_on_its_configs(
    tiny_model_base, tmp_path
):
    """Dockerfile.serving's ENTRYPOINT, run: its flags and the config files it copies, with the
    container paths mapped to this checkout, start a server that serves the model AVAILABLE."""
    import re

    text = (ROOT / "Dockerfile.serving").read_text()
    entry = re.search(r"^ENTRYPOINT (\[.*?\])$", text.replace("\\\n", ""), re.M | re.S)
    assert entry, "no exec-form ENTRYPOINT"
    program, *flags = json.loads(entry.group(1))
    assert program == "tensorflow_model_server"
    ports = {f.split("=")[0]: f.split("=")[1] for f in flags if f.startswith(("--port=", "--rest"))}
    assert ports == {"--port": "8500", "--rest_api_port": "8501"}
    copied = re.search(r"^COPY (.*) /etc/serving/$", text, re.M).group(1).split()
    etc = tmp_path / "etc"
    etc.mkdir()
    for source in copied:
        shutil.copy(ROOT / source, etc / Path(source).name)
    models = etc / "models.config"
    models.write_text(models.read_text().replace('"/models/fashion"', f'"{tiny_model_base}"'))
    args = [
        f.replace("/etc/serving/", f"{etc}/")
        for f in flags
        if not f.startswith(("--port=", "--rest_api_port="))
    ]
    assert {a.split("=")[0] for a in args} >= {
        "--model_config_file",
        "--enable_batching",
        "--batching_parameters_file",
        "--monitoring_config_file",
        "--enable_model_warmup",
    }
    with ModelServerProcess(
        args, rest=True, wait_for_model="fashion", log_path=tmp_path / "server.log"
    ) as server:
        with urllib.request.urlopen(server.rest_url + "/v1/models/fashion", timeout=10) as r:
            status = json.load(r)["model_version_status"]
        metrics = _metrics(server)
    assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE")]
    assert any(name == "serving_build_info" for name, _ in metrics)  # monitoring.config applied
