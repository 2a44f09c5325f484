"""`make serve` on chosen ports: a second stack can run beside a first one.

The real Makefile target is run (``make -o install`` skips re-installing the shared venv) with
``GATEWAY_PORT``, ``GRPC_PORT`` and ``REST_PORT`` set to free ports; the committed model is served.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest
import requests
from conftest import ROOT

import devtools.local as local
import serving.versions
from devtools.local import serve_ports
from serving.launcher import free_port
from serving_api import protos

pytestmark = pytest.mark.e2e


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 120.0) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"make serve exited with {process.returncode}"
        try:
            response = requests.get(url, timeout=2)
        except requests.ConnectionError:
            time.sleep(0.2)
            continue
        if response.status_code == 200:
            return response
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s")


def test_make_serve_listens_on_the_three_ports_from_the_environment(tmp_path):
    ports = {"GATEWAY_PORT": free_port(), "GRPC_PORT": free_port(), "REST_PORT": free_port()}
    assert len(set(ports.values())) == 3
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}}
    process = subprocess.Popen(
        ["make", "-o", "install", "serve", f"VENV={sys.prefix}"],
        cwd=ROOT,
        env=env,
        stdout=(tmp_path / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: make, python and both servers stop
    )
    try:
        health = _wait_for(f"http://127.0.0.1:{ports['GATEWAY_PORT']}/health", process)
        assert health.json()["status"] == "ok"
        rest = _wait_for(f"http://127.0.0.1:{ports['REST_PORT']}/v1/models/fashion", process)
        assert rest.json()["model_version_status"][0]["state"] == "AVAILABLE"
        with grpc.insecure_channel(f"127.0.0.1:{ports['GRPC_PORT']}") as channel:
            stub = protos.model_service_pb2_grpc.ModelServiceStub(channel)
            request = protos.get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = "fashion"
            status = stub.GetModelStatus(request, timeout=10)
        assert status.model_version_status[0].state == (
            protos.get_model_status_pb2.ModelVersionStatus.AVAILABLE
        )
        photo = next((ROOT.parent / "shared/data/clothing-dataset-small/test").rglob("*.jpg"))
        answer = requests.post(
            f"http://127.0.0.1:{ports['GATEWAY_PORT']}/predict",
            files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["prediction"]["label"]
        # make serve tells the user where the gateway is; the gateway may answer a moment before
        # the launcher's own readiness poll prints that line
        banner = f"gateway healthy on http://127.0.0.1:{ports['GATEWAY_PORT']}"
        deadline = time.monotonic() + 30
        while banner not in (tmp_path / "serve.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # make dies of the SIGTERM at once; the launcher prints its last line once both are down
    stopped = "[make serve] stopped (SIGTERM): model server and gateway shut down"
    deadline = time.monotonic() + 60
    while stopped not in (tmp_path / "serve.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = (tmp_path / "serve.log").read_text()
    assert f"gateway healthy on http://127.0.0.1:{ports['GATEWAY_PORT']}" in log
    assert f"model server ready on 127.0.0.1:{ports['GRPC_PORT']}" in log
    assert stopped in log
    # a second stack's logs are its own, named by its ports
    serving_log, gateway_log = local.log_paths(ROOT / "logs", ports)
    try:
        assert f"log {serving_log}" in log and f"log {gateway_log}" in log
        assert serving_log.stat().st_size > 0 and gateway_log.stat().st_size > 0
    finally:
        serving_log.unlink(missing_ok=True)
        gateway_log.unlink(missing_ok=True)


@pytest.mark.unit
def test_a_stack_on_moved_ports_writes_its_own_logs(tmp_path):
    default = {"GATEWAY_PORT": 8080, "GRPC_PORT": 8500, "REST_PORT": 8501}
    plain = (tmp_path / "serving.log", tmp_path / "gateway.log")
    assert local.log_paths(tmp_path, None) == plain
    assert local.log_paths(tmp_path, default) == plain
    moved = {"GATEWAY_PORT": 9080, "GRPC_PORT": 9500, "REST_PORT": 9501}
    assert local.log_paths(tmp_path, moved) == (
        tmp_path / "serving-9500.log",
        tmp_path / "gateway-9080.log",
    )


@pytest.mark.unit
def test_serve_ports_defaults_and_refusals():
    assert serve_ports({}) == {"GATEWAY_PORT": 8080, "GRPC_PORT": 8500, "REST_PORT": 8501}
    assert serve_ports({"GATEWAY_PORT": "9080", "GRPC_PORT": ""})["GATEWAY_PORT"] == 9080
    with pytest.raises(ValueError, match="GRPC_PORT"):
        serve_ports({"GRPC_PORT": "http"})
    with pytest.raises(ValueError, match="differ"):
        serve_ports({"GATEWAY_PORT": "8500"})


# The launcher with start_stack replaced: the signal handling is tested without a model server.
STUBBED_SERVE = """
import sys

import devtools.local as local
import serving.versions


class Server:
    returncode = None


class Gateway:
    url = "http://127.0.0.1:1"
    returncode = None


def start_stack(stack, logs, *, ports, tag):
    assert tag == local.SERVE_TAG
    stack.callback(print, "both processes stopped", flush=True)
    return Server(), Gateway()


serving.versions.versions_on_disk = lambda base: {1: base}  # whatever models/ holds now
local.start_stack = start_stack
local.check_ports_free = lambda ports: None  # nothing binds them here
sys.exit(local.main(["--serve"]))
"""


@pytest.mark.unit
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_prints_a_stop_line_and_exits_0_on_sigint_and_sigterm(stop):
    process = subprocess.Popen(
        [sys.executable, "-c", STUBBED_SERVE],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = process.stdout.readline()
        assert banner.startswith("[make serve] serving; try: curl"), banner + process.stderr.read()
        process.send_signal(stop)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert err == ""
    assert out.splitlines() == [
        f"[make serve] stopping ({stop.name}): shutting down the gateway and the model server",
        "both processes stopped",
        f"[make serve] stopped ({stop.name}): model server and gateway shut down",
    ]


# The same, with a gateway that dies (SIGKILL) while serving.
DYING_GATEWAY_SERVE = STUBBED_SERVE.replace(
    """    url = "http://127.0.0.1:1"
    returncode = None
""",
    """    url = "http://127.0.0.1:1"
    polls = 0

    @property
    def returncode(self):
        Gateway.polls += 1
        return -9 if Gateway.polls >= 2 else None
""",
)


@pytest.mark.unit
def test_serve_stops_the_pair_and_exits_1_when_one_process_dies():
    result = subprocess.run(
        [sys.executable, "-c", DYING_GATEWAY_SERVE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[make serve] serving; try: curl")
    assert lines[1] == (
        f"[make serve] the gateway exited (signal SIGKILL): stopping the other one; "
        f"see {ROOT / 'logs'}"
    )
    assert lines[2:] == [
        "both processes stopped",
        "[make serve] stopped: the gateway exited (signal SIGKILL)",
    ]


@pytest.mark.unit
@pytest.mark.parametrize("taken_name", ["GATEWAY_PORT", "GRPC_PORT"])
def test_serve_refuses_a_port_another_process_holds_before_starting(
    monkeypatch, capsys, taken_name
):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(serving.versions, "versions_on_disk", lambda base: {1: base})
    monkeypatch.setattr(local, "start_stack", lambda *a, **k: pytest.fail("started anyway"))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        for name in ("GATEWAY_PORT", "GRPC_PORT", "REST_PORT"):
            monkeypatch.setenv(name, str(taken if name == taken_name else free_port()))
        assert local.main(["--serve"]) == 78
    assert capsys.readouterr().out.splitlines() == [
        f"[make serve] {taken_name}={taken} is in use (cannot bind TCP port {taken} on "
        f"127.0.0.1: Address already in use): stop what holds it or set {taken_name} to a "
        "free port"
    ]


@pytest.mark.unit
def test_each_call_tags_its_lines_with_its_own_target(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # main() moves to ROOT; the test's directory is restored after
    monkeypatch.setenv("GRPC_PORT", "http")
    monkeypatch.setattr(serving.versions, "versions_on_disk", lambda base: {1: base})
    assert local.main(["--serve"]) == 78
    # a later run in the same process is not tagged by the serve before it
    monkeypatch.setattr(serving.versions, "versions_on_disk", lambda base: {})
    assert local.main([]) == 78
    assert local.main(["--serve"]) == 78
    assert capsys.readouterr().out.splitlines() == [
        "[make serve] GRPC_PORT='http' is not a TCP port (1..65535)",
        "[make run] no model version under models/fashion/: run `make train export` first",
        "[make serve] no model version under models/fashion/: run `make train export` first",
    ]
