"""A real server on 127.0.0.1 (uvicorn in a thread, a free port) over the tiny MusicGen checkpoint."""

from __future__ import annotations

import threading
import time

from importlib.util import find_spec

import pytest

if not (find_spec("fastapi") and find_spec("uvicorn") and find_spec("httpx")):
    collect_ignore_glob = ["test_*.py"]  # the server extra is not installed: nothing here can run

from .postgres import postgres, store_url  # noqa: E402,F401  (fixtures: a PostgreSQL of the tests' own)


class ThreadServer:
    """uvicorn serving `app` on a free port of 127.0.0.1 until stop()."""

    def __init__(self, app):
        import uvicorn

        from tunesmith.server.run import bind, uvicorn_config

        self.app = app
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn_config(app, app.state.settings)  # the config `tunesmith serve` runs with
        config.timeout_graceful_shutdown = 1
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs=dict(sockets=[self.sock]), daemon=True)
        self.thread.start()
        while not self.server.started:  # a readiness wait, not a timed assertion
            if not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def make_settings(folder, data, **changes):
    from tunesmith.server.settings import ServerSettings
    from tunesmith.server.worker import WorkerSettings

    worker = WorkerSettings(device="cpu", dtype="float32", **changes.pop("worker", {}))
    return ServerSettings(models=[str(folder)], data=data, worker=worker, **changes)


@pytest.fixture
def start_server(mono_ckpt, tmp_path):
    """start_server(**settings) -> a running ThreadServer (stopped after the test)."""
    from tunesmith.server.app import create_app

    servers = []

    def start(**changes):
        data = changes.pop("data", tmp_path / f"data{len(servers)}")
        server = ThreadServer(create_app(make_settings(mono_ckpt[0], data, **changes)))
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def client_for(mono_ckpt, tmp_path):
    """client_for(**settings) -> (TestClient on http://127.0.0.1, app); the worker runs (lifespan)."""
    from fastapi.testclient import TestClient

    from tunesmith.server.app import create_app

    clients = []

    def make(start_worker=True, **changes):
        data = changes.pop("data", tmp_path / f"tc{len(clients)}")
        app = create_app(make_settings(mono_ckpt[0], data, **changes))
        client = TestClient(app, base_url="http://127.0.0.1")
        if start_worker:
            client.__enter__()
        clients.append((client, start_worker, app))
        return client, app

    yield make
    for client, entered, app in clients:
        if entered:
            client.__exit__(None, None, None)
        else:
            app.state.worker.stop()
            app.state.store.close()


def wait_for(predicate, what: str, limit_s: float = 120.0):
    """Poll until predicate() is truthy; the limit only keeps a broken test from hanging CI."""
    deadline = time.monotonic() + limit_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)
