"""The HTTP routes: a thin shell over the job store and the worker.

Two sets of routes share one store: mlx-audiogen's (/api/generate, /api/status, /api/audio, ...), so
that its Max for Live device, JUCE plugin and web UI work unchanged, and tunesmith's own (/api/jobs...,
/api/uploads), which take everything `tunesmith generate` takes. Every error is {"detail": "one line"}.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import re
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from fastapi import FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, field_validator
from pydantic_core import PydanticCustomError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import InvalidParameter, NoSpace, TooLong, TunesmithError
from ..generation import one_line
from ..musicgen.sampling import MAX_SEED
from ..request import text_problem
from .guard import Guard
from .registry import FAMILY_ALIASES, Registry
from .schema import AUDIO, EVENTS, EVERY_ROUTE, REPEATED, TEXT_PATTERN, errors, mark_texts
from .settings import ServerSettings
from .spec import DOWNLOAD_FORMATS, batch_key, media_file, plan_job, prompt_text
from .redact import redact, server_places
from .store import FINISHED, Job, StoreDamaged, intact, new_id
from .stores import open_store
from .uploads import OPENAPI_BODY, UploadSlots, longest_upload, receive_upload
from .worker import Worker

log = logging.getLogger("tunesmith.server")

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg", "m4a": "audio/mp4",
               "aiff": "audio/aiff"}
ID = r"^[A-Za-z0-9_-]{1,64}$"
RETRY_AFTER_S = 5
MLX_SAMPLERS = ("euler", "rk4")  # mlx-audiogen's own samplers: tunesmith uses the model's default instead


# ---- bodies
# Numbers are JSON numbers: true, "10" are refused (pydantic's lax mode took them); an int is a float too,
# and 175.0 an integer, as JSON Schema counts them.
Number = StrictFloat
Whole = Annotated[StrictInt, BeforeValidator(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)]
Flag = StrictBool


class Body(BaseModel):
    """What every body shares: each text in it, however deep (a schedule's), is text (request.text_problem),
    checked before the field's own rules so every field refuses it alike."""

    model_config = ConfigDict(json_schema_extra=mark_texts)

    @field_validator("*", mode="before")
    @classmethod
    def _texts(cls, value):
        for text in _texts_in(value):
            problem = text_problem(text)
            if problem:
                raise PydanticCustomError("not_text", problem)
        return value


def _texts_in(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _texts_in(item)


class GenerateIn(Body):
    """mlx-audiogen's POST /api/generate body. Unknown keys are ignored; each family takes its own fields
    and ignores the other's (its clients send both)."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field("musicgen", max_length=500, description='"musicgen", "stable_audio" or a registered name')
    prompt: str = Field(..., max_length=100_000)
    seconds: Number = 5.0
    temperature: Optional[Number] = None
    top_k: Optional[Whole] = None
    guidance_coef: Optional[Number] = Field(None, description="MusicGen's cfg")
    seed: Optional[Whole] = Field(None, description="none or negative: random")
    melody_path: Optional[str] = Field(None, max_length=4096, description="a file under a --media-dir")
    style_audio_path: Optional[str] = Field(None, max_length=4096, description="MusicGen-Style: a reference "
                                                                                "file under a --media-dir")
    style_coef: Optional[Number] = Field(None, description="MusicGen-Style's cfg_beta (with text and style)")
    negative_prompt: Optional[str] = Field(None, max_length=100_000)
    steps: Optional[Whole] = None
    cfg_scale: Optional[Number] = Field(None, description="Stable Audio's cfg")
    sampler: Optional[str] = Field(None, max_length=100)
    reference_audio_path: Optional[str] = Field(None, max_length=4096, description="Stable Audio: init audio")
    reference_strength: Optional[Number] = None
    lora: Optional[str] = Field(None, max_length=500, description="not supported")
    output_mode: Optional[str] = Field(None, max_length=100, description='"audio" only')


class JobIn(Body):
    """POST /api/jobs: everything `tunesmith generate` takes. Options of the other family are refused."""

    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = Field(None, max_length=500, description="a registered name; none: the default")
    prompt: Union[str, list[tuple[Number, str]]] = Field(
        ..., description='a text, or a schedule [[0, "calm intro"], [20, "drums enter"]]')
    duration: Optional[Number] = Field(None, description="seconds (default 10; an ACE-Step repaint lasts as long as "
                                                        "its song: leave it out)")
    seed: Optional[Whole] = Field(None, description="none: random (the job reports it)")
    variations: Whole = 1
    loop: Flag = False
    temperature: Optional[Number] = Field(None, description="MusicGen")
    top_k: Optional[Whole] = Field(None, description="MusicGen")
    top_p: Optional[Number] = Field(None, description="MusicGen")
    cfg: Optional[Number] = None
    context: Optional[Number] = Field(None, description="MusicGen, long pieces")
    steps: Optional[Whole] = Field(None, description="Stable Audio")
    negative_prompt: Optional[str] = Field(None, max_length=100_000, description="Stable Audio")
    sampler: Optional[str] = Field(None, max_length=100, description="Stable Audio")
    strength: Optional[Number] = Field(None, description="Stable Audio, with continuation as init audio")
    style: Optional[str] = Field(None, max_length=100, description="MusicGen-Style: an upload id, the reference "
                                                                   "whose style to take")
    cfg_beta: Optional[Number] = Field(None, description="MusicGen-Style: weight of the text against the style")
    style_excerpt: Optional[Number] = Field(None, description="MusicGen-Style: seconds of the reference heard")
    style_quantizers: Optional[Whole] = Field(None, description="MusicGen-Style: 1-6, fewer copy it less closely")
    style_start: Optional[Number] = Field(None, description="MusicGen-Style: where the excerpt starts (s)")
    lyrics: Optional[str] = Field(None, max_length=20_000, description="ACE-Step: the words to sing "
                                                                       "([verse], [chorus] tags allowed)")
    language: Optional[str] = Field(None, max_length=20, description="ACE-Step: the lyrics' language (en, zh, ...)")
    repaint: Optional[tuple[Number, Optional[Number]]] = Field(
        None, description="ACE-Step: [start, end] seconds of the continuation's song to make anew (end null: to "
                          "the end); the rest is kept")
    continuation: Optional[str] = Field(None, max_length=100, description="an upload id: MusicGen continues "
                                                                          "it, Stable Audio starts from it, "
                                                                          "ACE-Step repaints it")
    melody: Optional[str] = Field(None, max_length=100, description="an upload id: a tune to follow (melody models)")
    fade_in: Optional[Number] = None
    fade_out: Optional[Number] = None
    loudness: Optional[Number] = Field(None, description="LUFS target, e.g. -14")
    ceiling: Optional[Number] = Field(None, description="true-peak ceiling in dBTP (default -1)")
    format: Literal["wav", "flac", "mp3", "ogg", "m4a"] = "wav"
    wav_format: Literal["pcm16", "pcm24", "float"] = "pcm16"


class StemsIn(Body):
    """POST /api/jobs/{id}/stems: split a done job's clip into stems, as a job of its own."""

    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = Field(None, max_length=100, description="a stems model this server offers (GET "
                                                                    "/api/models lists them); none: the first")
    index: Whole = Field(0, ge=0, le=1000, description="which clip of the job (its variations)")
    two_stems: Optional[str] = Field(None, max_length=40, description='e.g. "vocals": vocals and no_vocals')
    shifts: Whole = Field(1, ge=0, le=10, description="passes at random offsets, averaged: better, slower")
    format: Optional[Literal["wav", "flac", "mp3", "ogg", "m4a"]] = Field(None, description="default: the job's")
    wav_format: Literal["pcm16", "pcm24", "float"] = "pcm16"


STEM_NAMES = {"htdemucs_6s": ("drums", "bass", "other", "vocals", "guitar", "piano")}
FOUR_STEMS = ("drums", "bass", "other", "vocals")

STYLE_FIELDS = ("style", "cfg_beta", "style_excerpt", "style_quantizers", "style_start")  # MusicGen-Style's
FIELDS = {"musicgen": ("temperature", "top_k", "top_p", "cfg", "context"),
          "stable_audio": ("steps", "cfg", "negative_prompt", "sampler", "strength"),
          "acestep": ("lyrics", "language", "steps", "cfg", "repaint")}  # each family's options in POST /api/jobs


def create_app(settings: ServerSettings, registry: Registry | None = None, make_worker=Worker) -> FastAPI:
    """The app for checked settings; the registry is described from settings.models when not given.
    make_worker(store, registry, worker settings) gives what runs the jobs (a cluster's ingress: a view of
    workers in other processes)."""
    settings.checked()
    registry = registry or Registry.describe(settings.models)
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

    app = FastAPI(title="tunesmith", version=__version__, lifespan=lifespan, responses=EVERY_ROUTE,
                  description="Local music generation: jobs survive restarts. mlx-audiogen's routes "
                              "(/api/generate, /api/status, /api/audio) and tunesmith's own (/api/jobs, "
                              "/api/uploads).")
    app.state.store, app.state.worker, app.state.registry, app.state.settings = store, worker, registry, settings
    slots = app.state.upload_slots = UploadSlots(settings.max_uploads)
    max_upload_seconds = settings.upload_seconds or longest_upload(registry, settings.limits)
    places = app.state.places = server_places(store.folder, settings.limits.media_dirs,
                                              [e.spec.folder for e in registry.entries.values() if e.spec.folder])
    _install_error_handlers(app)

    def find(job_id: str) -> Job:
        job = store.get(job_id) if re.match(ID, job_id) else None
        if job is None:
            raise HTTPException(404, f"no job {job_id[:64]!r} (finished jobs are kept {settings.worker.keep_days:g} "
                                     "days)")
        return job

    def progress_of(job: Job) -> tuple[int, int]:
        if job.status == "done":
            return 1, 1
        return worker.progress.get(job.id, (0, 0)) if job.status == "running" else (0, 0)

    def compat_view(job: Job) -> dict:
        """mlx-audiogen's view of a job; a job whose stored request cannot be shown is shown bare."""
        try:
            return printable(_compat_view(job))
        except (KeyError, TypeError, ValueError, AttributeError):
            return bare_view(job)

    def _compat_view(job: Job) -> dict:
        done, total = progress_of(job)
        return dict(id=job.id, status="error" if job.status == "cancelled" else job.status,
                    model=registry.public(job.model), prompt=prompt_text(job.spec["prompt"]),
                    seconds=job.spec["duration"], created_at=job.created_at, completed_at=job.completed_at,
                    error=job.error and redact(job.error, places), warning=job.warning, sample_rate=job.sample_rate,
                    progress=done / total if total else 0.0)

    def own_view(job: Job) -> dict:
        try:
            return printable(_own_view(job))
        except (KeyError, TypeError, ValueError, AttributeError):
            return dict(bare_view(job), status=job.status)

    def _own_view(job: Job) -> dict:
        done, total = progress_of(job)
        spec = job.spec
        files = [dict(index=i, format=spec["format"], seed=seed, url=f"/api/jobs/{job.id}/audio?index={i}",
                      check=job.checks[i] if i < len(job.checks) else None, stem=stem_of(job, i))
                 for i, seed in enumerate(job.seeds)] if job.status == "done" else []
        view = dict(_compat_view(job), status=job.status, done=done, total=total, duration=spec["duration"],
                    family=spec["family"], seed=spec["seed"], seeds=job.seeds or
                    [(spec["seed"] + v) % (MAX_SEED + 1) for v in range(spec["variations"])], variations=spec["variations"],
                    format=spec["format"], started_at=job.started_at, timings=job.timings, files=files,
                    cancel_requested=job.id in worker.cancelling, runs=job.runs, request=public_request(spec))
        if spec.get("kind") != "stems":  # a job of an older version stored its model by server path
            view["request"]["model"] = registry.public(job.model)
        return view

    def bare_view(job: Job) -> dict:
        """What is sure of a job whose stored request this version cannot show (an older version's, or
        damaged): the page and clients still list it, and can delete it."""
        return printable(dict(id=job.id, status="error" if job.status == "cancelled" else job.status,
                              model=registry.public(job.model), prompt="", seconds=None, duration=None,
                              created_at=job.created_at, completed_at=job.completed_at, warning=job.warning,
                              error=job.error or "the stored request of this job cannot be shown",
                              progress=0.0, files=[], seeds=[], request={}))

    def check_style_model(entry, field: str):
        if not entry.spec.style:
            styles = [e.name for e in registry.entries.values() if e.spec.style]
            offered = f"this server's: {', '.join(styles)}" if styles else "this server offers none"
            raise InvalidParameter(f"{field} needs a MusicGen-Style model ({offered}); {entry.name} takes no style")

    def stem_of(job: Job, index: int) -> str | None:
        """The stem a file of a stems job holds (its file is named ID-STEM.EXT)."""
        if job.spec.get("kind") != "stems" or index >= len(job.files):
            return None
        return Path(job.files[index]).stem.removeprefix(f"{job.id}-")

    def submit(model: str, spec: dict, key: str | None, fingerprint: str | None = None,
               warning: str | None = None) -> tuple[Job, bool]:
        """Queue a checked job for `model` (an entry's -m string, or stems:NAME); the same key and request,
        the same job; the same key with another request is refused."""
        if key is not None:
            old = store.by_key(key)
            if old is not None:
                return same_request(old, fingerprint), False
        if store.count() >= settings.max_queue:
            raise HTTPException(429, f"the queue is full ({settings.max_queue} jobs): try again shortly",
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        job_id = new_id()
        job = Job(job_id, "queued", model, batch_key(spec, job_id), spec["variations"], spec, time.time(), key,
                  fingerprint=fingerprint, warning=warning)
        job, created = store.add(job)
        if not created:  # the same key, sent twice at once
            return same_request(job, fingerprint), False
        worker.wake()
        log.info("job %s queued (%s, %g s)", job.id, registry.public(model), spec["duration"])
        return job, created

    def same_request(old: Job, fingerprint: str | None) -> Job:
        """The job an Idempotency-Key brought, if this request is the one it came with (as Stripe does). A
        job of an older version has no fingerprint: it is given back as before."""
        if old.fingerprint is not None and old.fingerprint != fingerprint:
            raise HTTPException(422, "this Idempotency-Key was already used for another request: send a new key "
                                     "with a new request")
        return old

    def stored_audio(job: Job, index: int) -> Path:
        """File `index` of a done job as written, else 410 (gone, or damaged since: truncated, overwritten)."""
        stored = store.audio / job.files[index]
        if not stored.is_file():
            raise HTTPException(410, f"the audio of job {job.id} is gone from the server's disk")
        if not intact(stored, job.digests[index] if index < len(job.digests) else None):
            raise HTTPException(410, f"the audio of job {job.id} is damaged on the server's disk")
        return stored

    def upload_path(upload_id: str | None, field: str) -> str | None:
        if upload_id is None:
            return None
        upload = store.get_upload(upload_id) if re.match(ID, upload_id) else None
        if upload is None:
            raise InvalidParameter(f"{field}: no upload {upload_id[:64]!r} (send the audio to /api/uploads first)")
        return upload.path

    def audio_response(job: Job, index: int, fmt: str | None, compat: bool):
        if job.status in ("queued", "running"):
            where = f"/api/status/{job.id}" if compat else f"/api/jobs/{job.id}"
            return JSONResponse({"detail": f"job {job.id} is {job.status}: poll {where} until it is done"}, 202)
        if job.status != "done":
            raise HTTPException(409, f"job {job.id} has no audio: {job.error or job.status}")
        if not 0 <= index < len(job.files):
            raise HTTPException(404, f"job {job.id} has {len(job.files)} file(s): index must be from 0 to "
                                     f"{len(job.files) - 1}")
        stored = stored_audio(job, index)
        have = stored.suffix[1:]
        fmt = fmt or have
        if fmt not in DOWNLOAD_FORMATS:
            raise HTTPException(400, f"fmt must be one of {', '.join(DOWNLOAD_FORMATS)}, got {fmt[:20]!r}")
        if compat:
            name = f"{job.id}.{fmt}"
        else:
            from ..cli import slug

            seed = job.seeds[index] if index < len(job.seeds) else job.spec["seed"]
            stem = stem_of(job, index)
            name = f"{slug(prompt_text(job.spec['prompt']))}-{seed}{'-' + stem if stem else ''}.{fmt}"
        store.mark_read(job.id)
        if fmt == have:
            return FileResponse(stored, media_type=MEDIA_TYPES[fmt], filename=name)
        converted = _convert(stored, fmt, store.folder / "tmp")
        return FileResponse(converted, media_type=MEDIA_TYPES[fmt], filename=name,
                            background=BackgroundTask(converted.unlink, missing_ok=True))

    # ---- mlx-audiogen's routes
    @app.get("/api/health", tags=["compatible"])
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

    @app.get("/api/models", tags=["compatible"])
    def models():
        """Registered models (-m); the first is the default."""
        loaded = set(worker.loaded_names())
        return [dict(name=e.name, model_type=e.family, is_loaded=e.name in loaded, default=e is registry.default,
                     longest=e.spec.longest, style=e.spec.style, melody=e.spec.melody)
                for e in registry.entries.values()]

    @app.get("/api/stems/models", tags=["jobs"])
    def stems_models():
        """Stems models this server offers for /api/jobs/{id}/stems (the first is the default)."""
        loaded = set(worker.loaded_names())
        return [dict(name=name, stems=list(STEM_NAMES.get(name, FOUR_STEMS)), is_loaded=f"stems:{name}" in loaded)
                for name in settings.worker.stems_models]

    @app.post("/api/generate", tags=["compatible"], responses=errors(413, 429, 507))
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
        if body.lora:
            raise InvalidParameter("lora: LoRA adapters are not supported by tunesmith")
        if body.output_mode not in (None, "audio"):
            raise InvalidParameter(f"output_mode {body.output_mode[:20]!r}: tunesmith makes audio only")
        options, audio_prompt = {}, None
        if entry.family == "musicgen":
            options = dict(temperature=body.temperature, top_k=body.top_k, cfg=body.guidance_coef)
            if body.melody_path and entry.spec.melody:
                options["melody"] = media_file(body.melody_path, settings.limits.media_dirs, "melody_path")
            if body.style_audio_path:  # their clients send style_coef with or without style audio
                check_style_model(entry, "style_audio_path")
                options["style"] = media_file(body.style_audio_path, settings.limits.media_dirs, "style_audio_path")
                options["cfg_beta"] = body.style_coef
        elif entry.family == "acestep":  # mlx-audiogen's clients know no ACE-Step: its steps and guidance
            options = dict(steps=body.steps, cfg=body.cfg_scale)
        else:
            sampler = None if body.sampler in MLX_SAMPLERS else body.sampler
            options = dict(steps=body.steps, cfg=body.cfg_scale, negative_prompt=body.negative_prompt or None,
                           sampler=sampler)
            if body.reference_audio_path:
                audio_prompt = media_file(body.reference_audio_path, settings.limits.media_dirs,
                                          "reference_audio_path")
                options["strength"] = body.reference_strength
        seed = body.seed if body.seed is not None and body.seed >= 0 else None
        try:
            spec, _ = plan_job(entry, settings.limits, prompt=body.prompt, duration=body.seconds, seed=seed,
                               options=options, audio_prompt=audio_prompt)
        except InvalidParameter as err:  # named as this body names them
            guidance = "guidance_coef" if entry.family == "musicgen" else "cfg_scale"
            raise InvalidParameter(re.sub(r"^(duration|cfg)\b", lambda m: "seconds" if m[1] == "duration"
                                          else guidance, plain(str(err)))) from None
        job, _ = submit(entry.stored, spec, None, warning=warning)
        return {"id": job.id, "status": "queued"}

    @app.get("/api/status/{job_id}", tags=["compatible"], responses=errors(404))
    def status(job_id: str):
        """queued | running | done | error; a cancelled job reads as error "cancelled"."""
        return compat_view(find(job_id))

    @app.get("/api/audio/{job_id}", tags=["compatible"], responses={**AUDIO, **errors(404, 409, 410)})
    def audio(job_id: str, fmt: str = Query("wav", max_length=20)):
        """The first clip of a done job; 202 while it is not done."""
        return audio_response(find(job_id), 0, fmt.lower(), compat=True)

    @app.get("/api/jobs", tags=["compatible", "jobs"])
    def jobs(limit: int = Query(100, ge=1, le=1000)):
        """Recent jobs, newest first (tunesmith's view: status may also be "cancelled")."""
        return [own_view(j) for j in store.recent(limit)]

    # ---- tunesmith's own routes
    @app.post("/api/jobs", tags=["jobs"], status_code=202, responses={**REPEATED, **errors(413, 429, 507)})
    def create_job(body: JobIn, idempotency_key: Optional[str] = Header(
                       None, max_length=200, json_schema_extra={"pattern": TEXT_PATTERN})):
        """Queue a job; the same Idempotency-Key header with the same body returns the same job (200) instead
        of a new one, with another body 422."""
        check_header_text(idempotency_key, "Idempotency-Key")
        entry = registry.find(body.model)
        fields = FIELDS[entry.family]
        other = [f for f in dict.fromkeys(sum(FIELDS.values(), ())) if f not in fields and getattr(body, f) is not None]
        if other:
            raise InvalidParameter(f"{other[0]} is not an option of {entry.name} ({entry.family} models take "
                                   f"{', '.join(fields)})")
        options = {f: getattr(body, f) for f in fields}
        asked = [f for f in STYLE_FIELDS if getattr(body, f) is not None]
        if asked:
            check_style_model(entry, asked[0])
            options.update({f: getattr(body, f) for f in STYLE_FIELDS}, style=upload_path(body.style, "style"))
        if body.melody is not None:
            if not entry.spec.melody:
                melodic = ", ".join(e.name for e in registry.melody_models()) or "none on this server"
                raise InvalidParameter(f"melody: {entry.name} cannot follow a melody (melody models: {melodic})")
            options["melody"] = upload_path(body.melody, "melody")
        prompt = body.prompt if isinstance(body.prompt, str) else [list(e) for e in body.prompt]
        finishing = dict(fade_in=body.fade_in, fade_out=body.fade_out, loudness=body.loudness, ceiling=body.ceiling)
        spec, _ = plan_job(entry, settings.limits, prompt=prompt, duration=body.duration, seed=body.seed,
                           variations=body.variations, loop=body.loop, options=options,
                           audio_prompt=upload_path(body.continuation, "continuation"), finishing=finishing,
                           fmt=body.format, wav_format=body.wav_format)
        job, created = submit(entry.stored, spec, idempotency_key, fingerprint_of("POST /api/jobs", body))
        return JSONResponse(own_view(job), status_code=202 if created else 200)

    @app.get("/api/jobs/{job_id}", tags=["jobs"], responses=errors(404))
    def get_job(job_id: str):
        return own_view(find(job_id))

    @app.get("/api/jobs/{job_id}/audio", tags=["jobs"], responses={**AUDIO, **errors(404, 409, 410)})
    def job_audio(job_id: str, index: int = Query(0, ge=0, le=1000), fmt: Optional[str] = Query(None, max_length=20)):
        """Clip `index` of a done job, in its own format or converted to fmt."""
        return audio_response(find(job_id), index, fmt.lower() if fmt else None, compat=False)

    @app.post("/api/jobs/{job_id}/cancel", tags=["jobs"], responses=errors(404, 409, 413))
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

    @app.delete("/api/jobs/{job_id}", tags=["jobs"], responses=errors(404, 409))
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

    @app.get("/api/jobs/{job_id}/events", tags=["jobs"], responses={**EVENTS, **errors(404)})
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
            done, total = progress_of(job)
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

    @app.post("/api/jobs/{job_id}/stems", tags=["jobs"], status_code=202,
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
        stored_audio(source, body.index)  # 410 now rather than a failed job later
        job, created = submit(f"stems:{name}", spec, idempotency_key,
                              fingerprint_of(f"POST /api/jobs/{source.id}/stems", body))
        return JSONResponse(own_view(job), status_code=202 if created else 200)

    @app.post("/api/uploads", tags=["jobs"], status_code=201, responses=errors(413, 429, 507),
              openapi_extra=OPENAPI_BODY)
    async def upload(request: Request):
        """Store an audio file (multipart field `file`) for continuation, melody or style; answers its id.
        Streamed to disk and checked by decoding it block by block: 413 past the size or the decoded
        length (the longest audio a served model takes), 429 while max_uploads others are received."""
        with slots.slot():
            return await receive_upload(request, store, settings, max_upload_seconds)

    _answer_unrouted(app)
    if STATIC.is_dir():
        app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    # Outermost last: the Guard sees every request first, then CORS answers listed origins' preflights.
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors, allow_methods=["*"],
                       allow_headers=["Authorization", "Content-Type", "Idempotency-Key"])
    app.add_middleware(Guard, settings=settings)
    return app


def _answer_unrouted(app: FastAPI):
    """Under /api, what no route takes: 405 with Allow for a path a route has under another method (OPTIONS:
    204 with Allow), else 404. Without this the page's mount at / would answer both with 404."""
    routes = [r for r in app.routes if isinstance(r, APIRoute)]

    @app.api_route("/api/{rest:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                   include_in_schema=False)
    def unrouted(request: Request):
        path = request.url.path
        allowed = sorted({m for r in routes if r.path_regex.match(path) for m in r.methods})
        if not allowed:
            raise HTTPException(404, f"no route {path[:80]!r} (the API is listed at /docs)")
        allow = ", ".join(allowed + ["OPTIONS"])
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={"Allow": allow})
        raise HTTPException(405, f"{request.method} is not allowed on {path[:80]}: it takes {allow}",
                            headers={"Allow": allow})


def check_header_text(value: str | None, what: str):
    """A text that comes outside a JSON body (a header, a file name) is checked as the bodies' texts are."""
    problem = text_problem(value) if value else None
    if problem:
        raise HTTPException(422, f"{what}: {problem}")


def fingerprint_of(route: str, body: BaseModel) -> str:
    """What an Idempotency-Key is bound to: the route and the body's checked values (key order, 1 or 1.0
    and left-out defaults make no difference)."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{route}\n{canonical}".encode()).hexdigest()


def public_request(spec: dict) -> dict:
    """The stored request as clients may see it: audio inputs by file name, not by server path."""
    shown = {k: v for k, v in spec.items() if k != "family"}
    if shown.get("audio_prompt"):
        shown["audio_prompt"] = Path(shown["audio_prompt"]).name
    for key in ("melody", "style"):
        if shown.get("options", {}).get(key):
            shown["options"] = dict(shown["options"], **{key: Path(shown["options"][key]).name})
    return shown


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _convert(stored: Path, fmt: str, folder: Path) -> Path:
    """The stored clip in another format, as a temporary file (deleted once sent). A failure says what
    failed, not where: the log has the paths."""
    from ..audio.io import read_audio, write_audio, write_sndfile, written_whole

    target = folder / f"{new_id()}.{fmt}"
    try:
        folder.mkdir(exist_ok=True)
        audio, rate = read_audio(stored)
        if fmt == "aiff":  # libsndfile writes AIFF; tunesmith's writer does not offer it
            with written_whole(target) as partial:
                write_sndfile(partial, audio.clip(-1, 1), rate, "AIFF", "PCM_16", "cannot write")
        else:
            write_audio(target, audio, rate)
    except (TunesmithError, OSError) as err:
        log.error("converting %s to %s failed: %s", stored, fmt, err)
        text = str(err) if isinstance(err, TunesmithError) else err.strerror or str(err)
        if text.startswith("cannot write"):  # 'cannot write PATH: why': the why
            text = text.split(": ", 1)[-1]
        target.unlink(missing_ok=True)
        if isinstance(err, NoSpace) or getattr(err, "errno", None) == errno.ENOSPC or "No space left" in text:
            raise NoSpace(f"the server's disk is full: cannot convert the audio to {fmt}") from None
        raise TunesmithError(f"cannot convert the job's audio to {fmt}: {text}") from None
    return target


# ---- errors: always {"detail": "one line"}, never a traceback
FLAG = re.compile(r" \((?:--?[a-z][\w-]*|PROMPT)\)")


def plain(message: str) -> str:
    """One line, without the CLI's flag names ('top_k (--top-k) must...' -> 'top_k must...'); a lone surrogate
    is escaped, so that the answer can be UTF-8."""
    return printable(FLAG.sub("", one_line(Exception(message)))[:500])


def printable(value):
    """`value` with every text made encodable (a lone surrogate becomes the 6 characters \\ud800): what an older
    version stored, or an exception quoted, must not turn an answer into a 500."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable(v) for v in value]
    return value


TYPE_WORDS = {"float_type": "a number", "int_type": "a whole number", "bool_type": "true or false",
              "string_type": "a text"}


def _shown_json(value) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def validation_detail(errors: list) -> str:
    first = errors[0]
    kind, loc = first.get("type", ""), [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path",
                                                                                           "header")]
    if loc[:1] == ["prompt"] and len(loc) > 1:  # the union's member names mean nothing to a client
        text = 'prompt must be a text or a schedule [[start_second, "text"], ...]'
    elif kind in TYPE_WORDS and loc:
        text = f"{'.'.join(loc)} must be {TYPE_WORDS[kind]}, got {_shown_json(first.get('input'))}"
    elif kind == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        text = f"the body is not valid JSON{': ' + reason if reason else ''}"
    elif kind == "model_attributes_type" or (not loc and kind.endswith("_type")):
        text = "the body must be a JSON object"
    else:
        text = f"{'.'.join(loc) + ': ' if loc else ''}{first.get('msg', 'invalid value')}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more)"
    return plain(text)


def _install_error_handlers(app: FastAPI):
    def detail(text: str) -> str:  # server paths said in words: the log keeps them
        return plain(redact(text, app.state.places))

    @app.exception_handler(TunesmithError)
    async def tunesmith_error(request, err: TunesmithError):
        return JSONResponse({"detail": detail(str(err))}, status_code=400)

    @app.exception_handler(TooLong)
    async def too_long(request, err: TooLong):
        return JSONResponse({"detail": detail(str(err))}, status_code=413)

    @app.exception_handler(NoSpace)
    async def no_space(request, err: NoSpace):  # reads go on: only what writes answers this
        return JSONResponse({"detail": plain(str(err))}, status_code=507)

    @app.exception_handler(StoreDamaged)
    async def store_damaged(request, err: StoreDamaged):
        return JSONResponse({"detail": plain(str(err))}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err: RequestValidationError):
        return JSONResponse({"detail": validation_detail(list(err.errors()))}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):
        text = err.detail if isinstance(err.detail, str) else json.dumps(err.detail)
        return JSONResponse({"detail": detail(text)}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(Exception)
    async def internal(request, err: Exception):  # a bug of ours: logged whole, answered in one line
        log.exception("%s %s failed", request.method, request.url.path)
        # Starlette re-raises after this answer and uvicorn then drops the connection: saying so lets a
        # kept-alive client open a new one instead of failing its next request.
        return JSONResponse({"detail": f"internal error: {type(err).__name__} (the server log has the details)"},
                            status_code=500, headers={"Connection": "close"})

