"""Binding TCP ports, with errors a person can act on (no C-core log lines, no tracebacks)."""

from __future__ import annotations

import socket


class PortError(OSError):
    """A port cannot be bound: taken, or the bind address is not an interface of this machine."""


def host_port(host: str, port: int) -> str:
    """``host:port`` for logs, IPv6 addresses in brackets (``[::]:8500``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(host: str, port: int, what: str, listen: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``SO_REUSEADDR`` like the servers set).

    Args:
        host: interface address; ``0.0.0.0`` = all IPv4 interfaces, ``::`` = all.
        port: TCP port (0 = any free port).
        what: ``gRPC`` or ``REST``, for the message.
        listen: also start listening (for a server that takes the socket over).

    Returns:
        The socket; the caller closes it.

    Raises:
        PortError: e.g. ``cannot bind REST port 8501 on 0.0.0.0: Address already in use``.
    """
    where = f"cannot bind {what} port {port} on {host}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise PortError(f"{where}: {exc.strerror or exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        if listen:
            sock.listen(128)
    except OSError as exc:
        sock.close()
        raise PortError(f"{where}: {exc.strerror or exc}") from None
    return sock


def check_free(host: str, port: int, what: str) -> None:
    """Fail early if ``host:port`` cannot be bound now (port 0 always can).

    Raises:
        PortError: see :func:`bind`.
    """
    if port:
        bind(host, port, what).close()
