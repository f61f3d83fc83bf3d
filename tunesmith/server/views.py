"""What clients see of a job: mlx-audiogen's view (compat_view) and tunesmith's own (own_view), each
readable UTF-8 whatever was stored; a job whose stored request this version cannot show is shown bare."""

from __future__ import annotations

from pathlib import Path

from ..request import variation_seeds
from .handlers import printable
from .redact import redact
from .registry import Registry
from .spec import prompt_text
from .store import Job
from .worker import Worker


def stem_of(job: Job, index: int) -> str | None:
    """The stem a file of a stems job holds (its file is named ID-STEM.EXT)."""
    if job.spec.get("kind") != "stems" or index >= len(job.files):
        return None
    return Path(job.files[index]).stem.removeprefix(f"{job.id}-")


def public_request(spec: dict) -> dict:
    """The stored request as clients may see it: audio inputs by file name, not by server path."""
    shown = {k: v for k, v in spec.items() if k != "family"}
    if shown.get("audio_prompt"):
        shown["audio_prompt"] = Path(shown["audio_prompt"]).name
    for key in ("melody", "style"):
        if shown.get("options", {}).get(key):
            shown["options"] = dict(shown["options"], **{key: Path(shown["options"][key]).name})
    return shown


class Views:
    def __init__(self, worker: Worker, registry: Registry, places: list):
        self.worker, self.registry, self.places = worker, registry, places

    def progress_of(self, job: Job) -> tuple[int, int]:
        if job.status == "done":
            return 1, 1
        return self.worker.progress.get(job.id, (0, 0)) if job.status == "running" else (0, 0)

    def compat_view(self, job: Job) -> dict:
        """mlx-audiogen's view of a job; a job whose stored request cannot be shown is shown bare."""
        try:
            return printable(self._compat_view(job))
        except (KeyError, TypeError, ValueError, AttributeError):
            return self.bare_view(job)

    def _compat_view(self, job: Job) -> dict:
        done, total = self.progress_of(job)
        return dict(id=job.id, status="error" if job.status == "cancelled" else job.status,
                    model=self.registry.public(job.model), prompt=prompt_text(job.spec["prompt"]),
                    seconds=job.spec["duration"], created_at=job.created_at, completed_at=job.completed_at,
                    error=job.error and redact(job.error, self.places), warning=job.warning,
                    sample_rate=job.sample_rate, progress=done / total if total else 0.0)

    def own_view(self, job: Job) -> dict:
        """tunesmith's view of a job: its request, files, seeds, progress and timings."""
        try:
            return printable(self._own_view(job))
        except (KeyError, TypeError, ValueError, AttributeError):
            return dict(self.bare_view(job), status=job.status)

    def _own_view(self, job: Job) -> dict:
        done, total = self.progress_of(job)
        spec = job.spec
        files = [dict(index=i, format=spec["format"], seed=seed, url=f"/api/jobs/{job.id}/audio?index={i}",
                      check=job.checks[i] if i < len(job.checks) else None, stem=stem_of(job, i))
                 for i, seed in enumerate(job.seeds)] if job.status == "done" else []
        view = dict(self._compat_view(job), status=job.status, done=done, total=total, duration=spec["duration"],
                    family=spec["family"], seed=spec["seed"],
                    seeds=job.seeds or variation_seeds(spec["seed"], spec["variations"]),
                    variations=spec["variations"], format=spec["format"], started_at=job.started_at,
                    timings=job.timings, files=files, cancel_requested=job.id in self.worker.cancelling,
                    runs=job.runs, request=public_request(spec))
        if spec.get("kind") != "stems":  # a job of an older version stored its model by server path
            view["request"]["model"] = self.registry.public(job.model)
        return view

    def bare_view(self, job: Job) -> dict:
        """What is sure of a job whose stored request this version cannot show (an older version's, or
        damaged): the page and clients still list it, and can delete it."""
        return printable(dict(id=job.id, status="error" if job.status == "cancelled" else job.status,
                              model=self.registry.public(job.model), prompt="", seconds=None, duration=None,
                              created_at=job.created_at, completed_at=job.completed_at, warning=job.warning,
                              error=job.error or "the stored request of this job cannot be shown",
                              progress=0.0, files=[], seeds=[], request={}))
