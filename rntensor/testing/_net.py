"""Loopback networking shared by the servers: free ports, plain HTTP requests, host checks."""

from __future__ import annotations

import socket
import urllib.request

__all__ = ["LOOPBACK", "free_port"]

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _urlopen(req: str | urllib.request.Request, timeout_s: float) -> None:
    """One HTTP request to a loopback server, never through an http_proxy from the env."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    opener.open(req, timeout=timeout_s).close()


def _check_loopback(host: str) -> None:
    if host not in (LOOPBACK, "localhost"):
        raise ValueError(f"only loopback hosts are allowed, got {host!r}; use {LOOPBACK!r}")
