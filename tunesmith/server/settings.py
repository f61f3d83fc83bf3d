"""What `tunesmith serve` is started with, checked before it listens."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidParameter
from ..paths import data_root
from .spec import Limits
from .stores import check_store_url
from .worker import WorkerSettings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ANY_ADDRESS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServerSettings:
    models: list[str] = field(default_factory=lambda: ["small"])  # the first is the default
    host: str = "127.0.0.1"
    port: int = 8420
    data: Path | None = None  # default: data_root() / "server"
    max_queue: int = 100  # queued and running jobs; more are answered 429
    media_dirs: list[Path] = field(default_factory=list)
    token: str | None = None
    cors: list[str] = field(default_factory=list)  # browser origins allowed besides the server's own
    body_limit: int = 256 * 1024  # bytes of a JSON body
    upload_limit: int = 32 * 1024 * 1024  # bytes of an uploaded audio file
    upload_seconds: float | None = None  # decoded length of an upload; None: the longest a served model takes
    max_uploads: int = 2  # uploads received at once; more are answered 429
    limits: Limits = field(default_factory=Limits)
    # The connection layer: what a slow or greedy client may hold (see connections.py).
    max_connections: int = 200  # open at once; a request on one more is answered 503
    head_timeout_s: float = 10.0  # a request head must arrive within this, from its first byte or the connect
    keep_alive_s: float = 5.0  # an idle kept-open connection is closed after this
    max_head_bytes: int = 32 * 1024  # a longer request head is answered 400
    repair_store: bool = False  # a damaged job store is kept aside and a fresh one begun, instead of refusing
    store: str | None = None  # None: SQLite in `data`; postgresql://USER@HOST:PORT/DB: shared by many servers
    lease_s: float | None = None  # PostgreSQL: a dead server's job runs again this long after (default 30 s)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    lora_dir: Path | None = None  # LoRA adapters clients may name (GET /api/loras); never a client's path
    lora: list[str] = field(default_factory=list)  # NAME[@SCALE] in lora_dir: merged into the default model

    def checked(self) -> "ServerSettings":
        """Refuse a start that would be unsafe or cannot work, with one line; resolve the folders."""
        if not is_loopback(self.host) and not self.token:
            raise InvalidParameter(f"--host {self.host} opens the server to the network: give --token TOKEN too "
                                   "(clients then send 'Authorization: Bearer TOKEN'), or keep the default "
                                   "127.0.0.1")
        if self.token is not None and len(self.token) < 8:
            raise InvalidParameter("--token must be at least 8 characters long")
        if not 0 <= self.port <= 65535:
            raise InvalidParameter(f"--port must be from 0 to 65535, got {self.port}")
        if self.max_queue < 1:
            raise InvalidParameter(f"--max-queue must be at least 1, got {self.max_queue}")
        for value, what in ((self.max_connections, "max_connections"), (self.head_timeout_s, "head_timeout_s"),
                            (self.keep_alive_s, "keep_alive_s"), (self.max_head_bytes, "max_head_bytes")):
            if not value > 0:
                raise InvalidParameter(f"{what} must be positive, got {value}")
        if self.max_uploads < 1:
            raise InvalidParameter(f"max_uploads must be at least 1, got {self.max_uploads}")
        if self.upload_seconds is not None and not self.upload_seconds > 0:
            raise InvalidParameter(f"upload_seconds must be a positive number of seconds, got {self.upload_seconds}")
        if self.worker.loaded < 1:
            raise InvalidParameter(f"--loaded must be at least 1, got {self.worker.loaded}")
        if self.lora_dir is not None:
            resolved = Path(self.lora_dir).expanduser().resolve()
            if not resolved.is_dir():
                raise InvalidParameter(f"--lora-dir {self.lora_dir} is not a folder")
            self.lora_dir = resolved
        if self.lora and self.lora_dir is None:
            raise InvalidParameter("--lora NAME@SCALE names an adapter of --lora-dir DIR: give --lora-dir too")
        dirs = []
        for d in self.media_dirs:
            resolved = Path(d).expanduser().resolve()
            if not resolved.is_dir():
                raise InvalidParameter(f"--media-dir {d} is not a folder")
            dirs.append(resolved)
        self.media_dirs = dirs
        self.limits = Limits(self.limits.max_prompt_chars, self.limits.max_duration, self.limits.max_variations,
                             tuple(dirs))
        self.data = Path(self.data).expanduser() if self.data else data_root() / "server"
        check_store_url(self.store)
        self.cors = [o.rstrip("/") for o in self.cors]
        return self
