"""Stages 4 to 6: the gateway's REST endpoints and the nightly job, as their callers see them."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.stats import latency_summary


def predict_load(
    url: str,
    files: list[tuple[str, bytes]],
    requests_total: int,
    concurrency: int,
    raw: list[float] | None = None,
) -> dict:
    """``POST /predict`` with one photo per request from ``concurrency`` client threads.

    Args:
        url: gateway base URL, e.g. ``http://127.0.0.1:8080``.
        files: ``(filename, jpeg bytes)`` pairs, cycled.
        requests_total: requests to send after a warm-up of ``concurrency`` requests.
        concurrency: client threads, each with its own keep-alive session.
        raw: if given, every measured duration (seconds) is appended to it (to pool rounds).

    Returns:
        latency summary plus ``"requests_per_s"`` and ``"errors"`` (non-200 answers).

    Raises:
        requests.RequestException: the gateway is unreachable.
    """
    cycle = itertools.cycle(files)
    lock = threading.Lock()
    sessions = threading.local()

    def one() -> tuple[float, int]:
        with lock:
            name, data = next(cycle)
        session = getattr(sessions, "s", None) or requests.Session()
        sessions.s = session
        start = time.perf_counter()
        response = session.post(
            f"{url}/predict", files={"image": (name, data, "image/jpeg")}, timeout=60
        )
        return time.perf_counter() - start, response.status_code

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: one(), range(concurrency)))  # warm-up: connections, caches
        start = time.perf_counter()
        results = list(pool.map(lambda _: one(), range(requests_total)))
        wall = time.perf_counter() - start
    if raw is not None:
        raw.extend(d for d, _ in results)
    summary = latency_summary([d for d, _ in results])
    summary["requests_per_s"] = round(requests_total / wall, 1)
    summary["errors"] = sum(1 for _, status in results if status != 200)
    return summary


def predict_batch_throughput(
    url: str, files: list[tuple[str, bytes]], batch: int = 32, rounds: int = 3
) -> dict:
    """``POST /predict_batch`` with ``batch`` photos per request, sequentially.

    Returns:
        ``{"images", "seconds", "images_per_s", "errors"}``.
    """
    session = requests.Session()
    chunks = [files[i : i + batch] for i in range(0, len(files) - batch + 1, batch)] or [files]

    def send(chunk):
        parts = [("images", (name, data, "image/jpeg")) for name, data in chunk]
        return session.post(f"{url}/predict_batch", files=parts, timeout=120)

    send(chunks[0])  # warm-up
    images = errors = 0
    start = time.perf_counter()
    for _ in range(rounds):
        for chunk in chunks:
            response = send(chunk)
            errors += response.status_code != 200
            images += len(chunk)
    seconds = time.perf_counter() - start
    return {
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_s": round(images / seconds, 1),
        "errors": errors,
    }
