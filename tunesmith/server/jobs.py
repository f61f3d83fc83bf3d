"""What the routes share: finding, queueing and answering jobs on the store and the worker, uploads by
id, and the checks that depend on the models this server offers (style and melody models)."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..audio.names import clip_name
from ..errors import InvalidParameter
from ..family import FAMILIES
from .bodies import GenerateIn
from .media import audio_file
from .registry import Entry, Registry
from .settings import ServerSettings
from .spec import DOWNLOAD_FORMATS, batch_key, media_file, prompt_text
from .store import Job, QueueFull, Store, intact, new_id
from .views import stem_of
from .worker import Worker

log = logging.getLogger("tunesmith.server")

ID = r"^[A-Za-z0-9_-]{1,64}$"
RETRY_AFTER_S = 5
MLX_SAMPLERS = ("euler", "rk4")  # mlx-audiogen's own samplers: tunesmith uses the model's default instead


class Jobs:
    def __init__(self, store: Store, worker: Worker, registry: Registry, settings: ServerSettings):
        self.store, self.worker, self.registry, self.settings = store, worker, registry, settings

    def find(self, job_id: str) -> Job:
        job = self.store.get(job_id) if re.match(ID, job_id) else None
        if job is None:
            raise HTTPException(404, f"no job {job_id[:64]!r} (finished jobs are kept "
                                     f"{self.settings.worker.keep_days:g} days)")
        return job

    def submit(self, model: str, spec: dict, key: str | None, fingerprint: str | None = None,
               warning: str | None = None) -> tuple[Job, bool]:
        """Queue a checked job for `model` (an entry's -m string, or stems:NAME); the same key and request,
        the same job; the same key with another request is refused."""
        store, settings = self.store, self.settings
        if key is not None:
            old = store.by_key(key)
            if old is not None:
                return self.same_request(old, fingerprint), False
        job_id = new_id()
        job = Job(job_id, "queued", model, batch_key(spec, job_id), spec["variations"], spec, time.time(), key,
                  fingerprint=fingerprint, warning=warning)
        try:
            job, created = store.add(job, max_active=settings.max_queue)
        except QueueFull:
            raise HTTPException(429, f"the queue is full ({settings.max_queue} jobs): try again shortly",
                                headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        if not created:  # the same key, sent twice at once
            return self.same_request(job, fingerprint), False
        self.worker.wake()
        log.info("job %s queued (%s, %g s)", job.id, self.registry.public(model), spec["duration"])
        return job, created

    @staticmethod
    def same_request(old: Job, fingerprint: str | None) -> Job:
        """The job an Idempotency-Key brought, if this request is the one it came with (as Stripe does). A
        job of an older version has no fingerprint: it is given back as before."""
        if old.fingerprint is not None and old.fingerprint != fingerprint:
            raise HTTPException(422, "this Idempotency-Key was already used for another request: send a new key "
                                     "with a new request")
        return old

    def stored_audio(self, job: Job, index: int) -> Path:
        """File `index` of a done job as written, else 410 (gone, or damaged since: truncated, overwritten)."""
        stored = self.store.audio / job.files[index]
        if not stored.is_file():
            raise HTTPException(410, f"the audio of job {job.id} is gone from the server's disk")
        if not intact(stored, job.digests[index] if index < len(job.digests) else None):
            raise HTTPException(410, f"the audio of job {job.id} is damaged on the server's disk")
        return stored

    def upload_path(self, upload_id: str | None, field: str) -> str | None:
        if upload_id is None:
            return None
        upload = self.store.get_upload(upload_id) if re.match(ID, upload_id) else None
        if upload is None:
            raise InvalidParameter(f"{field}: no upload {upload_id[:64]!r} (send the audio to /api/uploads first)")
        return upload.path

    def audio_response(self, job: Job, index: int, fmt: str | None, compat: bool):
        if job.status in ("queued", "running"):
            where = f"/api/status/{job.id}" if compat else f"/api/jobs/{job.id}"
            return JSONResponse({"detail": f"job {job.id} is {job.status}: poll {where} until it is done"}, 202)
        if job.status != "done":
            raise HTTPException(409, f"job {job.id} has no audio: {job.error or job.status}")
        if not 0 <= index < len(job.files):
            raise HTTPException(404, f"job {job.id} has {len(job.files)} file(s): index must be from 0 to "
                                     f"{len(job.files) - 1}")
        stored = self.stored_audio(job, index)
        fmt = fmt or stored.suffix[1:]
        if fmt not in DOWNLOAD_FORMATS:
            raise HTTPException(400, f"fmt must be one of {', '.join(DOWNLOAD_FORMATS)}, got {fmt[:20]!r}")
        if compat:
            name = f"{job.id}.{fmt}"
        else:
            seed = job.seeds[index] if index < len(job.seeds) else job.spec["seed"]
            name = clip_name(prompt_text(job.spec["prompt"]), seed, stem_of(job, index), fmt)
        self.store.mark_read(job.id)
        return audio_file(stored, fmt, name, self.store.folder / "tmp")

    # ---- what depends on the models this server offers
    def check_capability(self, entry: Entry, capability: str, field: str):
        """A field that needs a style or melody model (an Option's `needs`), refused for a model without it."""
        if capability == "style":
            self.check_style_model(entry, field)
        elif not getattr(entry.spec, capability):
            melodic = ", ".join(e.name for e in self.registry.melody_models()) or "none on this server"
            raise InvalidParameter(f"{field}: {entry.name} cannot follow a melody (melody models: {melodic})")

    def check_style_model(self, entry: Entry, field: str):
        if not entry.spec.style:
            styles = [e.name for e in self.registry.entries.values() if e.spec.style]
            offered = f"this server's: {', '.join(styles)}" if styles else "this server offers none"
            raise InvalidParameter(f"{field} needs a MusicGen-Style model ({offered}); {entry.name} takes no style")

    def compat_options(self, body: GenerateIn, entry: Entry) -> tuple[dict, str | None]:
        """mlx-audiogen's fields as the family's options (each option's `compat` name) and audio input; audio
        is a file under a --media-dir. Their clients send every field whatever the model: a melody for a
        model without melodies is ignored (the job says so), and what tunes an input not given (style_coef,
        reference_strength) is dropped."""
        family, media_dirs = FAMILIES[entry.family], self.settings.limits.media_dirs
        audio = family.audio_input.compat and getattr(body, family.audio_input.compat)
        inputs = {"audio_prompt": media_file(audio, media_dirs, family.audio_input.compat) if audio else None}
        options = {}
        for name, option in family.params.items():
            value = getattr(body, option.compat) if option.compat else None
            if option.kind == "audio":
                if not value:
                    continue
                if option.needs and not getattr(entry.spec, option.needs):
                    if option.needs == "style":
                        self.check_style_model(entry, option.compat)
                    continue
                value = inputs[name] = media_file(value, media_dirs, option.compat)
            options[name] = value
        for name, option in family.params.items():
            if option.modifies and inputs.get(option.modifies) is None:
                options.pop(name, None)
        if options.get("sampler") in MLX_SAMPLERS:  # theirs: tunesmith uses the model's own
            options["sampler"] = None
        if "negative_prompt" in options:
            options["negative_prompt"] = options["negative_prompt"] or None
        return options, inputs["audio_prompt"]
