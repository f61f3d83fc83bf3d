"""Start the server: bind the address first (so that a port in use is one clear line), then uvicorn."""

from __future__ import annotations

import functools
import logging
import socket

from ..errors import TunesmithError
from .settings import ServerSettings

log = logging.getLogger("tunesmith.server")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when their proto says TCP, and
    # without it each request after the first on a kept-open connection waits ~40 ms (Nagle, delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise TunesmithError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app, settings: ServerSettings):
    """The uvicorn.Config for `app`: `tunesmith serve` and the tests' server both run with it."""
    import uvicorn

    from .connections import Connection

    connection = functools.partial(Connection, max_connections=settings.max_connections,
                                   head_timeout_s=settings.head_timeout_s)
    return uvicorn.Config(app, http=connection, log_level="warning", access_log=False, lifespan="on",
                          timeout_graceful_shutdown=3, timeout_keep_alive=settings.keep_alive_s,
                          h11_max_incomplete_event_size=settings.max_head_bytes)


def serve(settings: ServerSettings):
    """Run until Ctrl-C (or SIGTERM): the running job stops at its next step and is queued again."""
    import uvicorn

    from .app import create_app

    app = create_app(settings)  # models described, data folder opened and locked: errors before listening
    sock = bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info("serving http://%s:%d (page /, API docs /docs); models %s; data in %s", shown, port,
             ", ".join(app.state.registry.entries), settings.data)
    uvicorn.Server(uvicorn_config(app, settings)).run(sockets=[sock])
