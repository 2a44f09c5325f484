"""The gateway over several model-server replicas, its probes, its graceful stop, KServe's args.

Real parts throughout: local model servers (``python -m serving``) on the tiny models, the
gateway under gunicorn as in its image. The one fault injected is a stopped (SIGSTOP) or killed
(SIGKILL) model server.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import ROOT
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from gateway import kserve
from gateway.serving_client import channel_options
from gateway.settings import Settings, SettingsError
from serving.flags import channel_arguments, parse
from serving.launcher import ModelServerProcess, free_port
from serving_api import protos

MONITORING = ROOT / "serving" / "monitoring.config"
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gateway" / "gunicorn.conf.py")]


def _photo(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _http(method: str, url: str, body: bytes | None = None, timeout: float = 30.0):
    """(status, parsed JSON body) of one request; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "image/png")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class Gunicorn:
    """The gateway as its image runs it (gunicorn + gateway/gunicorn.conf.py) on a free port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "GATEWAY_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_WORKERS": "1",
            "PYTHONPATH": str(ROOT),
            **env,
        }
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            GUNICORN, env=full_env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, path: str = "/health", timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"gateway exited with {self.process.returncode}"
            try:
                if _http("GET", self.url + path, timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gateway not ready at {self.url}{path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _server(base: Path, log: Path, *extra: str) -> ModelServerProcess:
    return ModelServerProcess(
        [
            "--model_name=fashion",
            f"--model_base_path={base}",
            f"--monitoring_config_file={MONITORING}",
            *extra,
        ],
        rest=True,
        log_path=log,
    )


def _predict_count(server: ModelServerProcess) -> int:
    """Successful Predict calls the server counted itself (its Prometheus endpoint)."""
    with urllib.request.urlopen(server.rest_url + "/monitoring/prometheus/metrics") as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "serving_requests_total"
                and sample.labels.get("api") == "predict"
                and sample.labels.get("status") == "OK"
            ):
                total += sample.value
    return int(total)


# ---- settings and channel ------------------------------------------------------------------


def test_lb_policy_setting_and_its_service_config():
    assert Settings().lb_policy == "pick_first"
    settings = Settings.from_env(
        {
            "SERVING_GRPC_ADDRESS": "ipv4:10.0.0.1:8500,10.0.0.2:8500",
            "SERVING_LB_POLICY": "round_robin",
        }
    )
    assert settings.grpc_address == "ipv4:10.0.0.1:8500,10.0.0.2:8500"
    options = dict(channel_options(settings))
    config = json.loads(options["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert options["grpc.enable_retries"] == 1
    with pytest.raises(
        SettingsError,
        match="SERVING_LB_POLICY must be one of pick_first, round_robin, got 'random'",
    ):
        Settings.from_env({"SERVING_LB_POLICY": "random"})


# ---- the local server's --grpc_channel_arguments -------------------------------------------


def test_grpc_channel_arguments_parse_like_tensorflow_model_server():
    assert channel_arguments("") == []
    assert channel_arguments(
        "grpc.max_connection_age_ms=30000,grpc.primary_user_agent=fashion,x=2147483648"
    ) == [
        ("grpc.max_connection_age_ms", 30000),
        ("grpc.primary_user_agent", "fashion"),
        ("x", "2147483648"),  # not a 32-bit integer: passed as a string, as TF Serving does
    ]
    assert parse(
        ["--model_base_path=m", "--grpc_channel_arguments=grpc.max_connection_age_ms=5"]
    ).grpc_channel_arguments == ("grpc.max_connection_age_ms=5")
    with pytest.raises(ValueError, match="entry 'grpc.max_connection_age_ms' is not key=value"):
        channel_arguments("grpc.max_connection_age_ms")


def test_bad_grpc_channel_arguments_stop_the_server_with_usage_error(tiny_model_base):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving",
            f"--model_base_path={tiny_model_base}",
            "--grpc_channel_arguments=oops",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--grpc_channel_arguments entry 'oops' is not key=value" in result.stderr


def test_max_connection_age_recycles_client_connections(tiny_model_base, tmp_path):
    """With grpc.max_connection_age_ms the server closes each connection (GOAWAY) after that
    age: the client channel drops back to IDLE and reconnects, so a re-resolved name (a headless
    Service) reaches new replicas."""
    with _server(
        tiny_model_base,
        tmp_path / "serving.log",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=500,grpc.max_connection_age_grace_ms=500",
    ) as server:
        states: list[grpc.ChannelConnectivity] = []
        channel = grpc.insecure_channel(server.grpc_address)
        channel.subscribe(states.append, try_to_connect=False)
        stub = protos.model_service_pb2_grpc.ModelServiceStub(channel)
        request = protos.get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "fashion"
        stub.GetModelStatus(request, timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and grpc.ChannelConnectivity.IDLE not in states[1:]:
            time.sleep(0.05)
        # READY first, then the server's GOAWAY sends the channel back to IDLE.
        ready = states.index(grpc.ChannelConnectivity.READY)
        assert grpc.ChannelConnectivity.IDLE in states[ready:], states
        assert stub.GetModelStatus(request, timeout=10).model_version_status  # reconnects
        channel.close()


# ---- probes, graceful stop, KServe -----------------------------------------------------------


def test_livez_is_200_while_serving_is_down_and_health_is_503(tmp_path):
    closed = f"127.0.0.1:{free_port()}"
    gateway = Gunicorn({"SERVING_GRPC_ADDRESS": closed, "SERVING_RETRIES": "0"}, tmp_path / "g.log")
    try:
        gateway.wait_ready("/livez")
        assert _http("GET", gateway.url + "/livez") == (200, {"status": "alive"})
        status, body = _http("GET", gateway.url + "/health")
        assert (status, body["error"]["code"]) == (503, "serving_unavailable")
    finally:
        gateway.stop()


@pytest.mark.e2e
def test_sigterm_finishes_the_request_in_flight_serves_no_new_ones_and_exits_0(
    tiny_model_base, tmp_path
):
    with _server(tiny_model_base, tmp_path / "serving.log") as server:
        gateway = Gunicorn(
            {"SERVING_GRPC_ADDRESS": server.grpc_address, "SERVING_DEADLINE_SECONDS": "30"},
            tmp_path / "gateway.log",
        )
        try:
            gateway.wait_ready()
            answers: list[tuple[int, dict]] = []
            os.kill(server.process.pid, signal.SIGSTOP)  # the request will wait on serving
            try:
                worker = threading.Thread(
                    target=lambda: answers.append(
                        _http("POST", gateway.url + "/predict", _photo(), timeout=60)
                    )
                )
                worker.start()
                time.sleep(1.0)  # the request is in the gateway, waiting for its Predict
                gateway.process.send_signal(signal.SIGTERM)
                time.sleep(1.0)
                # gunicorn no longer accepts: a new connection is never served (the kernel's
                # backlog holds it until the worker exits, then resets it).
                late: list[object] = []

                def late_request() -> None:
                    try:
                        late.append(_http("GET", gateway.url + "/livez", timeout=60))
                    except OSError as exc:  # URLError, ConnectionResetError, RemoteDisconnected
                        late.append(exc)

                latecomer = threading.Thread(target=late_request)
                latecomer.start()
                time.sleep(1.0)
                assert gateway.process.poll() is None  # still finishing the request in flight
                assert not late  # and not answering the new one
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            worker.join(30)
            assert len(answers) == 1
            status, body = answers[0]
            assert status == 200
            assert body["model"] == {"name": "fashion", "version": 2}
            assert gateway.process.wait(30) == 0
            latecomer.join(30)
            assert len(late) == 1 and isinstance(late[0], OSError), late
        finally:
            gateway.stop()


def test_kserve_arguments_map_onto_settings():
    env = kserve.environment(
        [
            "--model_name",
            "fashion",
            "--predictor_host",
            "fashion-predictor.ml",
            "--http_port",
            "8080",
            "--workers",
            "3",
        ],
        {"SERVING_LB_POLICY": "round_robin"},
    )
    assert env == {
        "SERVING_LB_POLICY": "round_robin",
        "MODEL_NAME": "fashion",
        "SERVING_GRPC_ADDRESS": "fashion-predictor.ml:80",
        "GATEWAY_BIND": "0.0.0.0:8080",
        "GUNICORN_WORKERS": "3",
    }
    local = kserve.environment(
        ["--predictor_host", "10.0.0.7:8500", "--http_port", "9000"],
        {"GATEWAY_BIND": "127.0.0.1:8080"},
    )
    assert (local["SERVING_GRPC_ADDRESS"], local["GATEWAY_BIND"]) == (
        "10.0.0.7:8500",
        "127.0.0.1:9000",
    )
    with pytest.raises(SystemExit) as exc:
        kserve.environment(["--predictor", "x"], {})
    assert exc.value.code == 2


# ---- two replicas ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_round_robin_spreads_over_two_servers_and_survives_sigkill_of_one(
    tiny_model_base, tmp_path
):
    with (
        _server(tiny_model_base, tmp_path / "a.log") as server_a,
        _server(tiny_model_base, tmp_path / "b.log") as server_b,
    ):
        target = f"ipv4:{server_a.grpc_address},{server_b.grpc_address}"
        gateway = Gunicorn(
            # CACHE_SIZE=0: the same photo is sent every time and must reach a model server
            {"SERVING_GRPC_ADDRESS": target, "SERVING_LB_POLICY": "round_robin", "CACHE_SIZE": "0"},
            tmp_path / "gateway.log",
        )
        try:
            gateway.wait_ready()
            before = {"a": _predict_count(server_a), "b": _predict_count(server_b)}
            photo = _photo()
            for _ in range(100):
                status, body = _http("POST", gateway.url + "/predict", photo)
                assert status == 200, body
            served = {
                "a": _predict_count(server_a) - before["a"],
                "b": _predict_count(server_b) - before["b"],
            }
            assert served["a"] + served["b"] == 100
            assert served["a"] >= 30 and served["b"] >= 30, served

            # Continuous load; one replica is killed half-way. No request may fail.
            statuses: list[int] = []
            health: list[int] = []
            stop = threading.Event()

            def load() -> None:
                while not stop.is_set():
                    statuses.append(_http("POST", gateway.url + "/predict", photo)[0])

            def probe() -> None:
                while not stop.is_set():
                    health.append(_http("GET", gateway.url + "/health")[0])
                    time.sleep(0.05)

            threads = [threading.Thread(target=load) for _ in range(2)]
            threads.append(threading.Thread(target=probe))
            for thread in threads:
                thread.start()
            time.sleep(1.5)
            served_a_at_kill = _predict_count(server_a)
            server_b.process.kill()  # SIGKILL
            server_b.process.wait()
            killed_at = len(statuses)
            time.sleep(3.0)
            stop.set()
            for thread in threads:
                thread.join(30)
            assert killed_at > 10 and len(statuses) > killed_at + 20, (killed_at, len(statuses))
            assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
            assert health and set(health) == {200}, {s: health.count(s) for s in set(health)}
            # After the kill, server A answers all of them.
            assert _predict_count(server_a) - served_a_at_kill >= len(statuses) - killed_at - 2
        finally:
            gateway.stop()
