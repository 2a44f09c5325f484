"""Contract tests of the model server: what the gateway and operators can observe.

Runs against a local ``python -m serving`` it starts, or, when ``SERVING_GRPC_ADDRESS`` is set,
against a real TF Serving. For a real server, prepare a models folder first and start the server
on it with short poll intervals::

    python tests/test_serving_contract.py prepare /tmp/contract     # tiny models + models.config
    docker run --rm -p 8500:8500 -p 8501:8501 -v /tmp/contract:/models tensorflow/serving:2.20.0 \\
        --model_config_file=/models/models.config --model_config_file_poll_wait_seconds=1 \\
        --file_system_poll_wait_seconds=1 --allow_version_labels_for_unavailable_models
    SERVING_GRPC_ADDRESS=localhost:8500 SERVING_REST_URL=http://localhost:8501 \\
    SERVING_MODELS_DIR=/tmp/contract SERVING_MODELS_DIR_IN_SERVER=/models \\
        python -m pytest tests/test_serving_contract.py

Models (tiny SavedModels from tests/support/tiny_models.py; outputs computable in NumPy):
- ``fashion``: versions 1 and 2 on disk, policy latest 1 -> serves 2. Read-only tests.
- ``picker``: versions 1, 2, 3 on disk, policy specific {1, 3}, labels stable=1, canary=3.
- ``swap``, ``half``, ``rollback``, ``corrupt``: one model per version-lifecycle test at the end
  (publish under load, a half-written version, a rollback, a corrupt version), so each passes
  alone or in any order.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support import tiny_models  # noqa: E402

from serving_api import protos, tensors  # noqa: E402

EXTERNAL = bool(os.environ.get("SERVING_GRPC_ADDRESS"))
POLL_DEADLINE = 120.0 if EXTERNAL else 60.0
"""Seconds a version change may take to show (TF Serving retries failed loads only every minute)."""

AVAILABLE = protos.get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = protos.get_model_status_pb2.ModelVersionStatus.END

# model -> (versions exported on disk, policy text, labels)
MODELS = {
    "fashion": ([1, 2], "latest { num_versions: 1 }", {}),
    "picker": ([1, 2, 3], "specific { versions: 1 versions: 3 }", {"stable": 1, "canary": 3}),
    # One model per version-lifecycle test, each starting from the versions it needs, so those
    # tests pass alone and in any order.
    "swap": ([1], "latest { num_versions: 1 }", {}),
    "half": ([2], "latest { num_versions: 1 }", {}),
    "rollback": ([2, 3], "latest { num_versions: 1 }", {}),
    "corrupt": ([3], "latest { num_versions: 1 }", {}),
}
PRISTINE = "pristine"
"""Folder (not a model) holding complete swap versions 2 and 3 to publish during the tests."""


def write_config(models_dir: Path, server_dir: str, policies: dict[str, str] | None = None) -> None:
    """Write ``models.config`` atomically (temp file + rename) so a poll never reads half a file."""
    entries = []
    for name, (_versions, policy, labels) in MODELS.items():
        policy = (policies or {}).get(name, policy)
        label_text = "".join(
            f' version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items()
        )
        entries.append(
            f'config {{ name: "{name}" base_path: "{server_dir}/{name}" '
            f'model_platform: "tensorflow" model_version_policy {{ {policy} }}'
            f"{label_text} }}"
        )
    text = "model_config_list {\n  " + "\n  ".join(entries) + "\n}\n"
    tmp = models_dir / "models.config.tmp"
    tmp.write_text(text)
    os.replace(tmp, models_dir / "models.config")


def prepare(models_dir: Path, server_dir: str) -> None:
    """Export every model's versions, the pristine swap versions, and the config."""
    models_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(models_dir / name, versions) for name, (versions, _p, _l) in MODELS.items()]
    tiny_models.export_many_in_subprocess([*jobs, (models_dir / PRISTINE, [2, 3])], warmup=True)
    write_config(models_dir, server_dir)


class Target:
    """The server under test: addresses, the host folder it serves, and its path for that folder."""

    def __init__(self, grpc_address: str, rest_url: str, models_dir: Path, server_dir: str):
        self.grpc_address = grpc_address
        self.rest_url = rest_url
        self.models_dir = models_dir
        self.server_dir = server_dir
        self.channel = grpc.insecure_channel(
            grpc_address, options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        self.predict_stub = protos.prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_stub = protos.model_service_pb2_grpc.ModelServiceStub(self.channel)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    if EXTERNAL:
        models_dir = Path(os.environ["SERVING_MODELS_DIR"])
        server_dir = os.environ.get("SERVING_MODELS_DIR_IN_SERVER", "/models")
        assert (models_dir / "models.config").exists(), "run `prepare` first (module docstring)"
        write_config(models_dir, server_dir)
        yield Target(
            os.environ["SERVING_GRPC_ADDRESS"],
            os.environ["SERVING_REST_URL"],
            models_dir,
            server_dir,
        )
        return
    from serving.launcher import ModelServerProcess

    models_dir = tmp_path_factory.mktemp("contract")
    prepare(models_dir, str(models_dir))
    args = [
        "--model_config_file",
        str(models_dir / "models.config"),
        "--model_config_file_poll_wait_seconds=1",
        "--file_system_poll_wait_seconds",
        "1",
    ]
    with ModelServerProcess(
        args, rest=True, wait_for_model="swap", log_path=models_dir / "server.log"
    ) as server:
        target = Target(server.grpc_address, server.rest_url, models_dir, str(models_dir))
        yield target
        target.channel.close()


# ------------------------------------------------------------------------------------- helpers
def predict_request(
    model: str,
    images: np.ndarray | None = None,
    *,
    version: int | None = None,
    label: str | None = None,
    signature: str = "",
    output_filter=(),
):
    request = protos.predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.model_spec.signature_name = signature
    if images is not None:
        request.inputs["images"].CopyFrom(tensors.to_tensor_proto(images))
    request.output_filter.extend(output_filter)
    return request


def outputs(response) -> dict[str, np.ndarray]:
    return {k: tensors.to_ndarray(v) for k, v in response.outputs.items()}


def assert_answer(response, images: np.ndarray, model: str, version: int) -> None:
    """Exact outputs of tiny `version`, labelled by that version."""
    assert response.model_spec.name == model
    assert response.model_spec.version.value == version
    assert response.model_spec.signature_name == "serving_default"
    out = outputs(response)
    np.testing.assert_allclose(
        out["probabilities"], tiny_models.expected(images, version), rtol=0, atol=2e-6
    )
    assert out["classes"].shape == (len(images), 3)
    assert [[c.decode() for c in row] for row in out["classes"]] == [
        tiny_models.labels_for(version)
    ] * len(images)


def status(target: Target, model: str, version: int | None = None) -> dict[int, tuple[int, str]]:
    request = protos.get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    response = target.model_stub.GetModelStatus(request, timeout=10)
    return {s.version: (s.state, s.status.error_message) for s in response.model_version_status}


def wait_for(predicate, timeout: float = POLL_DEADLINE, what: str = "condition"):
    """Poll `predicate` every 0.2 s until it returns a truthy value; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


def rest_get(target: Target, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(target.rest_url + path, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as exc:
        call(request, timeout=10)
    return exc.value


# ------------------------------------------------------------------------------------- predict
def test_predict_latest_gives_exact_outputs_of_the_served_version(target):
    images = tiny_models.images(5, seed=1)
    response = target.predict_stub.Predict(predict_request("fashion", images), timeout=10)
    assert_answer(response, images, "fashion", 2)
    assert response.outputs["probabilities"].dtype == protos.types_pb2.DT_FLOAT
    assert response.outputs["classes"].dtype == protos.types_pb2.DT_STRING


def test_output_filter_returns_only_the_named_outputs(target):
    images = tiny_models.images(2, seed=2)
    response = target.predict_stub.Predict(
        predict_request("fashion", images, output_filter=["probabilities"]), timeout=10
    )
    assert set(response.outputs) == {"probabilities"}
    np.testing.assert_allclose(
        outputs(response)["probabilities"], tiny_models.expected(images, 2), atol=2e-6
    )


def test_named_signature_and_batch_of_one(target):
    images = tiny_models.images(1, seed=3)
    response = target.predict_stub.Predict(
        predict_request("fashion", images, signature="serving_default"), timeout=10
    )
    assert_answer(response, images, "fashion", 2)


@pytest.mark.parametrize(
    ("spec", "version"),
    [
        ({}, 3),
        ({"version": 1}, 1),
        ({"version": 3}, 3),
        ({"label": "stable"}, 1),
        ({"label": "canary"}, 3),
    ],
)
def test_version_picking_latest_specific_and_label(target, spec, version):
    images = tiny_models.images(3, seed=4)
    response = target.predict_stub.Predict(predict_request("picker", images, **spec), timeout=10)
    assert_answer(response, images, "picker", version)


# ------------------------------------------------------------------------------------- errors
IMAGES = tiny_models.images(2, seed=5)


def _renamed_input():
    request = predict_request("fashion")
    request.inputs["pixels"].CopyFrom(tensors.to_tensor_proto(IMAGES))
    return request


def _no_spec():
    request = predict_request("fashion", IMAGES)
    request.ClearField("model_spec")
    return request


ERROR_CASES = {
    "unknown model": (predict_request("nope", IMAGES), grpc.StatusCode.NOT_FOUND, "nope"),
    "unknown version": (
        predict_request("fashion", IMAGES, version=7),
        grpc.StatusCode.NOT_FOUND,
        "7",
    ),
    "version on disk but not served": (
        predict_request("picker", IMAGES, version=2),
        grpc.StatusCode.NOT_FOUND,
        "2",
    ),
    "unknown label": (
        predict_request("picker", IMAGES, label="beta"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label",
    ),
    "missing model spec": (_no_spec(), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec"),
    "unknown signature": (
        predict_request("fashion", IMAGES, signature="classify"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "classify",
    ),
    "wrong input name": (_renamed_input(), grpc.StatusCode.INVALID_ARGUMENT, "images"),
    "missing input": (predict_request("fashion"), grpc.StatusCode.INVALID_ARGUMENT, "images"),
    "wrong dtype": (
        predict_request("fashion", IMAGES.astype(np.float32)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "uint8",
    ),
    "wrong shape": (
        predict_request("fashion", IMAGES[:, :, :4]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "",
    ),
    "unknown output": (
        predict_request("fashion", IMAGES, output_filter=["logits"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "logits",
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_predict_errors_have_tf_serving_status_codes(target, case):
    request, code, text = ERROR_CASES[case]
    error = rpc_error(target.predict_stub.Predict, request)
    assert error.code() == code
    assert text.lower() in error.details().lower()


def test_wrong_shape_message_names_what_the_signature_expects(target):
    error = rpc_error(target.predict_stub.Predict, ERROR_CASES["wrong shape"][0])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    if not EXTERNAL:  # TF Serving's text comes from the TensorFlow kernel; the code is the contract
        assert error.details() == (
            "input 'images' has shape [2,8,4,3] but signature "
            "'serving_default' expects DT_UINT8 [-1,8,8,3] (-1 = any size)"
        )


# ------------------------------------------------------------------------------------- metadata
def metadata_request(model: str, fields=("signature_def",), version: int | None = None):
    request = protos.get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    return request


def test_metadata_returns_the_signature_def_map(target):
    response = target.predict_stub.GetModelMetadata(metadata_request("fashion"), timeout=10)
    assert response.model_spec.name == "fashion"
    assert response.model_spec.version.value == 2
    assert set(response.metadata) == {"signature_def"}
    signature_map = protos.get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    signature = signature_map.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert set(signature.inputs) == {"images"}
    assert set(signature.outputs) == {"probabilities", "classes"}

    def describe(info):
        return info.dtype, [d.size for d in info.tensor_shape.dim]

    assert describe(signature.inputs["images"]) == (protos.types_pb2.DT_UINT8, [-1, 8, 8, 3])
    assert describe(signature.outputs["probabilities"]) == (protos.types_pb2.DT_FLOAT, [-1, 3])
    assert describe(signature.outputs["classes"]) == (protos.types_pb2.DT_STRING, [-1, 3])


def test_metadata_of_a_specific_version(target):
    response = target.predict_stub.GetModelMetadata(
        metadata_request("picker", version=1), timeout=10
    )
    assert response.model_spec.version.value == 1


@pytest.mark.parametrize(
    ("request_factory", "code", "text"),
    [
        (
            lambda: metadata_request("fashion", fields=()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "must specify at least one metadata_field",
        ),
        (
            lambda: metadata_request("fashion", fields=("labels",)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Metadata field labels is not supported",
        ),
        (lambda: metadata_request("nope"), grpc.StatusCode.NOT_FOUND, "nope"),
        (
            lambda: protos.get_model_metadata_pb2.GetModelMetadataRequest(
                metadata_field=["signature_def"]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ModelSpec",
        ),
    ],
)
def test_metadata_errors(target, request_factory, code, text):
    error = rpc_error(target.predict_stub.GetModelMetadata, request_factory())
    assert error.code() == code
    assert text in error.details()


# ------------------------------------------------------------------------------------- status
def test_model_status_lists_the_served_versions(target):
    assert status(target, "fashion") == {2: (AVAILABLE, "")}
    assert status(target, "fashion", version=2) == {2: (AVAILABLE, "")}
    assert status(target, "picker") == {1: (AVAILABLE, ""), 3: (AVAILABLE, "")}


@pytest.mark.parametrize(
    ("model", "version", "text"),
    [
        ("nope", None, "Could not find any versions of model nope"),
        ("fashion", 1, "Could not find version 1 of model fashion"),
    ],
)
def test_model_status_errors(target, model, version, text):
    request = protos.get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    error = rpc_error(target.model_stub.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == text


def test_rest_model_status_json(target):
    ok = {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    assert rest_get(target, "/v1/models/fashion") == (200, {"model_version_status": [ok]})
    assert rest_get(target, "/v1/models/fashion/versions/2") == (
        200,
        {"model_version_status": [ok]},
    )
    code, body = rest_get(target, "/v1/models/picker/labels/stable")
    assert code == 200
    assert [s["version"] for s in body["model_version_status"]] == ["1"]
    assert rest_get(target, "/v1/models/nope") == (
        404,
        {"error": "Could not find any versions of model nope"},
    )
    assert rest_get(target, "/v1/models/fashion/versions/9") == (
        404,
        {"error": "Could not find version 9 of model fashion"},
    )


def test_rest_predict_row_format(target):
    images = tiny_models.images(2, seed=6)
    body = json.dumps({"instances": images.tolist()}).encode()
    request = urllib.request.Request(
        target.rest_url + "/v1/models/fashion/versions/2:predict", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        predictions = json.loads(response.read())["predictions"]
    assert [p["classes"] for p in predictions] == [tiny_models.labels_for(2)] * 2
    np.testing.assert_allclose(
        [p["probabilities"] for p in predictions], tiny_models.expected(images, 2), atol=1e-6
    )


def _rest_post(target: Target, path: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(target.rest_url + path, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_rest_predict_errors(target):
    images = json.dumps({"instances": tiny_models.images(1).tolist()}).encode()
    code, body = _rest_post(target, "/v1/models/nope:predict", images)
    assert code == 404 and "nope" in body["error"]
    code, body = _rest_post(target, "/v1/models/fashion:predict", b"{not json")
    assert code == 400 and body["error"]
    code, body = _rest_post(target, "/v1/models/fashion:predict", b'{"instances": [[1, 2]]}')
    assert code == 400 and body["error"]


def test_rest_metadata(target):
    code, body = rest_get(target, "/v1/models/fashion/metadata")
    assert code == 200
    assert body["model_spec"]["name"] == "fashion" and body["model_spec"]["version"] == "2"
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["images"]["dtype"] == "DT_UINT8"
    assert signature["outputs"]["classes"]["dtype"] == "DT_STRING"


# ------------------------------------------------------------------------------------- lifecycle
# Each on its own model (MODELS): publish under load, a half-written version, roll back, corrupt.
def _served_version(target: Target, model: str = "swap") -> int:
    images = tiny_models.images(1, seed=7)
    response = target.predict_stub.Predict(predict_request(model, images), timeout=10)
    assert_answer(response, images, model, response.model_spec.version.value)
    return response.model_spec.version.value


class _Client(threading.Thread):
    """Sends Predict to `swap` back to back; records (version, error) of every call."""

    def __init__(self, target: Target) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.stop = threading.Event()
        self.results: list[tuple[int | None, str | None]] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            images = tiny_models.images(2, seed=n)
            try:
                response = self.target.predict_stub.Predict(
                    predict_request("swap", images), timeout=30
                )
                version = response.model_spec.version.value
                assert_answer(response, images, "swap", version)
                self.results.append((version, None))
            except (grpc.RpcError, AssertionError) as exc:
                self.results.append((None, repr(exc)))


def test_new_version_served_under_load_without_a_failed_call(target):
    assert _served_version(target) == 1
    client = _Client(target)
    client.start()
    try:
        wait_for(lambda: len(client.results) >= 20, what="calls before the swap")
        tiny_models.copy_version(target.models_dir / PRISTINE / "2", target.models_dir / "swap", 2)
        wait_for(lambda: any(v == 2 for v, _ in client.results), what="version 2 answering")
        seen = len(client.results)
        wait_for(lambda: len(client.results) >= seen + 20, what="calls after the swap")
    finally:
        client.stop.set()
        client.join(timeout=30)
    failures = [e for _, e in client.results if e is not None]
    assert failures == []
    versions = [v for v, _ in client.results]
    switch = versions.index(2)
    assert set(versions[:switch]) == {1} and set(versions[switch:]) == {2}
    wait_for(
        lambda: status(target, "swap") == {1: (END, ""), 2: (AVAILABLE, "")},
        what="version 1 unloaded",
    )


def test_half_written_version_is_never_served_and_old_one_keeps_serving(target):
    assert _served_version(target, "half") == 2
    half = target.models_dir / "half"
    folder = tiny_models.write_half_written(target.models_dir / PRISTINE / "3", half, 3)
    # The server tried (and failed) to load it: version 3 is reported with an error.
    wait_for(lambda: status(target, "half").get(3, (0, ""))[1], what="a failed load of v3")
    state, error = status(target, "half")[3]
    assert state != AVAILABLE and error
    for _ in range(5):
        assert _served_version(target, "half") == 2
    tiny_models.complete_half_written(target.models_dir / PRISTINE / "3", folder)
    wait_for(lambda: _served_version(target, "half") == 3, what="completed version 3 served")
    assert status(target, "half")[3] == (AVAILABLE, "")


def test_rollback_by_pinning_a_version_in_the_config(target):
    assert _served_version(target, "rollback") == 3
    write_config(target.models_dir, target.server_dir, {"rollback": "specific { versions: 2 }"})
    try:
        wait_for(lambda: _served_version(target, "rollback") == 2, what="rollback to version 2")
        wait_for(lambda: status(target, "rollback").get(3, (0, ""))[0] == END, what="v3 unloaded")
        assert status(target, "rollback")[2] == (AVAILABLE, "")
    finally:
        write_config(target.models_dir, target.server_dir)
    wait_for(lambda: _served_version(target, "rollback") == 3, what="version 3 back")


def test_corrupt_version_is_never_served_and_the_current_one_keeps_serving(target):
    assert _served_version(target, "corrupt") == 3
    folder = target.models_dir / "corrupt" / ".staging-9"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "variables").mkdir()
    os.rename(folder, target.models_dir / "corrupt" / "9")
    wait_for(lambda: status(target, "corrupt").get(9, (0, ""))[1], what="a failed load of v9")
    assert status(target, "corrupt")[9][0] != AVAILABLE
    assert _served_version(target, "corrupt") == 3


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "prepare":
        folder = Path(sys.argv[2]).resolve()
        shutil.rmtree(folder, ignore_errors=True)
        prepare(folder, sys.argv[3] if len(sys.argv) > 3 else "/models")
        print(f"prepared {folder}")
    else:
        sys.exit("usage: python tests/test_serving_contract.py prepare DIR [DIR_IN_SERVER]")
