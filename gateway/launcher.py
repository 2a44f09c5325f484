"""Run the gateway as a subprocess on a free local port (tests, the local batch run, benchmarks).

Usage::

    with GatewayProcess({"SERVING_GRPC_ADDRESS": server.grpc_address}) as gateway:
        requests.get(gateway.url + "/health")
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind port 0, read it, close).

    Args:
        host: interface to probe.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class GatewayProcess:
    """The gateway in a child process; a context manager that starts it and stops it.

    Args:
        env: extra environment variables (``SERVING_GRPC_ADDRESS``, ``GATEWAY_API_KEY`` ...), on
            top of this process's environment.
        server: ``"dev"`` (``python -m gateway``, Flask threaded) or ``"gunicorn"``
            (``gateway/gunicorn.conf.py``).
        require_healthy: wait until ``GET /health`` is 200; if False, any HTTP answer will do
            (a gateway whose serving is down answers 503).
        timeout: seconds to wait for start-up.
        log_path: file receiving the child's stdout and stderr; discarded if None.
        port: TCP port to listen on; None picks a free one.

    Attributes:
        url: ``http://127.0.0.1:<port>`` once started.
        port: the TCP port.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        server: str = "dev",
        require_healthy: bool = True,
        timeout: float = 60.0,
        log_path: str | os.PathLike | None = None,
        port: int | None = None,
    ) -> None:
        if server not in ("dev", "gunicorn"):
            raise ValueError(f"server must be 'dev' or 'gunicorn', got {server!r}")
        self._env = dict(env or {})
        self._server = server
        self._require_healthy = require_healthy
        self._timeout = timeout
        self._log_path = log_path
        self._process: subprocess.Popen | None = None
        self._fixed_port = port
        self._deadline = 0.0
        self.port = 0
        self.url = ""

    def _command(self) -> list[str]:
        if self._server == "gunicorn":
            return [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(_REPO / "gateway/gunicorn.conf.py"),
                "--bind",
                f"127.0.0.1:{self.port}",
                "gateway.app:create_app()",
            ]
        return [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(self.port)]

    def start(self) -> GatewayProcess:
        """Start the child and wait until it answers (:meth:`spawn`, then :meth:`wait_ready`).

        Returns:
            self.

        Raises:
            RuntimeError: the child exited or did not become ready within ``timeout``.
        """
        self.spawn()
        self.wait_ready()
        return self

    def spawn(self) -> GatewayProcess:
        """Start the child and return at once (so it can boot while something else starts).

        Returns:
            self, with ``port`` and ``url`` set.
        """
        self.port = self._fixed_port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **self._env, "PYTHONUNBUFFERED": "1"}
        output = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                self._command(), env=env, cwd=_REPO, stdout=output, stderr=subprocess.STDOUT
            )
        finally:
            if output is not subprocess.DEVNULL:
                output.close()
        self._deadline = time.monotonic() + self._timeout
        return self

    def wait_ready(self) -> None:
        """Poll ``GET /health`` every 50 ms until it is 200 (or any answer without
        ``require_healthy``), up to ``timeout`` seconds after :meth:`spawn`.

        Raises:
            RuntimeError: the child exited or did not become ready in time (it is stopped).
        """
        assert self._process is not None, "spawn() first"
        while time.monotonic() < self._deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"gateway exited with code {self._process.returncode} "
                    f"during start-up (log: {self._log_path})"
                )
            status = self._probe()
            if status == 200 or (status is not None and not self._require_healthy):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway not ready on {self.url} within {self._timeout} s")

    def _probe(self) -> int | None:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after ``timeout`` seconds) and reap it."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    @property
    def pid(self) -> int | None:
        """The child's process id (the gunicorn master or the dev server); None when stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has exited by itself (negative: killed by that
        signal); None while it runs or after :meth:`stop`."""
        return self._process.poll() if self._process is not None else None

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
