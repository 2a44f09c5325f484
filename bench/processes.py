"""Start the two sides of the side-by-side run and read what they cost: start time and memory.

Start time is process start to the first answered ``/predict`` (warm-up on, as shipped); memory is
the resident memory of every process of a side (the process trees of what was started): summed
RSS, and summed PSS, which counts a page shared by forked processes once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import requests

from gateway.launcher import free_port

ROOT = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(k) for k in f.read().split()]
        except OSError:
            continue
    return kids


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (from ``/proc/<pid>/task/*/children``; Linux)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def _field_kb(path: str, name: str) -> int:
    try:
        with open(path) as f:
            return next(int(line.split()[1]) for line in f if line.startswith(name))
    except (OSError, StopIteration):
        return 0


def tree_memory_mb(pids: list[int]) -> dict[str, float]:
    """Resident memory of the given processes and all their descendants, in MiB (0 if gone).

    Returns:
        ``{"rss": summed VmRSS, "pss": summed Pss}``. RSS counts a page once per process that
        maps it, so forked workers (gunicorn) and shared libraries are counted several times;
        PSS (``/proc/<pid>/smaps_rollup``, Linux >= 4.14) splits each shared page among the
        processes that map it, so the sum is the memory the side really holds.
    """
    rss = pss = 0
    for root in pids:
        for pid in tree_pids(root):
            rss += _field_kb(f"/proc/{pid}/status", "VmRSS:")
            pss += _field_kb(f"/proc/{pid}/smaps_rollup", "Pss:")
    return {"rss": round(rss / 1024, 1), "pss": round(pss / 1024, 1)}


def wait_first_prediction(url: str, photo: bytes, started: float, timeout: float = 180.0) -> float:
    """Poll ``POST {url}/predict`` every 20 ms until it answers 200.

    Args:
        url: base URL of the side.
        photo: a JPEG to send.
        started: ``time.monotonic()`` when the side's first process was spawned.
        timeout: seconds.

    Returns:
        Seconds from ``started`` to the first 200 answer.

    Raises:
        TimeoutError: no 200 answer within ``timeout``.
    """
    while time.monotonic() < started + timeout:
        try:
            response = requests.post(
                f"{url}/predict", files={"image": ("p.jpg", photo, "image/jpeg")}, timeout=30
            )
            if response.status_code == 200:
                return time.monotonic() - started
        except requests.ConnectionError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{url}/predict did not answer 200 within {timeout} s")


class BaselineProcess:
    """``bench.baseline_app`` under gunicorn (gthread, 1 worker x 8 threads), on a free port.

    Args:
        version_dir: the SavedModel version folder to serve.
        threads: ``(intra_op, inter_op)`` TensorFlow threads.
        log_path: file for its output.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        pid: the gunicorn master's process id once started.
    """

    def __init__(self, version_dir: Path, threads: tuple[int, int], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {
            **os.environ,
            "BASELINE_MODEL_DIR": str(version_dir),
            "BASELINE_INTRA_OP": str(threads[0]),
            "BASELINE_INTER_OP": str(threads[1]),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        self._log_path = log_path
        self._process: subprocess.Popen | None = None
        self.pid = 0

    def start(self) -> None:
        """Spawn gunicorn (returns at once; see :func:`wait_first_prediction`)."""
        command = [
            sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads", "8",
            "--bind", f"127.0.0.1:{self.port}", "--timeout", "120",
            "bench.baseline_app:create_app()",
        ]  # fmt: skip
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(
                command, cwd=ROOT, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )
        self.pid = self._process.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def start_baseline(
    stack: ExitStack, version_dir: Path, threads: tuple[int, int], photo: bytes, logs: Path
) -> tuple[BaselineProcess, float]:
    """Start the baseline and wait for its first answer; it is stopped when ``stack`` closes.

    Returns:
        ``(process, seconds from spawn to the first answered /predict)``.
    """
    baseline = BaselineProcess(version_dir, threads, logs / "baseline.log")
    started = time.monotonic()
    baseline.start()
    stack.callback(baseline.stop)
    return baseline, wait_first_prediction(baseline.url, photo, started)


def start_product(stack: ExitStack, env: dict[str, str], photo: bytes, logs: Path):
    """Start the product as ``make serve`` does and wait for its first answer.

    Args:
        stack: both processes are stopped when it closes.
        env: extra gateway environment (e.g. ``CACHE_SIZE=0``).
        photo: a JPEG for the first ``/predict``.
        logs: folder for the two logs.

    Returns:
        ``(server, gateway, seconds from the first spawn to the first answered /predict)``.
    """
    from devtools.local import start_stack

    started = time.monotonic()
    server, gateway = start_stack(
        stack, logs, ports=None, gateway_env=env, gateway_server="gunicorn"
    )
    return server, gateway, wait_first_prediction(gateway.url, photo, started)


__all__ = [
    "BaselineProcess",
    "start_baseline",
    "start_product",
    "tree_memory_mb",
    "wait_first_prediction",
]
