"""deploy/: the Kubernetes and KServe manifests, rendered, validated, joined and run locally.

No cluster runs here, so every check that does not need one is made:
- ``kubectl kustomize`` renders each overlay and deploy/kserve (kubectl: the machine image's, or
  the one .ci/run installs);
- every rendered object validates with ``kubernetes-validate --strict`` against Kubernetes 1.30,
  and the InferenceService against KServe's CRD schema (path: ``FASHION_KSERVE_CRD``, default
  ``../shared/schemas/kserve/serving.kserve.io_inferenceservices.yaml``), unknown fields refused;
- the objects join: selectors, ports, referenced ConfigMaps/Secrets/claims, HPAs' targets;
- they agree with Dockerfile.serving, Dockerfile.gateway, docker-compose.yml, serving/models.config
  and batch/schedule/;
- the rendered gateway, job and KServe transformer commands and environments run here against a
  local model server.

The production overlay and deploy/kserve read the API key from an uncommitted ``api-key.txt``;
they are rendered from a copy of deploy/ with a generated key.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from conftest import ROOT

from serving.launcher import free_port

KUBERNETES_VERSION = "1.30.0"
OVERLAYS = ("local", "production")
CRD_PATH = Path(
    os.environ.get(
        "FASHION_KSERVE_CRD",
        ROOT.parent / "shared" / "schemas" / "kserve" / "serving.kserve.io_inferenceservices.yaml",
    )
)
VENV_BIN = Path(sys.executable).parent


# ---- rendering ---------------------------------------------------------------------------------


def _kubectl() -> str:
    path = shutil.which("kubectl") or shutil.which("kubectl", path=str(VENV_BIN))
    assert path, "kubectl is not installed: `make install` installs a client (deploy/README.md)"
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """``{"local": [...], "production": [...], "kserve": [...]}``: the rendered objects."""
    tree = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(ROOT / "deploy", tree)
    for folder in (tree / "k8s" / "overlays" / "production", tree / "kserve"):
        (folder / "api-key.txt").write_text(secrets.token_urlsafe(24))
    out = {}
    for name, folder in [
        *((o, tree / "k8s" / "overlays" / o) for o in OVERLAYS),
        ("kserve", tree / "kserve"),
    ]:
        result = subprocess.run(
            [_kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"kubectl kustomize {name}: {result.stderr}"
        out[name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def _one(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def _pod_spec(workload: dict) -> dict:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def _pod_labels(workload: dict) -> dict:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return workload["spec"]["template"]["metadata"]["labels"]


def _workloads(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] in ("Deployment", "CronJob")]


def _containers(objects: list[dict]) -> Iterator[tuple[dict, dict, bool]]:
    """(workload, container, is_init) for every container of every workload."""
    for workload in _workloads(objects):
        spec = _pod_spec(workload)
        for container in spec.get("initContainers", []):
            yield workload, container, True
        for container in spec["containers"]:
            yield workload, container, False


def _container(objects: list[dict], deployment: str) -> dict:
    return _pod_spec(_one(objects, "Deployment", deployment))["containers"][0]


def _probes(container: dict) -> Iterator[tuple[str, dict]]:
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        if kind in container:
            yield kind, container[kind]


def _port_number(container: dict, port: int | str) -> int:
    """A probe's or Service's target port as the container's declared containerPort."""
    declared = {p["containerPort"]: p for p in container.get("ports", [])}
    if isinstance(port, str):
        named = [p["containerPort"] for p in declared.values() if p.get("name") == port]
        assert named, f"{container['name']}: no containerPort named {port!r}"
        return named[0]
    assert port in declared, f"{container['name']}: port {port} is not a containerPort"
    return port


# ---- render and validate -----------------------------------------------------------------------


def test_every_overlay_renders_the_expected_objects(rendered):
    names = {
        overlay: sorted(
            f"{o['kind']}/{re.sub(r'-[a-z0-9]{10}$', '', o['metadata']['name'])}"
            for o in rendered[overlay]
        )
        for overlay in OVERLAYS
    }
    base = [
        "ConfigMap/fashion-serving-models",
        "CronJob/fashion-batch",
        "Deployment/fashion-gateway",
        "Deployment/fashion-serving",
        "HorizontalPodAutoscaler/fashion-gateway",
        "HorizontalPodAutoscaler/fashion-serving",
        "NetworkPolicy/fashion-serving-from-gateway",
        "PersistentVolumeClaim/fashion-batch-ledger",
        "PersistentVolumeClaim/fashion-batch-photos",
        "PodDisruptionBudget/fashion-gateway",
        "PodDisruptionBudget/fashion-serving",
        "Secret/fashion-gateway-api-key",
        "Service/fashion-gateway",
        "Service/fashion-serving-headless",
    ]
    assert names["local"] == base
    assert names["production"] == sorted(
        [
            *base,
            "Deployment/fashion-redis",
            "NetworkPolicy/fashion-redis-from-gateway",
            "PersistentVolumeClaim/fashion-models",
            "Service/fashion-redis",
        ]
    )
    for overlay in OVERLAYS:
        for obj in rendered[overlay]:
            labels = obj["metadata"]["labels"]
            assert labels["app.kubernetes.io/part-of"] == "fashion-classifier", obj["kind"]
            assert labels["app.kubernetes.io/managed-by"] == "kustomize"
            assert "app.kubernetes.io/name" in labels
            assert "namespace" not in obj["metadata"]  # nothing tied to one cluster's layout


@pytest.mark.parametrize("version", [KUBERNETES_VERSION, kubernetes_validate.latest_version()])
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates_strictly_from_kubernetes_1_30(rendered, overlay, version):
    """1.30 is the oldest supported release (preStop ``sleep`` is on by default from 1.30); the
    newest release kubernetes-validate knows catches fields removed since."""
    for obj in rendered[overlay]:
        kubernetes_validate.validate(obj, version, strict=True)


def test_strict_validation_refuses_an_unknown_field(rendered):
    deployment = copy.deepcopy(_one(rendered["local"], "Deployment", "fashion-gateway"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def _closed(schema: object) -> object:
    """The CRD schema with unknown fields refused wherever the API server would prune them."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _closed(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _crd_validator() -> jsonschema.Validator:
    assert CRD_PATH.is_file(), f"KServe CRD not found at {CRD_PATH} (set FASHION_KSERVE_CRD)"
    crd = yaml.safe_load(CRD_PATH.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    schema = _closed(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is the API server's
    return jsonschema.Draft7Validator(schema)


def test_inference_service_validates_against_kserve_crd(rendered):
    validator = _crd_validator()
    isvc = _one(rendered["kserve"], "InferenceService", "fashion")
    errors = sorted(validator.iter_errors(isvc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    broken = copy.deepcopy(isvc)
    broken["spec"]["predictor"]["containers"][0]["imagePullPolcy"] = "Always"
    assert not validator.is_valid(broken)
    for obj in rendered["kserve"]:
        if obj["kind"] != "InferenceService":
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


# ---- the objects join --------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_selects_exactly_one_deployment_on_a_declared_port(rendered, overlay):
    objects = rendered[overlay]
    deployments = _by_kind(objects, "Deployment")
    for service in _by_kind(objects, "Service"):
        selector = service["spec"]["selector"]
        matches = [
            d
            for d in deployments
            if selector.items() <= _pod_labels(d).items()
            and d["spec"]["selector"]["matchLabels"].items() <= _pod_labels(d).items()
        ]
        assert len(matches) == 1, f"Service {service['metadata']['name']}: {len(matches)}"
        container = _pod_spec(matches[0])["containers"][0]
        for port in service["spec"]["ports"]:
            _port_number(container, port["targetPort"])
    for deployment in deployments:
        assert (
            deployment["spec"]["selector"]["matchLabels"].items() <= _pod_labels(deployment).items()
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_probe_targets_a_declared_container_port(rendered, overlay):
    checked = 0
    for _, container, _ in _containers(rendered[overlay]):
        for _, probe in _probes(container):
            for handler in ("httpGet", "tcpSocket", "grpc"):
                if handler in probe:
                    _port_number(container, probe[handler]["port"])
                    checked += 1
    assert checked >= 5


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_referenced_configmap_secret_and_claim_exists(rendered, overlay):
    objects = rendered[overlay]
    names = {kind: {o["metadata"]["name"] for o in _by_kind(objects, kind)} for kind in
             ("ConfigMap", "Secret", "PersistentVolumeClaim")}  # fmt: skip
    referenced = {"ConfigMap": set(), "Secret": set(), "PersistentVolumeClaim": set()}
    for workload in _workloads(objects):
        spec = _pod_spec(workload)
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                referenced["ConfigMap"].add(volume["configMap"]["name"])
            if "secret" in volume:
                referenced["Secret"].add(volume["secret"]["secretName"])
            if "persistentVolumeClaim" in volume:
                referenced["PersistentVolumeClaim"].add(
                    volume["persistentVolumeClaim"]["claimName"]
                )
        for container in spec["containers"] + spec.get("initContainers", []):
            for env in container.get("env", []):
                source = env.get("valueFrom", {})
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    referenced["Secret"].add(ref["name"])
                    secret = _one(objects, "Secret", ref["name"])
                    assert ref["key"] in secret["data"]
                if "configMapKeyRef" in source:
                    referenced["ConfigMap"].add(source["configMapKeyRef"]["name"])
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in {v["name"] for v in spec["volumes"]}
    for kind, refs in referenced.items():
        assert refs, f"no {kind} referenced"
        assert refs <= names[kind], f"{kind}: {refs - names[kind]} referenced but not rendered"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpas_scale_existing_deployments(rendered, overlay):
    objects = rendered[overlay]
    hpas = _by_kind(objects, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == {
        "fashion-serving",
        "fashion-gateway",
    }
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
        deployment = _one(objects, "Deployment", ref["name"])
        assert "replicas" not in deployment["spec"]  # the HPA owns the count
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        for _, container, _ in _containers([deployment]):
            assert "cpu" in container["resources"]["requests"]  # utilisation needs a request
    ranges = {h["metadata"]["name"]: (h["spec"]["minReplicas"], h["spec"]["maxReplicas"])
              for h in hpas}  # fmt: skip
    if overlay == "local":
        assert ranges == {"fashion-serving": (1, 1), "fashion-gateway": (1, 1)}
    else:
        assert ranges == {"fashion-serving": (2, 8), "fashion-gateway": (2, 6)}
    for pdb in _by_kind(objects, "PodDisruptionBudget"):
        selected = [
            d
            for d in _by_kind(objects, "Deployment")
            if pdb["spec"]["selector"]["matchLabels"].items() <= _pod_labels(d).items()
        ]
        assert len(selected) == 1 and pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_resources_and_non_root_everywhere(rendered, overlay):
    for workload, container, _ in _containers(rendered[overlay]):
        where = f"{workload['metadata']['name']}/{container['name']}"
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys(), where
        assert "memory" in resources["limits"], where
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, where
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["capabilities"]["drop"] == ["ALL"], where
        pod_security = _pod_spec(workload)["securityContext"]
        assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] > 0, where
        if workload["kind"] == "Deployment":
            kinds = {kind for kind, _ in _probes(container)}
            assert {"readinessProbe", "livenessProbe"} <= kinds, where
        if workload["kind"] == "Deployment" and workload["metadata"]["name"] != "fashion-redis":
            spread = _pod_spec(workload)["topologySpreadConstraints"]
            assert {c["topologyKey"] for c in spread} == {
                "kubernetes.io/hostname",
                "topology.kubernetes.io/zone",
            }
            for constraint in spread:
                assert (
                    constraint["labelSelector"]["matchLabels"]
                    == workload["spec"]["selector"]["matchLabels"]
                )


def test_gateway_probes_health_and_livez_and_targets_the_headless_service(rendered):
    for overlay in OVERLAYS:
        objects = rendered[overlay]
        gateway = _container(objects, "fashion-gateway")
        assert gateway["readinessProbe"]["httpGet"]["path"] == "/health"
        assert gateway["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert gateway["startupProbe"]["httpGet"]["path"] == "/livez"
        env = {e["name"]: e.get("value") for e in gateway["env"]}
        assert env["SERVING_LB_POLICY"] == "round_robin"
        match = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", env["SERVING_GRPC_ADDRESS"])
        assert match, env["SERVING_GRPC_ADDRESS"]
        service = _one(objects, "Service", match.group(1))
        assert service["spec"]["clusterIP"] == "None"  # headless: DNS lists every pod
        port = next(p for p in service["spec"]["ports"] if p["port"] == int(match.group(2)))
        serving = _container(objects, "fashion-serving")
        assert _port_number(serving, port["targetPort"]) == 8500
        # Only gateway pods may reach that port.
        policy = _one(objects, "NetworkPolicy", "fashion-serving-from-gateway")
        assert policy["spec"]["podSelector"]["matchLabels"] == service["spec"]["selector"]
        (rule,) = policy["spec"]["ingress"]
        (source,) = rule["from"]
        gateway_labels = _pod_labels(_one(objects, "Deployment", "fashion-gateway"))
        assert source["podSelector"]["matchLabels"].items() <= gateway_labels.items()
        assert rule["ports"] == [{"protocol": "TCP", "port": 8500}]
        if overlay == "production":
            assert env["REDIS_URL"] == "redis://fashion-redis:6379/0"
            redis = _one(objects, "Service", "fashion-redis")
            assert redis["spec"]["ports"][0]["port"] == 6379
        else:
            assert "REDIS_URL" not in env


def test_serving_readiness_is_the_model_status_and_models_come_from_each_overlays_volume(
    rendered,
):
    for overlay in OVERLAYS:
        objects = rendered[overlay]
        deployment = _one(objects, "Deployment", "fashion-serving")
        serving = _pod_spec(deployment)["containers"][0]
        assert serving["readinessProbe"]["exec"]["command"] == [
            "/usr/local/bin/healthcheck.sh",
            "fashion",
            "8501",
        ]
        volumes = {v["name"]: v for v in _pod_spec(deployment)["volumes"]}
        mounts = {m["mountPath"]: m for m in serving["volumeMounts"]}
        assert mounts["/models"]["readOnly"] is True
        models = volumes[mounts["/models"]["name"]]
        if overlay == "local":
            assert models["hostPath"]["type"] == "Directory"
        else:
            claim = _one(
                objects, "PersistentVolumeClaim", models["persistentVolumeClaim"]["claimName"]
            )
            assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
            assert models["persistentVolumeClaim"]["readOnly"] is True
        config_flag = next(a for a in serving["args"] if a.startswith("--model_config_file="))
        config_path = Path(config_flag.split("=", 1)[1])
        config_volume = volumes[mounts[str(config_path.parent)]["name"]]
        config_map = _one(objects, "ConfigMap", config_volume["configMap"]["name"])
        assert config_map["data"][config_path.name] == (ROOT / "serving/models.config").read_text()


# ---- agreement with the Dockerfiles, compose and batch/schedule --------------------------------


def _dockerfile_entrypoint(path: Path) -> list[str]:
    text = path.read_text().replace("\\\n", " ")
    (line,) = [x for x in text.splitlines() if x.startswith("ENTRYPOINT")]
    return json.loads(line.removeprefix("ENTRYPOINT"))


def _dockerfile_cmd(path: Path, stage: str) -> list[str]:
    text = path.read_text().split(f" AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
    (line,) = [x for x in text.splitlines() if x.startswith("CMD")]
    return json.loads(line.removeprefix("CMD"))


def _user(path: Path, stage: str | None = None) -> int:
    text = path.read_text()
    if stage:
        text = text.split(f" AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
    (line,) = [x for x in text.splitlines() if x.startswith("USER ")][-1:]
    return int(line.split()[1].split(":")[0])


def _exposed(path: Path, stage: str | None = None) -> set[int]:
    text = path.read_text()
    if stage:
        text = text.split(f" AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
    lines = [line for line in text.splitlines() if line.startswith("EXPOSE")]
    return {int(port) for line in lines for port in line.split()[1:]}


def _serving_args_match_dockerfile(container: dict) -> None:
    entrypoint = _dockerfile_entrypoint(ROOT / "Dockerfile.serving")
    command = container.get("command", entrypoint[:1]) + container["args"]
    assert command[0] == entrypoint[0] == "tensorflow_model_server"

    def flags(args: list[str]) -> dict[str, str]:
        return dict(a.split("=", 1) for a in args[1:])

    want, got = flags(entrypoint), flags(command)
    # Moved to the ConfigMap's mount; added: connection ageing for round_robin clients.
    assert want.pop("--model_config_file") == "/etc/serving/models.config"
    assert got.pop("--model_config_file") == "/etc/serving/models/models.config"
    assert got.pop("--grpc_channel_arguments") == (
        "grpc.max_connection_age_ms=30000,grpc.max_connection_age_grace_ms=10000"
    )
    assert got == want


def test_images_ports_and_commands_agree_with_dockerfiles_and_compose(rendered):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    serving_ports = _exposed(ROOT / "Dockerfile.serving")
    gateway_ports = _exposed(ROOT / "Dockerfile.gateway", "gateway")
    assert serving_ports == {8500, 8501} and gateway_ports == {8080}
    for overlay in OVERLAYS:
        objects = rendered[overlay]
        serving = _container(objects, "fashion-serving")
        assert serving["image"] == compose["serving"]["image"]
        assert {p["containerPort"] for p in serving["ports"]} == serving_ports
        _serving_args_match_dockerfile(serving)
        gateway = _container(objects, "fashion-gateway")
        assert gateway["image"] == compose["gateway"]["image"]
        assert {p["containerPort"] for p in gateway["ports"]} == gateway_ports
        assert gateway["command"] == _dockerfile_cmd(ROOT / "Dockerfile.gateway", "gateway")
        env = {e["name"]: e.get("value") for e in gateway["env"]}
        assert env["MODEL_NAME"] == compose["gateway"]["environment"]["MODEL_NAME"]
        # Pods run as the user their image declares.
        for name, dockerfile, stage in [
            ("fashion-serving", "Dockerfile.serving", None),
            ("fashion-gateway", "Dockerfile.gateway", "gateway"),
        ]:
            pod = _pod_spec(_one(objects, "Deployment", name))
            assert pod["securityContext"]["runAsUser"] == _user(ROOT / dockerfile, stage), name
        cron_pod = _pod_spec(_one(objects, "CronJob", "fashion-batch"))
        assert cron_pod["securityContext"]["runAsUser"] == _user(
            ROOT / "Dockerfile.gateway", "batch"
        )
        batch = cron_pod["containers"][0]
        assert batch["image"] == compose["batch"]["image"]
        assert batch["command"] == _dockerfile_cmd(ROOT / "Dockerfile.gateway", "batch")
    isvc = _one(rendered["kserve"], "InferenceService", "fashion")
    predictor = isvc["spec"]["predictor"]["containers"][0]
    transformer = isvc["spec"]["transformer"]["containers"][0]
    assert predictor["image"] == compose["serving"]["image"]
    _serving_args_match_dockerfile(predictor)
    assert isvc["spec"]["predictor"]["securityContext"]["runAsUser"] == _user(
        ROOT / "Dockerfile.serving"
    )
    assert predictor["ports"][0] == {"name": "h2c", "containerPort": 8500, "protocol": "TCP"}
    assert transformer["image"] == compose["gateway"]["image"]
    assert transformer["command"] == ["python", "-m", "gateway.kserve"]
    local = _container(rendered["local"], "fashion-serving")
    for key in ("readinessProbe", "resources", "securityContext"):
        assert predictor[key] == local[key], key
    for name in ("models.config",):
        assert (ROOT / "deploy/kserve" / name).read_text() == (ROOT / "serving" / name).read_text()
        assert (ROOT / "deploy/k8s/base" / name).read_text() == (
            ROOT / "serving" / name
        ).read_text()


def test_cronjob_runs_the_scheduled_command_once_at_a_time_with_its_ledger_on_rwo(rendered):
    crontab = [
        line
        for line in (ROOT / "batch/schedule/crontab").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    (entry,) = crontab
    service = (ROOT / "batch/schedule/fashion-batch.service").read_text()
    exec_start = re.search(r"^ExecStart=(.+)$", service, re.M).group(1).split()
    for overlay in OVERLAYS:
        objects = rendered[overlay]
        cron = _one(objects, "CronJob", "fashion-batch")
        assert cron["spec"]["schedule"] == " ".join(entry.split()[:5]) == "0 2 * * *"
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        assert cron["spec"]["startingDeadlineSeconds"] > 0
        job = cron["spec"]["jobTemplate"]["spec"]
        timeout = re.search(r"^TimeoutStartSec=(\d+)h$", service, re.M).group(1)
        assert job["activeDeadlineSeconds"] == int(timeout) * 3600
        assert job["backoffLimit"] >= 1  # a retry is safe: the job is exactly-once
        container = _pod_spec(cron)["containers"][0]
        # The same module and arguments as systemd's ExecStart and the crontab line.
        assert container["command"][0] == "python"
        assert container["command"][1:] == exec_start[1:] == ["-m", "batch", "run"]
        assert " ".join(container["command"][1:]) in entry
        env = {e["name"]: e.get("value") for e in container["env"]}
        gateway_url = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", env["FASHION_BATCH_GATEWAY"])
        service_obj = _one(objects, "Service", gateway_url.group(1))
        assert service_obj["spec"]["ports"][0]["port"] == int(gateway_url.group(2))
        volumes = {v["name"]: v for v in _pod_spec(cron)["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}

        def claim_of(path: str, mounts=mounts, volumes=volumes, objects=objects) -> dict:
            mount = max((m for m in mounts if path.startswith(m + "/")), key=len)
            name = volumes[mounts[mount]]["persistentVolumeClaim"]["claimName"]
            return _one(objects, "PersistentVolumeClaim", name)

        assert claim_of(env["FASHION_BATCH_RESULTS"])["spec"]["accessModes"] == ["ReadWriteOnce"]
        photos = {claim_of(env[f"FASHION_BATCH_{k}"])["metadata"]["name"]
                  for k in ("INCOMING", "PROCESSED", "QUARANTINE")}  # fmt: skip
        assert len(photos) == 1  # one file system: filing is an atomic rename


def test_termination_grace_outlasts_gunicorns_graceful_timeout(rendered):
    objects = rendered["production"]
    deployment = _one(objects, "Deployment", "fashion-gateway")
    container = _pod_spec(deployment)["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    probe = (
        "import runpy; c = runpy.run_path('gateway/gunicorn.conf.py'); "
        "print(c['graceful_timeout'], c['timeout'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    graceful, _ = map(int, result.stdout.split())
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = _pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace > pre_stop + graceful, (grace, pre_stop, graceful)
    isvc = _one(rendered["kserve"], "InferenceService", "fashion")
    assert isvc["spec"]["transformer"]["terminationGracePeriodSeconds"] > graceful


# ---- the rendered commands run here ------------------------------------------------------------


def _resolved_env(objects: list[dict], container: dict) -> dict[str, str]:
    """The container's environment with Secret references read from the rendered Secrets."""
    import base64

    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            secret = _one(objects, "Secret", ref["name"])
            env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


def _local_command(command: list[str]) -> list[str]:
    """An image command run with this venv's executables (python, gunicorn)."""
    program = command[0]
    path = VENV_BIN / program
    return [str(path) if path.exists() else program, *command[1:]]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode}"
        try:
            if _get(url + "/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url}/health never 200")


def _stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def test_rendered_gateway_and_job_run_here_against_the_local_server(
    rendered, tiny_server, tmp_path
):
    """The local overlay's gateway (command, env, API key from its Secret) and nightly job
    (command, env, folders mapped from its volume mounts) run here; only addresses and the
    mounts' root folders are substituted."""
    import numpy as np
    from PIL import Image

    objects = rendered["local"]
    gateway = _container(objects, "fashion-gateway")
    env = _resolved_env(objects, gateway)
    target = env["SERVING_GRPC_ADDRESS"]
    # dns:///<headless service>:8500 -> dns:///127.0.0.1:<local server port>: same scheme.
    env["SERVING_GRPC_ADDRESS"] = re.sub(
        r"^dns:///[^:]+:\d+$", f"dns:///{tiny_server.grpc_address}", target
    )
    assert env["SERVING_GRPC_ADDRESS"] != target
    port = free_port()
    env["GATEWAY_BIND"] = f"127.0.0.1:{port}"
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        _local_command(gateway["command"]),
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        assert _get(url + "/livez") == (200, {"status": "alive"})
        assert _get(url + "/classes")[0] == 401  # the Secret's key is required
        key = {"X-API-Key": env["GATEWAY_API_KEY"]}
        assert _get(url + "/classes", key)[1]["classes"] == ["v2-c0", "v2-c1", "v2-c2"]

        cron = _one(objects, "CronJob", "fashion-batch")
        job = _pod_spec(cron)["containers"][0]
        job_env = _resolved_env(objects, job)
        assert job_env["FASHION_BATCH_API_KEY"] == env["GATEWAY_API_KEY"]
        job_env["FASHION_BATCH_GATEWAY"] = url
        for mount in job["volumeMounts"]:  # /data, /state, /tmp -> folders under tmp_path
            root = tmp_path / mount["mountPath"].strip("/")
            root.mkdir(exist_ok=True)
            for name, value in job_env.items():
                if value.startswith(mount["mountPath"] + "/"):
                    job_env[name] = str(root) + value[len(mount["mountPath"]) :]
        incoming = Path(job_env["FASHION_BATCH_INCOMING"])
        # What the init container does on a fresh volume.
        init = _pod_spec(cron)["initContainers"][0]
        assert init["command"] == ["mkdir", "-p", "/data/incoming"]
        subprocess.run(["mkdir", "-p", str(incoming)], check=True)
        rng = np.random.default_rng(7)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                incoming / f"photo{i}.png"
            )
            os.utime(incoming / f"photo{i}.png", (time.time() - 3600,) * 2)
        result = subprocess.run(
            _local_command(job["command"]),
            env={**os.environ, **job_env, "PYTHONPATH": str(ROOT)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert not list(incoming.iterdir())
        processed = Path(job_env["FASHION_BATCH_PROCESSED"])
        assert len([p for p in processed.rglob("*.png")]) == 5
        assert (Path(job_env["FASHION_BATCH_RESULTS"]) / "ledger.sqlite").is_file()
    finally:
        assert _stop(process) == 0
        log.close()


def test_kserve_transformer_command_with_kserves_arguments_runs_here(
    rendered, tiny_server, tmp_path
):
    """The InferenceService's transformer command plus the arguments KServe's controller
    appends (--model_name <name> --predictor_host <host> --http_port <port>)."""
    objects = rendered["kserve"]
    isvc = _one(objects, "InferenceService", "fashion")
    transformer = isvc["spec"]["transformer"]["containers"][0]
    env = _resolved_env(objects, transformer)
    port = free_port()
    env["GATEWAY_BIND"] = "127.0.0.1:8080"  # the image's 0.0.0.0:8080, on this machine only
    appended = [
        "--model_name",
        isvc["metadata"]["name"],
        "--predictor_host",
        tiny_server.grpc_address,  # KServe: fashion-predictor.<namespace> (port 80 -> h2c 8500)
        "--http_port",
        str(port),
    ]
    log = open(tmp_path / "transformer.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        _local_command(transformer["command"] + transformer.get("args", []) + appended),
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        status, body = _get(url + "/classes", {"X-API-Key": env["GATEWAY_API_KEY"]})
        assert (status, body["model"]) == (200, {"name": "fashion", "version": 2})
    finally:
        assert _stop(process) == 0, shlex.join(transformer["command"])
        log.close()
