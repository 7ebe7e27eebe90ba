"""Run the app on uvicorn until a stop signal, then drain: in-flight requests finish, then the process ends.

The listening socket is bound here, before uvicorn starts, so a port in use is an ``OSError`` the command line
reports in one line, and port 0 gives a free port whose number is known before serving starts.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

from serve.settings import ServerSettings

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_server(app: ASGIApp, settings: ServerSettings, *, ready: Callable[[str], None] | None = None,
               log_level: str = "info") -> None:
    """Serve ``app`` at ``settings.host:port``; ``ready(url)`` is called once the socket listens. Returns after a
    stop signal, once the requests in flight are done (or ``settings.shutdown_timeout`` ran out)."""
    family = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.create_server((settings.host, settings.port), family=family)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, lifespan="on", log_level=log_level, timeout_graceful_shutdown=settings.shutdown_timeout)
    server = uvicorn.Server(config)
    if ready is not None:
        ready(f"http://{f'[{host}]' if family == socket.AF_INET6 else host}:{port}")
    with sock, _stop_signals_return():
        server.run(sockets=[sock])


@contextlib.contextmanager
def _stop_signals_return() -> Iterator[None]:
    """uvicorn handles the stop signals while it runs, then raises the signal again so that the handler in place
    before it decides what happens next; by default that kills the process. A drained server has done what a
    stop signal asks, so the handler it finds here only lets the process carry on to a clean exit. (Signals
    reach the main thread only; a server in another thread is stopped by its owner, and uvicorn does the same.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
