"""The app: a thin shell over the job store and the worker, wired here.

Two sets of routes share one store: mlx-audiogen's (routes/compat.py: /api/generate, /api/status,
/api/audio, ...), so that its Max for Live device, JUCE plugin and web UI work unchanged, and tunesmith's
own (routes/jobs.py: /api/jobs..., /api/uploads), which take everything `tunesmith generate` takes. The
bodies are in bodies.py, the views of a job in views.py, what the routes share in jobs.py, and every
error is {"detail": "one line"} (handlers.py).
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..errors import InvalidParameter
from .docs import router as offline_docs
from .guard import Guard
from .handlers import answer_unrouted, install_error_handlers
from .jobs import Jobs
from .loras import lora_routes
from .redact import server_places
from .registry import Registry
from .routes.compat import compat_routes
from .routes.jobs import job_routes
from .schema import EVERY_ROUTE
from .settings import ServerSettings
from .stores import open_store
from .uploads import UploadSlots, longest_upload
from .views import Views
from .worker import Worker

STATIC = Path(__file__).parent / "static"


def served_loras(settings: ServerSettings, registry: Registry) -> list:
    """serve --lora NAME@SCALE...: found in --lora-dir and checked, for the default model (whose family must
    take adapters); recorded in the worker's settings, which merges them as the model loads."""
    from ..family import FAMILIES
    from .loras import parse_named

    running = parse_named(settings.lora, settings.lora_dir)
    default = registry.default
    if running and "lora" not in FAMILIES[default.family].loading:
        takers = " and ".join(s.display for s in FAMILIES.values() if "lora" in s.loading)
        raise InvalidParameter(f"--lora applies to {takers} models: the default model {default.name} is "
                               f"{FAMILIES[default.family].display}")
    settings.worker.lora = {default.name: running} if running else {}
    settings.worker.lora_dir = settings.lora_dir
    return running


def create_app(settings: ServerSettings, registry: Registry | None = None, make_worker=Worker) -> FastAPI:
    """The app for checked settings; the registry is described from settings.models when not given.
    make_worker(store, registry, worker settings) gives what runs the jobs (a cluster's ingress: a view of
    workers in other processes)."""
    settings.checked()
    registry = registry or Registry.describe(settings.models)
    running = served_loras(settings, registry)
    store = open_store(settings.data, settings.store, settings.repair_store, settings.lease_s)
    worker = make_worker(store, registry, settings.worker)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        try:
            yield
        finally:
            await asyncio.to_thread(worker.stop)
            store.close()

    app = FastAPI(title="tunesmith", version=__version__, lifespan=lifespan, responses=EVERY_ROUTE, docs_url=None,
                  description="Local music generation: jobs survive restarts. mlx-audiogen's routes "
                              "(/api/generate, /api/status, /api/audio) and tunesmith's own (/api/jobs, "
                              "/api/uploads).")
    app.state.store, app.state.worker, app.state.registry, app.state.settings = store, worker, registry, settings
    slots = app.state.upload_slots = UploadSlots(settings.max_uploads)
    max_upload_seconds = settings.upload_seconds or longest_upload(registry, settings.limits)
    places = app.state.places = server_places(store.folder, settings.limits.media_dirs,
                                              [e.spec.folder for e in registry.entries.values() if e.spec.folder],
                                              settings.lora_dir)
    install_error_handlers(app)
    service, views = Jobs(store, worker, registry, settings), Views(worker, registry, places)
    # /docs from the package (Swagger UI without a CDN)
    routers = [compat_routes(service, views), job_routes(service, views, slots, max_upload_seconds), offline_docs,
               lora_routes(settings.lora_dir, running, registry.default.name)]
    for router in routers:
        app.include_router(router)
    answer_unrouted(app, routers)
    if STATIC.is_dir():
        app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    # Outermost last: the Guard sees every request first, then CORS answers listed origins' preflights.
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors, allow_methods=["*"],
                       allow_headers=["Authorization", "Content-Type", "Idempotency-Key"])
    app.add_middleware(Guard, settings=settings)
    return app
