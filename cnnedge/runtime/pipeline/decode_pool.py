"""Items -> Batches of model-size pixels, decoded where the GIL does not serialise them.

A :class:`DecodePool` takes lists of items (one batch each) and hands back, in
submission order, a Batch whose pixels sit in a reusable buffer (a slot of a ring)
plus the rows that failed. Batches are decoded by threads of this process at first (they
start at once, share a batch in pieces, and OpenCV releases the GIL while it decodes
and resizes) and, on 4 or more workers for runs long enough to pay for starting them
(about a core-second each), by worker processes writing whole batches of files into
shared-memory slots, as a PyTorch DataLoader does. Once a worker is up, new file batches go
to the processes. Worker processes are plain ``python -m cnnedge.runtime.pipeline.decode_pool``
subprocesses running :func:`.decode_worker.worker_main`, so a caller's script is never re-imported (no
``__main__`` guard needed).

A worker process knows only its decoder (the card's input spec and preprocessing),
never the model or backend. A worker that dies on a
file (a crashing decoder, the OOM killer) is replaced; the file it was on is reported
as failed and the rest of its chunk decoded again, so no file is lost or repeated.

The pool implements the pipeline's decode stage
(:class:`~cnnedge.runtime.pipeline.decoders.DecodeStage`) around a
:class:`~cnnedge.runtime.pipeline.decoders.HostDecoder`, which its threads run and worker
processes are given (a test gives one that crashes on some files).
"""
from __future__ import annotations

import collections
import functools
import itertools
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .batch import END_OF_INPUT, Batch
from .decode_worker import shared_memory_ring, worker_env
from .decoders import HostDecoder, skipped_rows

SPAWN_AFTER_S = 1.0  # start worker processes once a run has lasted this long ...
SPAWN_MIN_LEFT_S = 4.0  # ... and, at its pace so far, has at least this long to go
PROCESS_MIN_WORKERS = 4  # below this, threads: starting processes costs about a core-second each
MAX_RING_BYTES = 1 << 30
_PREFETCH = 2  # chunks queued per worker process


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as taskset or a container's cpuset set it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass
class _Job:
    """One submitted list of items on its way through the pool: rows 0..n-1 of ``slot`` are its pixels."""

    seq: int
    items: list[Any]
    slot: int = -1
    errors: dict[int, str] = field(default_factory=dict)
    images: list[Any] | None = None
    started: float = 0.0
    last: bool = False  # the end of input, passed through in order
    left: int = 0  # pieces still decoding in threads


class _Proc:
    def __init__(self, proc: Any, conn: Any) -> None:
        self.proc, self.conn = proc, conn
        self.ready = False
        self.inflight: collections.OrderedDict[int, _Job] = collections.OrderedDict()


class DecodePool:
    """The pipeline's CPU decode stage: item lists in, Batches out in submission order (``out``, a queue),
    each Batch's buffer (a slot of a ring) back to the pool when the Batch is given back.

    ``decoder``: what the threads run and worker processes are given. ``processes``: True decodes only in
    them (started at once); None starts them on machines with :data:`PROCESS_MIN_WORKERS` or more workers
    once a run has lasted :data:`SPAWN_AFTER_S` and has, at its pace so far, :data:`SPAWN_MIN_LEFT_S` to go
    (``total``: the files expected, None if unknown); False never. Threads: ``workers - 1`` of them, and the
    inference stage decodes too while it waits (:meth:`decode_one_here`). Frames (items with an image) and
    a decoder that keeps originals stay in the threads.
    """

    def __init__(self, decoder: HostDecoder, workers: int, batch: int, out: "queue.Queue[Any]", *,
                 processes: bool | None = None, stop: threading.Event | None = None,
                 total: int | None = None) -> None:
        self.decoder, self.workers, self.batch, self.out = decoder, workers, batch, out
        self.keep = decoder.keep
        self.stop = stop or threading.Event()
        self.row_shape = decoder.preprocessor.row_shape
        self.restarts = 0
        self._procs_wanted = (not self.keep and workers >= 1
                              and (processes is True or processes is None and workers >= PROCESS_MIN_WORKERS))
        self._started = time.perf_counter()
        self._spawn_at = self._started + (0.0 if processes else SPAWN_AFTER_S)
        self._total = total
        self._decoded = 0  # files decoded so far (for the pace)
        self._only_procs = processes is True  # no decoding in threads while the workers start
        self._shm: Any = None
        self._ring: np.ndarray | None = None
        self._cursors: np.ndarray | None = None
        self._nslots = 0
        self._free: "queue.Queue[int]" = queue.Queue()
        self._inbox: "queue.Queue[tuple]" = queue.Queue()  # the manager's: jobs for processes, their news
        self._pieces: "queue.Queue[tuple[_Job, int, int]]" = queue.Queue()  # the threads': job, rows a..b
        self._piece_lock = threading.Lock()
        self._seq = itertools.count()
        self._submit_lock = threading.Lock()
        self._emit_lock = threading.Lock()
        self._finished: dict[int, _Job] = {}
        self._next = 0
        self._to_procs = False  # set once a worker process is ready: new jobs go to the processes
        self._nthreads = max(1, workers - 1)  # and the inference stage, through decode_one_here()
        self._threads: list[threading.Thread] = []
        self._procs: dict[int, _Proc] = {}
        self._manager: threading.Thread | None = None
        self._closed = False

    # setup ---------------------------------------------------------------------------
    def _make_ring(self) -> None:
        slot_bytes = self.batch * int(np.prod(self.row_shape))
        want = 2 * self.workers * _PREFETCH + 4
        nslots = max(self.workers + 3, min(want, MAX_RING_BYTES // max(1, slot_bytes)))
        ring_bytes = nslots * slot_bytes
        if self._procs_wanted:
            self._shm = shared_memory_ring(ring_bytes + (nslots + 64) * 16, ring_bytes)
        if self._shm is None:
            self._procs_wanted = False
        shape = (nslots, self.batch) + tuple(self.row_shape)
        if self._shm is not None:
            self._ring = np.ndarray(shape, np.uint8, self._shm.buf)
            self._cursors = np.ndarray((nslots + 64, 2), np.int64, self._shm.buf, offset=self._ring.nbytes)
            self._cursors[:] = -1
        else:
            self._ring = np.empty(shape, np.uint8)
        self._nslots = nslots
        for i in range(nslots):
            self._free.put(i)

    def start(self) -> None:
        self._make_ring()
        if self._procs_wanted:
            self._manager = threading.Thread(target=self._manage, name="decode manager", daemon=True)
            self._manager.start()
        if not (self._only_procs and self._procs_wanted):
            self._start_threads()

    def _start_threads(self) -> None:
        while len(self._threads) < self._nthreads:
            t = threading.Thread(target=self._thread_main, name=f"decode {len(self._threads)}", daemon=True)
            self._threads.append(t)
            t.start()

    # the batcher's side ----------------------------------------------------------------
    def submit(self, items: list[Any]) -> bool:
        """Queue one list of at most ``batch`` items; blocks for a free slot. False once stopped."""
        while not self.stop.is_set():
            try:
                slot = self._free.get(timeout=0.1)
                break
            except queue.Empty:
                continue
        else:
            return False
        with self._submit_lock:
            job = _Job(next(self._seq), items, slot=slot, errors=skipped_rows(items))
            frames = any(f.path is None for f in items)
            if not frames and (self._to_procs or self._only_procs and self._procs_wanted):
                self._inbox.put(("task", job))
            else:
                self._to_threads(job)
        return True

    def _to_threads(self, job: _Job) -> None:
        """Queue a job for the threads in pieces (at least 4 items each), so that the threads share a
        batch and one slow thread does not hold back the batches after it."""
        n = len(job.items)
        step = max(4, -(-n // self._nthreads))
        job.images = [None] * n if self.keep else None
        job.left = len(range(0, n, step))
        for a in range(0, n, step):
            self._pieces.put((job, a, min(n, a + step)))

    def end(self) -> None:
        """Pass :data:`~cnnedge.runtime.pipeline.batch.END_OF_INPUT` on in order after everything submitted."""
        with self._submit_lock:
            self._deliver(_Job(next(self._seq), [], last=True))

    def _deliver(self, job: _Job) -> None:
        """A finished job: hand it and every job now in order after it on, as Batches."""
        with self._emit_lock:
            self._decoded += len(job.items)
            self._finished[job.seq] = job
            while self._next in self._finished:
                self.out.put(self._batch_of(self._finished.pop(self._next)))
                self._next += 1

    def _batch_of(self, job: _Job) -> Any:
        if job.last:
            return END_OF_INPUT
        assert self._ring is not None
        pixels = self._ring[job.slot][:len(job.items)]
        started = job.started if any(f.path is not None for f in job.items) else None
        return Batch(job.items, pixels, job.errors, job.images, started=started,
                     release=functools.partial(self._free.put, job.slot))

    # threads -----------------------------------------------------------------------
    def _thread_main(self) -> None:
        while not self.stop.is_set():
            try:
                piece = self._pieces.get(timeout=0.1)
            except queue.Empty:
                continue
            if not self._decode_piece(*piece):
                return

    def decode_one_here(self) -> bool:
        """Decode one queued piece in the calling thread, if there is one: the inference stage calls
        this while it has nothing to run, so it decodes instead of waiting and the pool needs one thread
        fewer than the cores (a thread per core more only contends for the GIL). False when none was queued."""
        try:
            piece = self._pieces.get_nowait()
        except queue.Empty:
            return False
        self._decode_piece(*piece)
        return True

    def _decode_piece(self, job: _Job, a: int, b: int) -> bool:
        """Decode rows ``a..b`` of ``job``; hand it on when it was the last piece. False after an
        unexpected error, which goes to ``out`` so that the inference stage never waits on a lost batch."""
        if not job.started:
            job.started = time.perf_counter()
        try:
            assert self._ring is not None
            skip = {i - a: e for i, e in job.errors.items() if a <= i < b}
            errors, images = self.decoder.decode_rows(job.items[a:b], self._ring[job.slot][a:b], skip)
        except BaseException as exc:  # noqa: BLE001 - never leave the inference stage waiting
            self.out.put(exc)
            return False
        with self._piece_lock:
            job.errors.update({a + i: e for i, e in errors.items()})
            if images is not None and job.images is not None:
                job.images[a:b] = images
            job.left -= 1
            last = job.left == 0
        if last:
            self._deliver(job)
        return True

    # the manager thread (worker processes only) --------------------------------------
    def _manage(self) -> None:
        pending: collections.deque[_Job] = collections.deque()
        try:
            while not self.stop.is_set():
                try:
                    ev = self._inbox.get(timeout=0.05)
                except queue.Empty:
                    ev = None
                while ev is not None:
                    kind = ev[0]
                    if kind == "task":
                        pending.append(ev[1])
                    elif kind == "ready":
                        if ev[1] in self._procs:
                            self._procs[ev[1]].ready = True
                            self._to_procs = True
                    elif kind == "done":
                        p = self._procs.get(ev[1])
                        c = p.inflight.pop(ev[2]) if p is not None and ev[2] in p.inflight else None
                        if c is not None:
                            c.errors = ev[3]
                            self._deliver(c)
                    elif kind == "dead":
                        self._replace(ev[1], pending)
                    try:
                        ev = self._inbox.get_nowait()
                    except queue.Empty:
                        ev = None
                if (self._procs_wanted and not self._procs and (pending or self._pieces.qsize())
                        and time.perf_counter() >= self._spawn_at and self._long_enough()):
                    self._spawn_all()
                if not self._procs_wanted:  # given up on processes: what they had goes to threads
                    while pending:
                        self._to_threads(pending.popleft())
                    self._start_threads()
                    return
                ready = [p for p in self._procs.values() if p.ready]
                while pending and ready:
                    p = min(ready, key=lambda q: len(q.inflight))
                    if len(p.inflight) >= _PREFETCH:
                        break
                    c = pending.popleft()
                    c.started = time.perf_counter()
                    p.inflight[c.seq] = c
                    try:
                        p.conn.send((c.seq, c.slot, c.items, c.errors))
                    except OSError:
                        pass  # it died: its reader reports that and the chunk goes back
        except BaseException as exc:  # noqa: BLE001 - never leave the batcher waiting on a dead manager
            self.out.put(exc)

    def _long_enough(self) -> bool:
        """Whether the run will last long enough to pay for starting worker processes."""
        if self._only_procs or self._total is None:
            return True
        pace = self._decoded / max(1e-9, time.perf_counter() - self._started)
        return pace <= 0 or (self._total - self._decoded) / pace >= SPAWN_MIN_LEFT_S

    # worker processes ----------------------------------------------------------------
    def _spawn_all(self) -> None:
        for wid in range(self.workers):
            self._spawn(wid)

    def _spawn(self, wid: int) -> None:
        import pickle
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        assert self._ring is not None and self._shm is not None
        proc = subprocess.Popen([sys.executable, "-m", "cnnedge.runtime.pipeline.decode_pool"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=worker_env(), close_fds=True)
        send = Connection(os.dup(proc.stdin.fileno()), readable=False)  # type: ignore[union-attr]
        recv = Connection(os.dup(proc.stdout.fileno()), writable=False)  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        proc.stdout.close()  # type: ignore[union-attr]
        send.send_bytes(pickle.dumps((self.decoder, self._shm.name, self._ring.shape, wid)))
        self._procs[wid] = _Proc(proc, send)
        threading.Thread(target=self._reader, args=(wid, recv), name=f"decode reader {wid}", daemon=True).start()

    def _reader(self, wid: int, conn: Any) -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            self._inbox.put((msg[0], wid) + tuple(msg[1:]))
        conn.close()
        if not self._closed:
            self._inbox.put(("dead", wid))

    def _replace(self, wid: int, pending: collections.deque) -> None:
        """A worker died: blame the file it was on, put its chunks back first, start another."""
        p = self._procs.pop(wid, None)
        if p is None:
            return
        try:
            code = p.proc.wait(timeout=1.0)
        except Exception:  # noqa: BLE001 - still running after closing its pipe: end it
            p.proc.kill()
            code = p.proc.wait()
        assert self._cursors is not None
        seq, idx = (int(x) for x in self._cursors[wid])
        self._cursors[wid] = -1
        for c in reversed(p.inflight.values()):
            if c.seq == seq and 0 <= idx < len(c.items):
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                c.errors[idx] = f"the decoder crashed on this file (worker process ended with {how}); skipped"
            pending.appendleft(c)
        try:
            p.conn.close()
        except OSError:
            pass
        self.restarts += 1
        if self.restarts > 3 * self.workers + 10:  # something kills every worker: go on in threads
            self._procs_wanted = self._to_procs = False
            for q in list(self._procs.values()):
                for c in reversed(q.inflight.values()):
                    pending.appendleft(c)
            self._stop_procs()
            return
        self._spawn(wid)

    def _stop_procs(self) -> None:
        procs, self._procs = list(self._procs.values()), {}
        for p in procs:
            if not p.ready:  # still importing: nothing of ours to finish
                p.proc.kill()
                continue
            try:
                p.conn.send(None)
            except OSError:
                pass
        deadline = time.perf_counter() + 2.0
        for p in procs:
            try:
                p.proc.wait(timeout=max(0.0, deadline - time.perf_counter()))
            except Exception:  # noqa: BLE001 - busy or stuck: it has had its chance
                p.proc.kill()
                p.proc.wait()
            try:
                p.conn.close()
            except OSError:
                pass

    def close(self) -> None:
        """Stop decoding, end the worker processes and free the shared memory; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop.set()
        if self._manager is not None:
            self._manager.join(timeout=5)
        for t in self._threads:
            t.join(timeout=5)
        self._stop_procs()
        self._ring = self._cursors = None
        if self._shm is not None:
            try:
                self._shm.close()
            except BufferError:  # a chunk's view is still held by the caller: the mapping goes with it
                pass
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass
            self._shm = None


if __name__ == "__main__":
    from .decode_worker import worker_main

    worker_main()
