"""``python -m bench [--quick]``: every layer against the model-only floor, in one run.

Stages (see ``bench/__init__.py``): 1 model only, 2 in-process pipeline, 3 model server over gRPC,
4 gateway ``/predict`` at concurrency 1 and 8, 5 gateway ``/predict_batch`` (32 images), 6 the
nightly job, 7 gateway import+create time and memory, serving start-to-AVAILABLE. Ratios (goals in
README): ``predict_p50_over_floor`` = stage 4 p50 at concurrency 1 / (stage 1 batch-1 median + one
preprocessing median); ``predict_batch_over_pipeline`` = stage 5 / stage 2 images/s;
``nightly_over_pipeline`` = stage 6 / stage 2 images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

import preprocessing
from bench import floor, grpc_stage, http_stage, side_by_side
from bench.jobs import nightly
from bench.stats import ratio
from serving.versions import versions_on_disk
from serving_api.memory import keep_large_buffers_on_heap

ROOT = Path(__file__).resolve().parents[1]
MODEL = "fashion"

_GATEWAY_PROBE = """
import json, resource, sys, time
start = time.perf_counter()
from gateway.app import create_app
app = create_app()
created = time.perf_counter() - start
client = app.test_client()
with open(sys.argv[1], "rb") as f:
    response = client.post("/predict", data={"image": (f, "photo.jpg")})
assert response.status_code == 200, response.get_data(as_text=True)
from serving_api import protos
status = open("/proc/self/status").read().splitlines()
rss_kb = int(next(line.split()[1] for line in status if line.startswith("VmRSS")))
print(json.dumps({"import_and_create_s": round(created, 3), "rss_mb_after_predict":
                  round(rss_kb / 1024, 1), "tensorflow_runtime_loaded": protos.runtime_loaded()}))
"""


def _test_photos(data_dir: Path, limit: int) -> list[Path]:
    photos = sorted((data_dir / "test").rglob("*.jpg"))
    if not photos:
        raise SystemExit(f"no test photos under {data_dir}/test: set FASHION_DATA_DIR")
    return photos[:limit]


def _latest_version(base: Path) -> Path:
    versions = versions_on_disk(str(base))  # the server's own rule for version folders
    if not versions:
        raise SystemExit(f"no SavedModel version under {base}: run `make export`")
    return Path(versions[max(versions)])


def _gateway_probe(env: dict[str, str], photo: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _GATEWAY_PROBE, str(photo)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode:
        raise RuntimeError(f"gateway probe failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _print_table(results: dict) -> None:
    s = results["stages"]
    rows = [
        (
            "1 model only, batch 1 (p50 / p95 ms)",
            f"{s['model_only']['batch1']['p50_ms']} / {s['model_only']['batch1']['p95_ms']}",
        ),
        ("1 model only, batch 32 (images/s)", s["model_only"]["batch32_images_per_s"]),
        ("  preprocessing, one photo (p50 ms)", s["preprocessing"]["p50_ms"]),
        ("2 in-process pipeline, batch 32 (images/s)", s["pipeline"]["images_per_s"]),
        (
            "3 gRPC Predict batch 1 (p50 / p95 ms)",
            f"{s['grpc']['batch1']['p50_ms']} / {s['grpc']['batch1']['p95_ms']}",
        ),
        (
            "3 gRPC Predict batch 32 (p50 ms; images/s)",
            f"{s['grpc']['batch32']['p50_ms']}; {s['grpc']['batch32_images_per_s']}",
        ),
    ]
    for c in ("1", "8"):
        p = s["predict"][f"concurrency_{c}"]
        rows.append(
            (
                f"4 /predict c={c} (p50/p95/p99 ms; req/s)",
                f"{p['p50_ms']}/{p['p95_ms']}/{p['p99_ms']}; {p['requests_per_s']}",
            )
        )
    rows += [
        ("5 /predict_batch x32 (images/s)", s["predict_batch"]["images_per_s"]),
        ("6 nightly job (images/s)", s["nightly"]["images_per_s"]),
        ("7 gateway import+create (s)", s["gateway_process"]["import_and_create_s"]),
        ("7 gateway RSS after a prediction (MB)", s["gateway_process"]["rss_mb_after_predict"]),
        ("7 serving start to AVAILABLE (s)", s["serving_start_to_available_s"]),
    ]
    rows += [(f"ratio {k}", v) for k, v in results["ratios"].items() if k != "vs_inprocess"]
    rows += side_by_side.table(s["side_by_side"], results["ratios"]["vs_inprocess"])
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    """Run all stages and write the JSON report.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        0; exceptions propagate (a failed stage is a failed benchmark).
    """
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="few images and repeats: checks the benchmark works (CI), figures are not meaningful",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(
            os.environ.get("FASHION_DATA_DIR", ROOT.parent / "shared/data/clothing-dataset-small")
        ),
    )
    parser.add_argument("--model-base-path", type=Path, default=ROOT / "models" / MODEL)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/latest.json")
    args = parser.parse_args(argv)
    # The servers and the gateway run with this; the floor and stage 3's client get it too, so
    # every stage is measured with the same allocator behaviour.
    keep_large_buffers_on_heap()

    from devtools.local import server_args
    from gateway.launcher import GatewayProcess
    from serving.launcher import ModelServerProcess

    repeats = 20 if args.quick else 200
    photos = _test_photos(args.data_dir, 64 if args.quick else 372)
    files = [p.read_bytes() for p in photos]
    named = [(p.name, d) for p, d in zip(photos, files, strict=True)]
    version_dir = _latest_version(args.model_base_path)

    stages: dict = {}
    runner = floor.SignatureRunner(version_dir)
    images = np.stack([preprocessing.decode(d, runner.size) for d in files[:64]])
    stages["model_only"] = floor.model_only(runner, images, repeats)
    stages["preprocessing"] = floor.preprocessing_latency(files[:repeats], runner.size)
    stages["pipeline"] = floor.pipeline(runner, files)
    input_name = runner.input_name
    del runner  # free the in-process model before the servers share the cores

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp) / "logs"
        logs.mkdir()
        server = stack.enter_context(
            ModelServerProcess(server_args(args.model_base_path), log_path=logs / "serving.log")
        )
        stages["serving_start_to_available_s"] = round(server.startup_seconds, 2)
        stages["grpc"] = grpc_stage.predict_latencies(
            server.grpc_address, MODEL, input_name, images, repeats
        )
        # The same images are sent again and again: without CACHE_SIZE=0 the gateway's prediction
        # cache would answer them and the figures would be the cache's, not the model path's.
        env = {"SERVING_GRPC_ADDRESS": server.grpc_address, "MODEL_NAME": MODEL, "CACHE_SIZE": "0"}
        gateway = stack.enter_context(
            GatewayProcess(env, server="gunicorn", log_path=logs / "gateway.log")
        )
        stages["predict"] = {
            f"concurrency_{c}": http_stage.predict_load(gateway.url, named, repeats, c)
            for c in (1, 8)
        }
        stages["predict_batch"] = http_stage.predict_batch_throughput(
            gateway.url, named, rounds=1 if args.quick else 3
        )
        stages["nightly"] = nightly(gateway.url, photos, Path(tmp) / "nightly")
        stages["gateway_process"] = _gateway_probe(env, photos[0])

    with tempfile.TemporaryDirectory() as tmp:
        side, vs_inprocess = side_by_side.run(
            version_dir,
            photos,
            Path(tmp),
            rounds=1 if args.quick else 4,
            repeats=repeats,
        )
    stages["side_by_side"] = side

    floor_ms = stages["model_only"]["batch1"]["p50_ms"] + stages["preprocessing"]["p50_ms"]
    results = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "model_version_dir": str(version_dir.relative_to(ROOT))
        if version_dir.is_relative_to(ROOT)
        else str(version_dir),
        "photos": len(photos),
        "stages": stages,
        "ratios": {
            "predict_p50_over_floor": ratio(stages["predict"]["concurrency_1"]["p50_ms"], floor_ms),
            "predict_batch_over_pipeline": ratio(
                stages["predict_batch"]["images_per_s"], stages["pipeline"]["images_per_s"]
            ),
            "nightly_over_pipeline": ratio(
                stages["nightly"]["images_per_s"], stages["pipeline"]["images_per_s"]
            ),
            "grpc_batch1_over_model": ratio(
                stages["grpc"]["batch1"]["p50_ms"], stages["model_only"]["batch1"]["p50_ms"]
            ),
            "grpc_batch32_over_model": ratio(
                stages["model_only"]["batch32_images_per_s"], stages["grpc"]["batch32_images_per_s"]
            ),
            "vs_inprocess": vs_inprocess,
        },
        "goals": {
            "predict_p50_over_floor": "<= 1.3",
            "predict_batch_over_pipeline": ">= 0.75",
            "nightly_over_pipeline": ">= 0.7",
            "gateway_rss_mb": "<= 150",
            "gateway_import_and_create_s": "<= 1",
            "grpc_batch1_over_model": "<= 1.5",
            "grpc_batch32_over_model": "<= 1.15",
            "vs_inprocess": side_by_side.GOALS,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    _print_table(results)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
