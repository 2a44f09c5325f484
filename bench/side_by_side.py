"""The product against the design it replaces, in one run, with the same client (issue 12).

Both sides run at once on free ports and stay idle while the other is measured; each round
measures them one after the other, in alternating order, so machine noise hits both alike:
``/predict`` at concurrency 1 and 8, ``/predict_batch`` with 32 photos per request, and
``/predict`` with 12-megapixel phone photos. Then the whole-run clients: the nightly job through
the product and the seed-style client (one ``/predict`` per photo) through the baseline. The
product's prediction cache is off (``CACHE_SIZE=0``): the same photos are sent many times.

Ratios are product ÷ baseline, except ``nightly_over_seed_client`` (the nightly job ÷ the seed-style
client) and ``nightly_cpu_ceiling_fraction`` (the nightly job ÷ ``bench.ceiling``'s ceiling).
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from bench import http_stage, jobs, processes
from bench.phone import phone_jpegs
from bench.stats import latency_summary, ratio
from devtools.local import TF_THREADS

ROOT = Path(__file__).resolve().parents[1]

THREADS = TF_THREADS
"""TensorFlow ``(intra_op, inter_op)`` threads of both sides: the product's model server flags
(``devtools.local.SERVER_FLAGS``) and the baseline's ``BASELINE_INTRA_OP`` / ``_INTER_OP``."""

GOALS = {
    "predict_p50_c1": "<= 1.0",
    "throughput_c8": ">= 1.5",
    "predict_batch": ">= 1.5",
    "nightly_over_seed_client": ">= 2.0",
    "memory": "<= 1.1",
    "start": "<= 1.0",
    "nightly_cpu_ceiling_fraction": ">= 0.85",
}
"""Issue 12's goals for ``ratios.vs_inprocess``."""


class _Side:
    def __init__(self, name: str, url: str, pids: list[int]) -> None:
        self.name, self.url, self.pids = name, url, pids
        self.c1: list[float] = []
        self.c8: list[float] = []
        self.c8_requests = 0
        self.c8_seconds = 0.0
        self.batch_images = 0
        self.batch_seconds = 0.0
        self.phone: list[float] = []
        self.errors = 0
        self.memory_mb = {"rss": 0.0, "pss": 0.0}

    def read_memory(self) -> None:
        """Keep the highest resident memory (RSS and PSS, MiB) seen at the end of a round."""
        now = processes.tree_memory_mb(self.pids)
        self.memory_mb = {k: max(self.memory_mb[k], now[k]) for k in self.memory_mb}

    def round(self, named, phones, repeats: int) -> None:
        one = http_stage.predict_load(self.url, named, repeats, 1, raw=self.c1)
        eight = http_stage.predict_load(self.url, named, repeats, 8, raw=self.c8)
        self.c8_requests += repeats
        self.c8_seconds += repeats / eight["requests_per_s"]
        batch = http_stage.predict_batch_throughput(self.url, named, rounds=1)
        self.batch_images += batch["images"]
        self.batch_seconds += batch["seconds"]
        phone = http_stage.predict_load(self.url, phones, max(4, repeats // 10), 1, raw=self.phone)
        self.errors += one["errors"] + eight["errors"] + batch["errors"] + phone["errors"]
        self.read_memory()

    def figures(self) -> dict:
        return {
            "predict_c1": latency_summary(self.c1),
            "predict_c8": {
                **latency_summary(self.c8),
                "requests_per_s": round(self.c8_requests / self.c8_seconds, 1),
            },
            "predict_batch_images_per_s": round(self.batch_images / self.batch_seconds, 1),
            "phone_predict_c1": latency_summary(self.phone),
            "rss_mb_all_processes": self.memory_mb["rss"],
            "pss_mb_all_processes": self.memory_mb["pss"],
            "errors": self.errors,
        }


def ceiling(version_dir: Path, photos: list[Path]) -> dict:
    """Run ``python -m bench.ceiling`` in a fresh process (its own TensorFlow threads)."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.ceiling", str(version_dir), *map(str, photos)]
        + ["--threads", *map(str, THREADS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode:
        raise RuntimeError(f"bench.ceiling failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(
    version_dir: Path, photos: list[Path], workdir: Path, *, rounds: int, repeats: int
) -> tuple[dict, dict]:
    """Measure both sides; see the module docstring.

    Args:
        version_dir: the SavedModel version ``latest`` serves (the baseline loads it directly).
        photos: real test photos (whole-run clients use all; rounds cycle through them).
        workdir: fresh folder for logs and the nightly job's folders.
        rounds: interleaved rounds.
        repeats: ``/predict`` requests per side, round and concurrency.

    Returns:
        ``(figures, ratios)``: ``figures`` has ``product``, ``baseline``, ``start_s``,
        ``nightly``, ``seed_client``, ``ceiling`` and ``setup``; ``ratios`` the goals' keys.

    Raises:
        RuntimeError, TimeoutError: a side failed to start or a client failed.
    """
    named = [(p.name, p.read_bytes()) for p in photos]
    phones = phone_jpegs([data for _, data in named])
    first = named[0][1]
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        # Start one side at a time, so neither start competes with the other for the cores.
        server, gateway, product_start = processes.start_product(
            stack, {"CACHE_SIZE": "0"}, first, logs
        )
        baseline, baseline_start = processes.start_baseline(
            stack, version_dir, THREADS, first, logs
        )
        product = _Side("product", gateway.url, [server.process.pid, gateway.pid])
        rival = _Side("baseline", baseline.url, [baseline.pid])
        for n in range(rounds):
            for side in (product, rival) if n % 2 == 0 else (rival, product):
                side.round(named, phones, repeats)
        nightly, seed = [], []
        for n in range(max(1, rounds // 2)):
            pair = [
                lambda n=n: nightly.append(jobs.nightly(gateway.url, photos, workdir / f"job{n}")),
                lambda: seed.append(jobs.seed_client(baseline.url, named)),
            ]
            for call in pair if n % 2 == 0 else reversed(pair):
                call()
        product.read_memory()
        rival.read_memory()
    limit = ceiling(version_dir, photos)
    nightly_ips = max(r["images_per_s"] for r in nightly)
    seed_ips = max(r["images_per_s"] for r in seed)
    p, b = product.figures(), rival.figures()
    figures = {
        "setup": {"rounds": rounds, "repeats": repeats, "tf_threads": list(THREADS)},
        "product": p,
        "baseline": b,
        "start_s": {"product": round(product_start, 2), "baseline": round(baseline_start, 2)},
        "nightly": nightly,
        "seed_client": seed,
        "ceiling": limit,
        "goals": GOALS,
    }
    ratios = {
        "predict_p50_c1": ratio(p["predict_c1"]["p50_ms"], b["predict_c1"]["p50_ms"]),
        "throughput_c8": ratio(
            p["predict_c8"]["requests_per_s"], b["predict_c8"]["requests_per_s"]
        ),
        "predict_batch": ratio(p["predict_batch_images_per_s"], b["predict_batch_images_per_s"]),
        "nightly_over_seed_client": ratio(nightly_ips, seed_ips),
        "memory": ratio(p["pss_mb_all_processes"], b["pss_mb_all_processes"]),
        "memory_rss": ratio(p["rss_mb_all_processes"], b["rss_mb_all_processes"]),
        "start": ratio(product_start, baseline_start),
        "nightly_cpu_ceiling_fraction": ratio(nightly_ips, limit["ceiling_images_per_s"]),
        "phone_predict_p50_c1": ratio(
            p["phone_predict_c1"]["p50_ms"], b["phone_predict_c1"]["p50_ms"]
        ),
    }
    return figures, ratios


def table(figures: dict, ratios: dict) -> list[tuple[str, str]]:
    """Rows ``(figure, "product | baseline | ratio")`` for the printed report."""
    p, b = figures["product"], figures["baseline"]
    nightly = max(r["images_per_s"] for r in figures["nightly"])
    seed = max(r["images_per_s"] for r in figures["seed_client"])
    rows = [
        ("/predict p50 c=1 (ms)", p["predict_c1"]["p50_ms"], b["predict_c1"]["p50_ms"],
         "predict_p50_c1"),
        ("/predict c=8 (req/s)", p["predict_c8"]["requests_per_s"],
         b["predict_c8"]["requests_per_s"], "throughput_c8"),
        ("/predict_batch x32 (img/s)", p["predict_batch_images_per_s"],
         b["predict_batch_images_per_s"], "predict_batch"),
        ("nightly job | seed client (img/s)", nightly, seed, "nightly_over_seed_client"),
        ("PSS all processes (MB)", p["pss_mb_all_processes"], b["pss_mb_all_processes"],
         "memory"),
        ("RSS all processes (MB)", p["rss_mb_all_processes"], b["rss_mb_all_processes"],
         "memory_rss"),
        ("start to first /predict (s)", figures["start_s"]["product"],
         figures["start_s"]["baseline"], "start"),
        ("12 MP photo /predict p50 (ms)", p["phone_predict_c1"]["p50_ms"],
         b["phone_predict_c1"]["p50_ms"], "phone_predict_p50_c1"),
        ("nightly | CPU ceiling (img/s)", nightly, figures["ceiling"]["ceiling_images_per_s"],
         "nightly_cpu_ceiling_fraction"),
    ]  # fmt: skip
    return [
        (f"vs in-process: {name}", f"{ours} | {theirs} | ratio {ratios[key]} "
         f"(goal {GOALS.get(key, '-')})")
        for name, ours, theirs, key in rows
    ]  # fmt: skip


__all__ = ["GOALS", "THREADS", "ceiling", "run", "table"]
