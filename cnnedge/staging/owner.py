"""Who owns a staged file or folder: a process, named by its pid, its start time and its host.

Every leftover is judged by this one rule: its owner is alive (this process, or a process on this host with
that pid and start time that is not a zombie, or a process on another host, which cannot be checked) or it is
dead (the pid is gone, is a zombie, or now belongs to a process started at another time). Standard library only.
"""
from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path


def _stat(pid: int) -> tuple[str, str] | None:
    """The state letter and start time (clock ticks since boot) of process ``pid``, from ``/proc``; None where
    there is no ``/proc`` to read."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # after the command name, which may hold spaces
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _host_tag() -> str:
    """Eight hex digits naming this host: short enough for a file name."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]


HOST = _host_tag()


@dataclass(frozen=True)
class Owner:
    """The process a staged file or folder belongs to; ``started`` and ``host`` are "" where unknown (an older
    name or record, which then counts as this host's)."""

    pid: int
    started: str = ""
    host: str = ""

    @property
    def token(self) -> str:
        """How a name carries the owner: ``<pid>-<start time or 0>-<host tag>``."""
        return f"{self.pid}-{self.started or 0}-{self.host or HOST}"

    def as_record(self) -> dict:
        return {"pid": self.pid, "started": self.started, "host": self.host or HOST}

    def mine(self) -> bool:
        """Whether this process is the owner."""
        return self.pid == os.getpid() and (self.host or HOST) == HOST \
            and (not self.started or self.started == me().started)

    def alive(self) -> bool:
        """Whether the owner may still be writing (see the module's rule)."""
        if self.host and self.host != HOST:
            return True  # another machine's process (a shared folder): never judged dead from here
        if self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process
        except OverflowError:
            return False
        stat = _stat(self.pid)
        if stat is None:
            return True  # no /proc (or not ours to read): kill() says it exists
        return stat[0] not in "ZX" and (not self.started or stat[1] == self.started)


def me() -> Owner:
    """This process."""
    stat = _stat(os.getpid())
    return Owner(os.getpid(), stat[1] if stat else "", HOST)


def parse_token(text: str) -> Owner | None:
    """The owner a name carries after its prefix (``<pid>-<start>-<host>-...``; older names carry
    ``<pid>-<start>-...`` or ``<pid>-...``); None when ``text`` does not start with a pid."""
    parts = text.split("-")
    if len(parts) < 2 or not parts[0].isdigit():
        return None
    started = parts[1] if len(parts) >= 3 and parts[1].isdigit() and parts[1] != "0" else ""
    host = parts[2] if len(parts) >= 4 and len(parts[2]) == 8 and all(c in "0123456789abcdef" for c in parts[2]) \
        else ""
    return Owner(int(parts[0]), started, host)


def from_record(data: dict) -> Owner | None:
    """The owner a record names; None when it names none (an older record: its writer counts as dead)."""
    pid = data.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    started = data.get("started") if isinstance(data.get("started"), str) else ""
    host = data.get("host") if isinstance(data.get("host"), str) else ""
    return Owner(pid, started, host)
