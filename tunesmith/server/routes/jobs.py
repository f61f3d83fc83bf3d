"""tunesmith's own routes: /api/jobs (everything `tunesmith generate` takes; each family's options from
the family table), a job's audio, cancel, delete and events, stems of a done job, and /api/uploads."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Optional

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from ...errors import InvalidParameter
from ...family import FAMILIES
from ...params import METER
from ..bodies import JobIn, StemsIn, family_options, field_of
from ..handlers import check_header_text
from ..jobs import Jobs
from ..loras import job_lora
from ..schema import AUDIO, EVENTS, REPEATED, TEXT_PATTERN, errors
from ..spec import plan_job, prompt_text
from ..store import FINISHED
from ..uploads import OPENAPI_BODY, UploadSlots, receive_upload
from ..views import Views

log = logging.getLogger("tunesmith.server")

STEM_NAMES = {"htdemucs_6s": ("drums", "bass", "other", "vocals", "guitar", "piano")}
FOUR_STEMS = ("drums", "bass", "other", "vocals")


def job_routes(service: Jobs, views: Views, slots: UploadSlots, max_upload_seconds: float) -> APIRouter:
    router = APIRouter(tags=["jobs"])
    store, worker, registry, settings = service.store, service.worker, service.registry, service.settings
    find, own_view = service.find, views.own_view

    @router.get("/api/stems/models")
    def stems_models():
        """Stems models this server offers for /api/jobs/{id}/stems (the first is the default)."""
        loaded = set(worker.loaded_names())
        return [dict(name=name, stems=list(STEM_NAMES.get(name, FOUR_STEMS)), is_loaded=f"stems:{name}" in loaded)
                for name in settings.worker.stems_models]

    @router.post("/api/jobs", status_code=202, responses={**REPEATED, **errors(413, 429, 507)})
    def create_job(body: JobIn, idempotency_key: Optional[str] = Header(
                       None, max_length=200, json_schema_extra={"pattern": TEXT_PATTERN})):
        """Queue a job; the same Idempotency-Key header with the same body returns the same job (200) instead
        of a new one, with another body 422."""
        check_header_text(idempotency_key, "Idempotency-Key")
        entry = registry.find(body.model)
        own, every = FAMILIES[entry.family].params, family_options()
        given = [name for name, option in every.items() if getattr(body, field_of(name, option)) is not None]
        other = [name for name in given if name not in own and not every[name].needs]
        if other:
            fields = [field_of(name, option) for name, option in own.items() if not option.needs]
            raise InvalidParameter(f"{field_of(other[0], every[other[0]])} is not an option of {entry.name} "
                                   f"({entry.family} models take {', '.join(fields)})")
        for capability in ("style", "melody"):  # what the model must offer (ModelSpec's flags)
            asked = [name for name in given if every[name].needs == capability]
            if asked:
                service.check_capability(entry, capability, asked[0])
        lora = job_lora(body.lora, settings.lora_dir, settings.worker.lora.get(entry.name, []), entry,
                        worker.fittings)
        options = {name: service.upload_path(getattr(body, field_of(name, option)), field_of(name, option))
                   if option.kind == "audio" else getattr(body, field_of(name, option)) for name, option in own.items()}
        options.update({name: getattr(body, name) for name in METER if getattr(body, name) is not None})
        prompt = body.prompt if isinstance(body.prompt, str) else [list(e) for e in body.prompt]
        finishing = dict(fade_in=body.fade_in, fade_out=body.fade_out, loudness=body.loudness, ceiling=body.ceiling)
        spec, _ = plan_job(entry, settings.limits, prompt=prompt, duration=body.duration, seed=body.seed,
                           variations=body.variations, loop=body.loop, options=options,
                           audio_prompt=service.upload_path(body.continuation, "continuation"), finishing=finishing,
                           fmt=body.format, wav_format=body.wav_format)
        if lora is not None:
            spec["lora"] = lora  # names and scales, never paths; jobs of one set batch together
        job, created = service.submit(entry.stored, spec, idempotency_key, fingerprint_of("POST /api/jobs", body))
        return JSONResponse(own_view(job), status_code=202 if created else 200)

    @router.get("/api/jobs/{job_id}", responses=errors(404))
    def get_job(job_id: str):
        return own_view(find(job_id))

    @router.get("/api/jobs/{job_id}/audio", responses={**AUDIO, **errors(404, 409, 410)})
    def job_audio(job_id: str, index: int = Query(0, ge=0, le=1000), fmt: Optional[str] = Query(None, max_length=20)):
        """Clip `index` of a done job, in its own format or converted to fmt."""
        return service.audio_response(find(job_id), index, fmt.lower() if fmt else None, compat=False)

    @router.post("/api/jobs/{job_id}/cancel", responses=errors(404, 409, 413))
    def cancel(job_id: str):
        """A queued job never runs; a running one stops at its next decode step."""
        job = find(job_id)
        if job.status not in FINISHED and store.cancel_queued(job.id):
            log.info("job %s cancelled while queued", job.id)
        else:
            now = store.get(job.id)
            if now is None or now.status in FINISHED:
                raise HTTPException(409, f"job {job.id} has already finished ({now.status if now else 'deleted'})")
            worker.cancel_running(job.id)
            log.info("job %s: cancel requested", job.id)
        return own_view(store.get(job.id) or job)

    @router.delete("/api/jobs/{job_id}", responses=errors(404, 409))
    def delete(job_id: str):
        """Forget a job and delete its files (a running job is cancelled first)."""
        job = find(job_id)
        if job.status == "queued":
            store.cancel_queued(job.id)
        if store.get(job.id) and store.get(job.id).status == "running":
            worker.cancel_running(job.id)
            raise HTTPException(409, f"job {job.id} is running: it is being cancelled, delete it once it stops")
        store.delete(job.id)
        return {"id": job.id, "deleted": True}

    @router.get("/api/jobs/{job_id}/events", responses={**EVENTS, **errors(404)})
    async def events(job_id: str, request: Request):
        """Server-Sent Events: `progress` (data: {id, status, done, total, progress}) on each change, then
        one `done` (data: the job) or `error` (data: the job, with its error; status "error" or "cancelled")."""
        await run_in_threadpool(find, job_id)
        return StreamingResponse(_events(job_id, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _events(job_id: str, request: Request):
        yield "retry: 1000\n\n"
        last, quiet = None, 0.0
        while True:
            job = await run_in_threadpool(store.get, job_id)
            if job is None:
                yield _sse("error", {"id": job_id, "status": "deleted", "error": "the job was deleted"})
                return
            if job.status == "done":
                yield _sse("done", own_view(job))
                return
            if job.status in FINISHED:
                yield _sse("error", own_view(job))
                return
            done, total = views.progress_of(job)
            state = (job.status, done, total)
            if state != last:
                yield _sse("progress", dict(id=job.id, status=job.status, done=done, total=total,
                                            progress=done / total if total else 0.0))
                last, quiet = state, 0.0
            elif quiet >= 15:
                yield ": keep-alive\n\n"
                quiet = 0.0
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.25)
            quiet += 0.25

    @router.post("/api/jobs/{job_id}/stems", status_code=202,
                 responses={**REPEATED, **errors(404, 409, 410, 413, 429, 507)})
    def stems(job_id: str, body: StemsIn, idempotency_key: Optional[str] = Header(
                       None, max_length=200, json_schema_extra={"pattern": TEXT_PATTERN})):
        """Split clip `index` of a done job into stems (drums, bass, other, vocals; htdemucs_6s adds guitar
        and piano), as a job of its own whose files are the stems."""
        check_header_text(idempotency_key, "Idempotency-Key")
        source = find(job_id)
        if source.status != "done":
            raise HTTPException(409, f"job {source.id} is {source.status}: stems need a done job")
        if source.spec.get("kind") == "stems":
            raise InvalidParameter(f"job {source.id} already holds stems")
        if body.index >= len(source.files):
            raise InvalidParameter(f"index: job {source.id} has {len(source.files)} clip(s), got {body.index}")
        offered = settings.worker.stems_models
        name = body.model or next(iter(offered))
        if name not in offered:
            raise InvalidParameter(f"model: {name[:40]!r} is not a stems model of this server "
                                   f"(it offers {', '.join(offered)})")
        names = STEM_NAMES.get(name, FOUR_STEMS)
        if body.two_stems is not None and body.two_stems not in names:
            raise InvalidParameter(f"two_stems must be one of {', '.join(names)}, got {body.two_stems[:40]!r}")
        spec = dict(kind="stems", source=source.id, index=body.index, stems_model=name, two_stems=body.two_stems,
                    shifts=body.shifts, model=name, family="stems", prompt=prompt_text(source.spec["prompt"]),
                    duration=source.spec["duration"], seed=source.seeds[body.index], variations=1,
                    format=body.format or source.spec["format"], wav_format=body.wav_format)
        service.stored_audio(source, body.index)  # 410 now rather than a failed job later
        job, created = service.submit(f"stems:{name}", spec, idempotency_key,
                                      fingerprint_of(f"POST /api/jobs/{source.id}/stems", body))
        return JSONResponse(own_view(job), status_code=202 if created else 200)

    @router.post("/api/uploads", status_code=201, responses=errors(413, 429, 507), openapi_extra=OPENAPI_BODY)
    async def upload(request: Request):
        """Store an audio file (multipart field `file`) for continuation, melody or style; answers its id.
        Streamed to disk and checked by decoding it block by block: 413 past the size or the decoded
        length (the longest audio a served model takes), 429 while max_uploads others are received."""
        with slots.slot():
            return await receive_upload(request, store, settings, max_upload_seconds)

    return router


def fingerprint_of(route: str, body: BaseModel) -> str:
    """What an Idempotency-Key is bound to: the route and the body's checked values (key order, 1 or 1.0
    and left-out defaults make no difference)."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{route}\n{canonical}".encode()).hexdigest()


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"
