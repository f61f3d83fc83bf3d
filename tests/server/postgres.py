"""A PostgreSQL server of the tests' own: Debian's initdb and pg_ctl, data in a temporary folder, listening
on 127.0.0.1 only (no Unix socket), stopped and deleted at the end.

PostgreSQL refuses to run as root; as root the server runs as the unprivileged `postgres` user (Debian's
package makes it), else as a `tunesmith-pg` user made here.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from importlib.util import find_spec
from pathlib import Path

import pytest

SUPERUSER = "tunesmith"


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian keeps each major version apart), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path and shutil.which("initdb") else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _runner() -> tuple[list[str], str | None]:
    """The command prefix that drops root, and the user it runs as (None: this user is not root)."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "tunesmith-pg"):
        try:
            pwd.getpwnam(name)
            return ["runuser", "-u", name, "--"], name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "tunesmith-pg"],
                   check=True, capture_output=True)
    return ["runuser", "-u", "tunesmith-pg", "--"], "tunesmith-pg"


class PostgresServer:
    """initdb'd at construction, started by start(); url() names a database on it."""

    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.prefix, user = _runner()
        self.folder = Path(tempfile.mkdtemp(prefix="tunesmith-pg-"))
        if user is not None:
            shutil.chown(self.folder, user)
        self.data = self.folder / "data"
        self.port = _free_port()
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--no-sync")
        self.running = False

    def _run(self, tool: str, *args: str):
        done = subprocess.run([*self.prefix, str(self.bin / tool), *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self):
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
                   "-c fsync=off -c max_connections=50")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")
        self.running = True

    def stop(self, mode: str = "fast"):
        """Stop: `fast` disconnects clients and shuts down cleanly, `immediate` as a crash would."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        """A fresh, empty database -> its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self):
        if self.running:
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


# ---- fixtures (imported by tests/server/conftest.py)
_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL server (skipped, saying why, where it cannot run)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    if find_spec("psycopg") is None:
        pytest.skip("psycopg is not installed: pip install -e '.[cluster]'")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.cluster, pytest.mark.slow])])
def store_url(request):
    """None (SQLite in the data folder) or a fresh PostgreSQL database's address: a test that takes it runs
    against both stores, so that their behaviour is proven the same."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").new_database(f"t{next(_databases)}")
