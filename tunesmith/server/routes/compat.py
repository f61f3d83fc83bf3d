"""mlx-audiogen's routes (/api/health, /api/models, /api/generate, /api/status, /api/audio, GET /api/jobs),
so that its Max for Live device, JUCE plugin and web UI work unchanged."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from ... import __version__
from ...errors import InvalidParameter, TunesmithError
from ...family import FAMILIES
from ..bodies import GenerateIn, compat_names
from ..handlers import plain
from ..jobs import Jobs
from ..loras import job_lora
from ..model_facts import model_facts
from ..registry import FAMILY_ALIASES
from ..schema import AUDIO, errors
from ..spec import plan_job
from ..views import Views


def compat_routes(service: Jobs, views: Views) -> APIRouter:
    router = APIRouter(tags=["compatible"])
    store, worker, registry, settings = service.store, service.worker, service.registry, service.settings

    @router.get("/api/health")
    def health():
        """Liveness, without a token (clients probe it first); 503 when the job store cannot be read."""
        state = {"version": __version__, "worker": "running" if worker.alive else "stopped"}
        try:
            store.count()
        except Exception as err:  # a damaged store, or one the disk took away: said, not a 500
            problem = plain(str(err)) if isinstance(err, TunesmithError) else f"{type(err).__name__}: {plain(str(err))}"
            return JSONResponse({"detail": f"the job store cannot be read: {problem}", "status": "error",
                                 "store": problem, **state}, status_code=503)
        return {"status": "ok", "store": "ok", **state}

    @router.get("/api/models")
    def models():
        """Registered models (-m); the first is the default. Beside mlx-audiogen's fields: family_name, the
        clip lengths this server takes (shortest, max_duration; seconds) and the weights' licence (licence,
        licence_terms; null for a local folder, whose model card says)."""
        loaded = set(worker.loaded_names())
        return [dict(name=e.name, model_type=e.family, is_loaded=e.name in loaded, default=e is registry.default,
                     longest=e.spec.longest, style=e.spec.style, melody=e.spec.melody,
                     **model_facts(e, settings.limits))  # the page's picker: family, lengths, licence
                for e in registry.entries.values()]

    @router.post("/api/generate", responses=errors(413, 429, 507))
    def generate(body: GenerateIn):
        """mlx-audiogen's submit: answers {"id", "status": "queued"} at once."""
        entry = registry.find(body.model)
        if body.style_audio_path and body.model in FAMILY_ALIASES and not entry.spec.style:
            entry = registry.find_style()  # "musicgen" with style audio: the first style model offered
        elif body.melody_path and body.model == "musicgen" and not entry.spec.melody:
            entry = next(iter(registry.melody_models()), entry)  # likewise with a melody, when one is offered
        warning = None
        if body.melody_path and not entry.spec.melody:  # DAW clients send one whatever the model (a sidechain)
            warning = f"melody_path was ignored: {entry.name} cannot follow a melody"
        lora = job_lora(body.lora, settings.lora_dir, settings.worker.lora.get(entry.name, []), entry,
                        worker.fittings)
        if body.output_mode not in (None, "audio"):
            raise InvalidParameter(f"output_mode {body.output_mode[:20]!r}: tunesmith makes audio only")
        options, audio_prompt = service.compat_options(body, entry)
        seed = body.seed if body.seed is not None and body.seed >= 0 else None
        try:
            spec, _ = plan_job(entry, settings.limits, prompt=body.prompt, duration=body.seconds, seed=seed,
                               options=options, audio_prompt=audio_prompt)
        except InvalidParameter as err:  # named as this body names them
            raise type(err)(err.render(compat_names(FAMILIES[entry.family]))) from None
        if lora is not None:
            spec["lora"] = lora  # as /api/jobs stores it: names and scales
        job, _ = service.submit(entry.stored, spec, None, warning=warning)
        return {"id": job.id, "status": "queued"}

    @router.get("/api/status/{job_id}", responses=errors(404))
    def status(job_id: str):
        """queued | running | done | error; a cancelled job reads as error "cancelled"."""
        return views.compat_view(service.find(job_id))

    @router.get("/api/audio/{job_id}", responses={**AUDIO, **errors(404, 409, 410)})
    def audio(job_id: str, fmt: str = Query("wav", max_length=20)):
        """The first clip of a done job; 202 while it is not done."""
        return service.audio_response(service.find(job_id), 0, fmt.lower(), compat=True)

    @router.get("/api/jobs", tags=["jobs"])
    def jobs(limit: int = Query(100, ge=1, le=1000)):
        """Recent jobs, newest first (tunesmith's view: status may also be "cancelled")."""
        return [views.own_view(j) for j in store.recent(limit)]

    return router
