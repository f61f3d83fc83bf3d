"""tunesmith serve: the HTTP job server (its packages are an extra)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import InvalidParameter, TunesmithError

log = logging.getLogger("tunesmith")


def cmd_serve(args) -> int:
    from importlib.util import find_spec

    # The server's packages are an extra: say how to get them rather than fail on an import.
    multipart = find_spec("python_multipart") or find_spec("multipart")
    if not (find_spec("fastapi") and find_spec("uvicorn") and multipart):
        raise TunesmithError("tunesmith serve needs fastapi, uvicorn and python-multipart: "
                             "pip install 'tunesmith[server]'")
    from ..server.run import serve
    from ..server.settings import ServerSettings
    from ..server.worker import WorkerSettings

    for value, what in ((args.max_batch, "--max-batch"), (args.keep_jobs, "--keep-jobs")):
        if value < 1:
            raise InvalidParameter(f"{what} must be at least 1, got {value}")
    if not args.keep_days > 0:
        raise InvalidParameter(f"--keep-days must be a positive number of days, got {args.keep_days}")
    worker = WorkerSettings(device=args.device, dtype=args.dtype, loaded=args.loaded, max_batch=args.max_batch,
                            keep_days=args.keep_days, keep_jobs=args.keep_jobs)
    if args.stems_model:
        worker.stems_models = stems_models(args.stems_model)
    settings = ServerSettings(models=args.models or ["small"], host=args.host, port=args.port,
                              data=Path(args.data) if args.data else None, max_queue=args.max_queue,
                              media_dirs=[Path(d) for d in args.media_dir], token=args.token or None,
                              cors=args.cors, worker=worker, repair_store=args.repair_store,
                              store=args.store or None, lease_s=args.lease,
                              lora_dir=Path(args.lora_dir) if args.lora_dir else None, lora=args.lora)
    try:
        if args.ray:
            if not find_spec("ray"):
                raise TunesmithError("tunesmith serve --ray needs Ray Serve: pip install 'tunesmith[cluster]'")
            from ..server.cluster import Replicas, serve_on_ray

            serve_on_ray(settings, args.ray, Replicas.parse(args.replicas))
        else:
            serve(settings)
    except KeyboardInterrupt:  # uvicorn has shut down cleanly and passes the signal on
        pass
    log.info("stopped")
    return 0


def stems_models(given: list[str]) -> dict:
    """--stems-model values -> the public name each is offered under (a name as it is; a folder by its bag's
    NAME.yaml, never its path) -> what load_stem_model takes. A folder is checked now, not at the first job."""
    from ..hub import STEM_MODELS
    from ..stems.load import find_bag

    offered = {}
    for model in given:
        name = model if model in STEM_MODELS else find_bag(model).stem
        if name in offered:
            raise InvalidParameter(f"--stems-model: two models are offered as {name}")
        offered[name] = model
    return offered
