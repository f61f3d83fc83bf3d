"""What a job's LoRA set is checked against at submit: each model's lora.Fitting (the shapes of the weights
adapters may reach, a few KB), recorded by the worker as the model loads and kept in the data folder
(`.fittings/`, one JSON file a model, written to a temporary name and renamed). A cluster's ingress replicas
load no model: they read what a generation replica recorded there (every node sees the data folder).

A model no worker has loaded yet has no record: its jobs' adapters are checked when they run, as before. A
record names the model's source (the -m folder or name); one recorded for another source is not used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from ..lora import Fitting, stamp

log = logging.getLogger("tunesmith.server")

FOLDER = ".fittings"  # in the data folder


class Fittings:
    """The records in `folder`/.fittings; None: nothing is recorded nor read (no data folder)."""

    def __init__(self, folder: Path | None):
        self.folder = Path(folder) / FOLDER if folder is not None else None
        self._read: dict[str, tuple] = {}  # model -> (its file's stamp, the source and Fitting it held)
        self._lock = threading.Lock()

    def _path(self, model: str) -> Path:
        return self.folder / f"{hashlib.sha256(model.encode()).hexdigest()[:24]}.json"  # names hold / and :

    def record(self, model: str, source, fitting: Fitting | None):
        """The worker, once `model` has loaded (fitting None: it swaps no adapters, nothing to record)."""
        if self.folder is None or fitting is None:
            return
        path = self._path(model)
        partial = path.with_name(f".{path.name}.partial")
        try:
            self.folder.mkdir(exist_ok=True)
            partial.write_text(json.dumps(dict(model=model, source=str(source), fitting=fitting.as_json())))
            os.replace(partial, path)
        except OSError as err:  # a full disk, say: the jobs' adapters are still checked when they run
            partial.unlink(missing_ok=True)
            log.warning("the LoRA shapes of %s were not recorded (%s): its jobs' adapters are checked as they run",
                        model, err.strerror or err)

    def get(self, model: str, source) -> Fitting | None:
        """What `model` (loaded from `source`) recorded; None when nothing usable is there. Read again only
        when its file changed (lora.stamp)."""
        if self.folder is None:
            return None
        path = self._path(model)
        now = stamp(path)
        if not now:
            return None
        with self._lock:
            kept = self._read.get(model)
        if kept is None or kept[0] != now:
            try:
                data = json.loads(path.read_text())
                kept = (now, str(data["source"]), Fitting.from_json(data["fitting"]))
            except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):  # half a file, an old form
                kept = (now, None, None)
            with self._lock:
                self._read[model] = kept
        return kept[2] if kept[1] == str(source) else None
