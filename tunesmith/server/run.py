"""Start the server: bind the address first (so that a port in use is one clear line), then uvicorn."""

from __future__ import annotations

import logging
import socket

from ..errors import TunesmithError
from .settings import ServerSettings

log = logging.getLogger("tunesmith.server")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise TunesmithError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


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
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3,
                            lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
