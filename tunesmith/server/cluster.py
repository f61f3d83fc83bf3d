"""The server on a Ray Serve cluster: the same HTTP app (routes, page, security rules) in stateless
`Ingress` replicas, and `Generation` replicas that each load their models once and claim jobs from the
PostgreSQL store (leased: a replica that dies loses its jobs to another). Ray places, restarts and
scales the replicas; PostgreSQL is the one place jobs live.

Two ways to deploy:
- `tunesmith serve --ray local|ADDRESS --store postgresql://... --replicas N|MIN:MAX -m MODEL ...`
- Ray's own tools: `serve run tunesmith.server.cluster:app store=postgresql://... models=small data=/shared`
  (or a `serve deploy` config naming `tunesmith.server.cluster:app` as its import_path, with these args).

Every node must see the same --data folder (the audio files live there): a shared mount. Each replica
proves it at start (shared_folder.py: its probe file, read by the replicas that start after it).

This module imports Ray at its top: it is only imported where Ray is wanted.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from ray import serve

from ..errors import InvalidParameter, TunesmithError
from .settings import ServerSettings
from .shared_folder import SharedFolder
from .stores import POSTGRES_SCHEMES

log = logging.getLogger("tunesmith.server")

APP_NAME = "tunesmith"
REPLICA_HEADER = "X-Tunesmith-Replica"  # which ingress replica answered (any may answer anything)
JOBS_PER_REPLICA = 4  # autoscaling aims at this many queued or running jobs per generation replica
PROXY_READY_S = 60.0  # `--ray local`: how long Ray's controller gives its HTTP proxy to start (Ray's 5 s is too
# short on a loaded laptop: it kills the proxy, and serve.start gives up although another is coming)
PROXY_WAIT_S = 300.0  # how long the start waits for the proxies that Ray restarted
SYNC_S = 1.0  # how often a generation replica shares its jobs' progress and looks for cancel requests


@dataclass(frozen=True)
class Replicas:
    """How many generation replicas: a fixed number, or autoscaled between min and max."""

    min: int
    max: int

    @classmethod
    def parse(cls, text: str) -> "Replicas":
        try:
            low, _, high = str(text).partition(":")
            replicas = cls(int(low), int(high or low))
        except ValueError:
            raise InvalidParameter(f"--replicas must be N or MIN:MAX (whole numbers), got {text!r}") from None
        if not 1 <= replicas.min <= replicas.max:
            raise InvalidParameter(f"--replicas needs 1 <= MIN <= MAX, got {text!r}")
        return replicas

    @property
    def fixed(self) -> bool:
        return self.min == self.max


def local_only_ray():
    """`--ray local`: Ray's own servers (GCS, raylet, workers, agents) listen on 127.0.0.1 only. On Linux Ray
    takes the machine for a cluster node and gives it the address other machines reach it by, binding its
    servers there; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes it a local-only Ray, as on a laptop: the node's
    address is 127.0.0.1, and every process Ray starts inherits the setting."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # read when Ray was imported, here already


def replica_grpc_on_loopback():
    """Ray Serve binds each replica's inter-deployment gRPC server to [::] (every interface) whatever the node's
    address; on a local-only Ray (see local_only_ray) it is bound to 127.0.0.1, where its callers reach it.
    Runs as this module is imported in a replica's process, before the replica starts that server."""
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER:
        return
    from ray.serve._private import replica

    bind = replica.add_port_to_grpc_server
    if getattr(bind, "loopback", False):
        return

    def on_loopback(server, address: str):
        return bind(server, address.replace("[::]:", "127.0.0.1:", 1))

    on_loopback.loopback = True
    replica.add_port_to_grpc_server = on_loopback


replica_grpc_on_loopback()


def replica_id(deployment: str) -> str:
    return f"{deployment}-{serve.get_replica_context().replica_id.unique_id}"


def checked_for_cluster(settings: ServerSettings) -> ServerSettings:
    settings.checked()
    scheme = (settings.store or "").split("://", 1)[0].lower()
    if scheme not in POSTGRES_SCHEMES:
        raise InvalidParameter("--ray needs --store postgresql://USER@HOST:PORT/DB: the replicas share their jobs "
                               "there")
    settings.data = Path(settings.data).resolve()
    return settings


class SharedWorker:
    """What the routes ask of the worker, on an ingress replica: the workers run in the generation replicas,
    so progress and cancel requests go through the store (they sync with it every SYNC_S)."""

    alive = True  # the generation replicas' health is Ray's: it restarts one whose worker stopped

    def __init__(self, store, registry=None, settings=None):
        from .fittings import Fittings

        self.store = store
        self.fittings = Fittings(store.folder)  # what the generation replicas recorded as their models loaded
        self.progress = _StoredProgress(store)
        self.cancelling = _StoredCancels(store)

    def start(self):
        pass

    def stop(self, timeout: float = 0.0):
        pass

    def wake(self):
        pass  # the store tells the generation replicas of each new job (LISTEN/NOTIFY)

    def cancel_running(self, job_id: str):
        self.store.request_cancel(job_id)

    def loaded_names(self) -> list[str]:
        return []  # each generation replica has its own


class _StoredProgress:
    def __init__(self, store):
        self.store = store

    def get(self, job_id: str, default=(0, 0)) -> tuple[int, int]:
        return self.store.progress_of(job_id)


class _StoredCancels:
    def __init__(self, store):
        self.store = store

    def __contains__(self, job_id: str) -> bool:
        return self.store.cancel_requested(job_id)


@serve.deployment(name="Generation", ray_actor_options={"num_cpus": 1}, health_check_period_s=10,
                  graceful_shutdown_timeout_s=30)
class Generation:
    """One replica per GPU (or CPU node): the server's worker (batching, models kept loaded), claiming
    jobs from the shared store."""

    def __init__(self, settings: ServerSettings):
        from .app import served_loras
        from .registry import Registry
        from .stores import open_store
        from .worker import Worker

        settings = checked_for_cluster(settings)
        self.store = open_store(settings.data, settings.store, lease_s=settings.lease_s)
        self.probe = SharedFolder(self.store, replica_id("Generation"))
        seen = self.probe.check()
        log.info("data folder %s: shared (%d other replicas' probes read)", self.store.folder, seen)
        registry = Registry.describe(settings.models)
        served_loras(settings, registry)  # --lora and --lora-dir: each job's adapter set swapped in here too
        self.worker = Worker(self.store, registry, settings.worker)
        self.worker.start()
        self.store.listen(self.worker.wake)  # a job added through any ingress replica starts at once
        self._stopping = threading.Event()
        self._sync = threading.Thread(target=self._sync_loop, name="tunesmith-sync", daemon=True)
        self._sync.start()

    def _sync_loop(self):
        """Every SYNC_S: the running jobs' progress into the store, cancel requests from it into the worker."""
        while not self._stopping.wait(SYNC_S):
            try:
                for job_id in self.store.sync_running(dict(self.worker.progress)):
                    self.worker.cancel_running(job_id)
            except Exception as err:  # the store away for a while: said, and tried again
                log.warning("job store: progress not shared (%s)", str(err).splitlines()[0] if str(err) else err)

    def check_health(self):
        """Ray restarts a replica whose worker thread has died."""
        if not self.worker.alive:
            raise RuntimeError("the generation worker has stopped")

    def record_autoscaling_stats(self) -> dict:
        """The queue as every replica sees it (the store is shared): what queued_jobs_policy scales on."""
        return {"active_jobs": float(self.store.count())}

    def __del__(self):
        """A graceful stop: the running batch stops at its next step and is queued again."""
        worker, store = getattr(self, "worker", None), getattr(self, "store", None)
        if getattr(self, "_stopping", None) is not None:
            self._stopping.set()
            self._sync.join(5)
        if worker is not None:
            worker.stop()
        if getattr(self, "probe", None) is not None:
            self.probe.remove()
        if store is not None:
            store.close()


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Ingress:
    """The HTTP app without a worker: every answer comes from the shared store and folder."""

    def __init__(self, settings: ServerSettings, generation=None):
        self.settings = checked_for_cluster(settings)
        self.generation = generation  # binds the generation replicas into the application

    def __serve_build_asgi_app__(self):
        from .app import create_app

        app = create_app(self.settings, make_worker=SharedWorker)
        self.probe = SharedFolder(app.state.store, replica_id("Ingress"))
        self.probe.check()
        app.add_middleware(ReplicaHeader, replica=serve.get_replica_context().replica_id.unique_id)
        return app

    def __del__(self):
        if getattr(self, "probe", None) is not None:
            self.probe.remove()


class ReplicaHeader:
    """ASGI middleware: every answer says which ingress replica gave it (streamed answers too)."""

    def __init__(self, app, replica: str):
        self.app, self.header = app, (REPLICA_HEADER.lower().encode(), replica.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def sending(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, sending)


def build(settings: ServerSettings, replicas: Replicas, ingress_replicas: int = 2, gpus: bool = False):
    """The Ray Serve application: `ingress_replicas` HTTP replicas and the generation replicas."""
    settings = checked_for_cluster(settings)
    resources = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
    if replicas.fixed:
        generation = Generation.options(num_replicas=replicas.min, ray_actor_options=resources)
    else:
        generation = Generation.options(ray_actor_options=resources, autoscaling_config=dict(
            min_replicas=replicas.min, max_replicas=replicas.max, upscale_delay_s=10, downscale_delay_s=300,
            policy=dict(policy_function="tunesmith.server.cluster:queued_jobs_policy")))
    return Ingress.options(num_replicas=ingress_replicas, **ingress_limits(settings)).bind(
        settings, generation.bind(settings))


def ingress_limits(settings: ServerSettings) -> dict:
    """The single-machine server's connection cap, as near as Ray Serve has it: requests each ingress replica
    takes at once (an SSE stream holds one for its whole life), and past those as many wait; more are answered
    503 by Ray's proxy (its own text, with Retry-After). Ray's proxy has no deadline for a request's head, no
    cap on idle connections and no setting for the head's size (uvicorn's default, 16 KiB, holds): put a
    reverse proxy (nginx, a cloud load balancer) in front for those."""
    return dict(max_ongoing_requests=settings.max_connections, max_queued_requests=settings.max_connections)


def http_options(settings: ServerSettings, port: int) -> dict:
    """Ray's HTTP proxies: the address, and the single-machine server's keep-alive. No request_timeout_s: it
    would cut SSE streams and long downloads (the single-machine server has no such deadline either)."""
    return {"host": settings.host, "port": port, "keep_alive_timeout_s": settings.keep_alive_s}


def queued_jobs_policy(ctx) -> tuple[int, dict]:
    """Ray Serve's autoscaling policy for the generation replicas: enough for JOBS_PER_REPLICA queued or
    running jobs each (they take work from the store, so Ray's request counts never see it)."""
    reported = (ctx.aggregated_metrics or {}).get("active_jobs", {})
    active = max(reported.values(), default=0.0)
    wanted = math.ceil(active / JOBS_PER_REPLICA)
    return max(ctx.capacity_adjusted_min_replicas, min(ctx.capacity_adjusted_max_replicas, wanted)), {}


def app(args: dict):
    """The application builder for Ray's own tools: `serve run tunesmith.server.cluster:app store=URL
    models=NAME[,NAME] data=/shared [replicas=N|MIN:MAX] [device=cuda] [host=NAME|0.0.0.0] [token=...]
    [lease_s=30]`. `host` is the name clients reach the proxies by (0.0.0.0: any, which needs a token;
    TUNESMITH_TOKEN and TUNESMITH_STORE in the nodes' environment keep secrets out of the config)."""
    from .worker import WorkerSettings

    known = {"store", "models", "data", "replicas", "device", "dtype", "host", "token", "lease_s", "ingress_replicas"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise InvalidParameter(f"unknown argument {unknown[0]!r}: known are {', '.join(sorted(known))}")
    settings = ServerSettings(models=str(args.get("models", "small")).split(","), data=args.get("data"),
                              host=args.get("host", "127.0.0.1"),
                              store=args.get("store") or os.environ.get("TUNESMITH_STORE"),
                              token=args.get("token") or os.environ.get("TUNESMITH_TOKEN"),
                              lease_s=float(args["lease_s"]) if "lease_s" in args else None,
                              worker=WorkerSettings(device=args.get("device", "auto"), dtype=args.get("dtype")))
    return build(settings, Replicas.parse(args.get("replicas", "1")), int(args.get("ingress_replicas", 2)),
                 gpus=settings.worker.device == "cuda")


def replica_refusal(report: str) -> str | None:
    """The one line a replica refused to start with (a TunesmithError: the folder not shared, a bad model), out
    of Ray's report of the failed deployment (the replicas' tracebacks); None if there is none."""
    from .. import errors

    names = "|".join(n for n, c in vars(errors).items() if isinstance(c, type) and issubclass(c, TunesmithError))
    found = re.findall(rf"\b(?:{names}): (.+)", report)
    return found[-1].strip() if found else None


def deployment_reports() -> str:
    """What Ray says of each deployment of the application (a failed one: its replicas' last traceback)."""
    try:
        status = serve.status().applications.get(APP_NAME)
        return "\n".join(d.message for d in status.deployments.values()) if status else ""
    except Exception:  # Ray itself in trouble: its own report stands
        return ""


def start_proxies(http: dict):
    """serve.start, which raises when Ray's controller kills a proxy that was slow to start (a loaded machine)
    although the controller starts another, with a longer deadline each time, or when its own minute is up:
    then wait for the proxy that comes."""
    import time

    import ray

    try:
        serve.start(http_options=http)
        return
    except (ray.exceptions.ActorDiedError, TimeoutError):
        log.warning("Ray's HTTP proxy was slow to start (a busy machine?): waiting for the one Ray starts again")
    serve.start(http_options=http)  # the controller runs: this connects to it
    deadline = time.monotonic() + PROXY_WAIT_S
    while not (proxies := serve.status().proxies) or any(s != "HEALTHY" for s in proxies.values()):
        if time.monotonic() > deadline:
            raise TunesmithError(f"Ray's HTTP proxy did not start in {PROXY_WAIT_S:.0f} s (proxies: "
                                 f"{', '.join(sorted({getattr(s, 'value', s) for s in proxies.values()})) or 'none'})")
        time.sleep(0.5)


def serve_on_ray(settings: ServerSettings, address: str, replicas: Replicas):
    """`tunesmith serve --ray`: start Ray locally (`local`: a head on 127.0.0.1 for a one-machine trial) or
    join the cluster at `address`, run the application, and stop it on Ctrl-C or SIGTERM."""
    import ray

    from .run import bind
    from .store_postgres import shown_url

    settings = checked_for_cluster(settings)
    if address == "local":
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
        os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", str(PROXY_READY_S))  # read by the controller
        local_only_ray()
        ray.init(include_dashboard=False, num_cpus=max(os.cpu_count() or 1, replicas.max),
                 _node_ip_address="127.0.0.1", logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    port = settings.port
    if port == 0:  # Ray's proxy wants a number: take one that is free now
        sock = bind(settings.host, 0)
        port = sock.getsockname()[1]
        sock.close()
    gpus = settings.worker.device == "cuda" or (settings.worker.device == "auto"
                                                 and ray.cluster_resources().get("GPU", 0) >= 1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        start_proxies(http_options(settings, port))
        try:
            serve.run(build(settings, replicas, gpus=gpus), name=APP_NAME, route_prefix="/")
        except RuntimeError as err:  # a replica refused to start: its one line, not Ray's report
            line = replica_refusal(f"{err}\n{deployment_reports()}")
            if line is None:
                raise
            raise TunesmithError(line) from None
        shown = f"[{settings.host}]" if ":" in settings.host else settings.host
        log.info("serving http://%s:%d on Ray (%s generation replicas%s); jobs in %s; data in %s", shown, port,
                 replicas.min if replicas.fixed else f"{replicas.min} to {replicas.max}", ", GPU each" if gpus else "",
                 shown_url(settings.store), settings.data)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()  # replicas stop gracefully: running jobs are queued again
        ray.shutdown()
