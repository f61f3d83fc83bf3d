"""A cluster's data folder must be one folder that every node sees: the audio a generation replica writes is
read by whichever ingress replica a client reaches. Each replica proves it at start: it writes a probe file
named after itself (to a temporary name, renamed), reads it back, then reads the probe files the other
replicas wrote (the job store, which every replica shares, lists them and what each holds). A replica that
cannot read another's probe is on a node that does not mount the same folder: it stops with one line.
Its own probe is listed only once it has seen everyone else's, and taken away when it stops."""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
from pathlib import Path

from ..errors import TunesmithError

PROBES = ".probes"  # in the data folder
PROBE_AGE_S = 3600.0  # a probe older than this (its replica gone without a clean stop) is not looked for


def probe_name(replica: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", replica)


class SharedFolder:
    """The probe of one replica (`replica`: its id, unique in the cluster) in the store's data folder."""

    def __init__(self, store, replica: str):
        self.store, self.replica = store, replica
        self.folder = Path(store.folder)
        self.path = self.folder / PROBES / probe_name(replica)

    def check(self) -> int:
        """Write this replica's probe, read it and every other live replica's -> how many others were seen."""
        host = socket.gethostname()
        token = secrets.token_hex(8)
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            self.path.parent.mkdir(exist_ok=True)
            partial.write_text(token)
            partial.replace(self.path)
            seen = self.path.read_text()
        except OSError as err:
            raise TunesmithError(f"cannot write and read the data folder {self.folder} on {host} "
                                 f"({err.strerror or err}): every node must see the same shared folder") from None
        finally:
            partial.unlink(missing_ok=True)
        if seen != token:
            raise TunesmithError(f"the data folder {self.folder} did not give back what {host} wrote to it")
        others = [p for p in self.store.probes(PROBE_AGE_S) if p["replica"] != self.replica]
        for other in others:
            try:
                theirs = (self.path.parent / probe_name(other["replica"])).read_text()
            except OSError:
                theirs = None
            if theirs != other["token"]:
                self.path.unlink(missing_ok=True)
                raise TunesmithError(
                    f"the data folder {self.folder} is not shared: on {host} it lacks the probe file that replica "
                    f"{other['replica']} wrote there on {other['host']}; every node must mount the same folder "
                    "(NFS, or an object store mounted there)")
        self.store.add_probe(self.replica, token, host)
        return len(others)

    def remove(self):
        """A clean stop: this replica's probe is no longer looked for."""
        with contextlib.suppress(Exception):
            self.store.remove_probe(self.replica)
        self.path.unlink(missing_ok=True)
