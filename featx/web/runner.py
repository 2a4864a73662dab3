"""runner: uvicorn with featx's defaults: loopback, graceful drain on SIGINT/SIGTERM, exit 0."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import threading
from typing import Iterator

import uvicorn

TOKEN_ENV = "FEATX_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DRAIN_S = 30  # seconds in-flight requests get to finish after SIGINT/SIGTERM


def resolve_token(token: str | None) -> str | None:
    """``--token``, else the ``FEATX_TOKEN`` environment variable, else None (no auth)."""
    return token or os.environ.get(TOKEN_ENV) or None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_warning(host: str, token: str | None) -> str | None:
    """The warning to show when the server is reachable beyond this machine without a token."""
    if token or is_loopback(host):
        return None
    return (f"serving on {host} without a token: anyone who can reach this machine can use it; "
            f"pass `token` (or set {TOKEN_ENV})")


class _Server(uvicorn.Server):
    """uvicorn's server, but a SIGINT/SIGTERM only drains and returns: uvicorn would re-raise the
    signal afterwards (exit 130 or -15), and a drained server has exited cleanly."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def run_server(app, host: str = DEFAULT_HOST, port: int = 8000, log_level: str = "warning",
               drain_s: int = DRAIN_S) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; in-flight requests get ``drain_s`` seconds to finish
    (a second Ctrl-C stops at once). Returns normally."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=drain_s, lifespan="on",
                            server_header=False, h11_max_incomplete_event_size=64 * 1024)
    _Server(config).run()


def check_port(host: str, port: int) -> None:
    """Before any work: ``port`` is valid and free on ``host`` (FeatxError otherwise)."""
    import socket

    from featx.errors import FeatxError

    if not 0 < port < 65536:
        raise FeatxError(f"`port` must be between 1 and 65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as e:
            raise FeatxError(f"cannot listen on {host}:{port} (`port`): {e.strerror or e}") from None
