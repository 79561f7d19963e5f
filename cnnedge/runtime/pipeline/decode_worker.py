"""The worker-process side of :class:`~.decode_pool.DecodePool`: what a decode worker runs, the environment it
starts in and the shared-memory ring it writes into.

A worker is a plain ``python -m cnnedge.runtime.pipeline.decode_pool`` subprocess (so a caller's script is never
re-imported); it knows only its decoder (the card's input spec and preprocessing), never the model or backend.
"""
from __future__ import annotations

import os
import shutil
import signal
from typing import Any

import numpy as np


def worker_main() -> None:
    """A worker process (``python -m cnnedge.runtime.pipeline.decode_pool``): decode chunks into the shared ring until
    told to stop or the parent goes. Started as a plain subprocess, so a caller's script is never re-imported."""
    import mmap
    import pickle
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    rd, wr = Connection(os.dup(0), writable=False), Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # a library's print must not corrupt the pipe
    decoder, shm_name, ring_shape, wid = pickle.loads(rd.recv_bytes())
    try:
        import cv2

        cv2.setNumThreads(1)  # one process per core already
    except Exception:  # noqa: BLE001
        pass
    fd = os.open("/dev/shm/" + shm_name.lstrip("/"), os.O_RDWR)
    try:
        mm = mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    ring = np.ndarray(ring_shape, np.uint8, mm)
    cursors = np.ndarray((ring_shape[0] + 64, 2), np.int64, mm, offset=ring.nbytes)
    cursor = cursors[wid]
    wr.send(("ready",))
    while True:
        try:
            msg = rd.recv()
        except (EOFError, OSError):
            break  # the parent is gone
        if msg is None:
            break
        seq, slot, items, skip = msg
        cursor[0], cursor[1] = seq, -1
        errors, _ = decoder.decode_rows(items, ring[slot], skip, cursor=cursor)
        cursor[0] = -1
        wr.send(("done", seq, errors))




def shared_memory_ring(size: int, ring_bytes: int) -> Any:
    """A shared-memory block for the ring, or None when /dev/shm has not room for twice the ring (tmpfs
    hands out pages on first write: a ring larger than what is free would end in SIGBUS)."""
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return None
    if free <= 2 * ring_bytes:
        return None
    from multiprocessing import shared_memory

    try:
        return shared_memory.SharedMemory(create=True, size=size)
    except OSError:
        return None


def worker_env() -> dict[str, str]:
    """A worker process's environment: one OpenMP thread, and this package's folder on ``PYTHONPATH``
    only when an installed cnnedge (editable or not) is not this one (a checkout run from its folder)."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # cnnedge/runtime/pipeline/
    if not _installed_is(here):
        root = os.path.dirname(here)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _installed_is(package_dir: str) -> bool:
    """Whether the installed distribution of cnnedge provides the package at ``package_dir``."""
    import json
    from importlib import metadata

    try:
        dist = metadata.distribution("cnnedge")
    except metadata.PackageNotFoundError:
        return False
    url = json.loads(dist.read_text("direct_url.json") or "{}")
    if url.get("dir_info", {}).get("editable"):
        from urllib.parse import unquote, urlparse

        src = unquote(urlparse(url.get("url", "")).path)
        return os.path.realpath(os.path.join(src, "cnnedge")) == os.path.realpath(package_dir)
    return os.path.realpath(str(dist.locate_file("cnnedge"))) == os.path.realpath(package_dir)


