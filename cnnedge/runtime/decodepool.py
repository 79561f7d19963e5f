"""Files -> batches of model-size pixels, decoded where the GIL does not serialise them.

A :class:`DecodePool` takes chunks of files (one batch each) and hands back, in
submission order, the chunk's pixels in a reusable batch buffer (a slot) plus the
files that failed. Chunks are decoded by threads of this process at first (they
start at once, share a chunk in pieces, and OpenCV releases the GIL while it decodes
and resizes) and, on 4 or more workers for runs long enough to pay for starting them
(about a core-second each), by worker processes writing whole chunks into
shared-memory slots, as a PyTorch DataLoader does. Once a worker is up, new chunks go
to the processes. Worker processes are plain ``python -m cnnedge.runtime.decodepool``
subprocesses, so a caller's script is never re-imported (no ``__main__`` guard needed).

A worker process knows only the decode parameters (:class:`DecodeParams`: the card's
input spec and preprocessing), never the model or backend. A worker that dies on a
file (a crashing decoder, the OOM killer) is replaced; the file it was on is reported
as failed and the rest of its chunk decoded again, so no file is lost or repeated.

Test hook: the environment variable ``CNNEDGE_TEST_DECODE_CRASH`` (a file-name
substring) makes a worker *process* exit abruptly on such files. It exists because no
real image reliably crashes OpenCV's decoders; nothing else reads it.
"""
from __future__ import annotations

import collections
import itertools
import os
import queue
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..card import InputSpec, Preprocess
from ..imaging.errors import ImageError
from ..imaging.files import read_file
from ..imaging.prepare import decode_pixels

CRASH_HOOK = "CNNEDGE_TEST_DECODE_CRASH"
SPAWN_AFTER_S = 1.0  # start worker processes once a run has lasted this long ...
SPAWN_MIN_LEFT_S = 4.0  # ... and, at its pace so far, has at least this long to go
PROCESS_MIN_WORKERS = 4  # below this, threads: starting processes costs about a core-second each
MAX_RING_BYTES = 1 << 30
_PREFETCH = 2  # chunks queued per worker process


@dataclass(frozen=True)
class DecodeParams:
    """All a worker process needs: the model input (size, colour, channels), the resize mode, reduced decode."""

    input: InputSpec
    preprocess: Preprocess
    reduce: bool = True

    def decode(self, path: str) -> np.ndarray:
        return decode_pixels(read_file(path), path, self.input, self.preprocess, self.reduce)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as taskset or a container's cpuset set it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _error_text(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, ImageError) else f"{type(exc).__name__}: {exc}"


def skipped_rows(frames: Sequence[Any]) -> dict[int, str] | None:
    """The rows of a chunk that are reported, never read (a folder's hidden, non-image or non-regular
    entries: ``Frame.skip``), with their reason; None when there are none."""
    rows = {i: f.skip.reason for i, f in enumerate(frames) if getattr(f, "skip", None) is not None}
    return rows or None


def decode_into(decode: Callable[[str], Any], paths: Sequence[str], out: np.ndarray,
                skip: dict[int, str] | None = None, keep: bool = False,
                cursor: np.ndarray | None = None) -> tuple[dict[int, str], list[Any] | None]:
    """Decode ``paths`` into ``out[i]``; returns the failures (index -> reason) and, with ``keep``,
    the originals. ``decode`` returns the pixels, or ``(pixels, original)`` when ``keep``.
    ``cursor`` (a worker's) records the index being decoded, so a crash names its file."""
    errors = dict(skip or {})
    images: list[Any] | None = [None] * len(paths) if keep else None
    for i, p in enumerate(paths):
        if i in errors:
            continue
        if cursor is not None:
            cursor[1] = i
            hook = os.environ.get(CRASH_HOOK)
            if hook and hook in os.path.basename(p):
                os._exit(70)
        try:
            got = decode(p)
            if keep:
                got, images[i] = got  # type: ignore[index]
            out[i] = got
        except Exception as exc:  # noqa: BLE001 - one bad file never ends a run
            errors[i] = _error_text(exc)
    return errors, images


def _worker_main() -> None:
    """A worker process (``python -m cnnedge.runtime.decodepool``): decode chunks into the shared ring until
    told to stop or the parent goes. Started as a plain subprocess, so a caller's script is never re-imported."""
    import mmap
    import pickle
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    rd, wr = Connection(os.dup(0), writable=False), Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # a library's print must not corrupt the pipe
    params, shm_name, ring_shape, wid, crash = pickle.loads(rd.recv_bytes())
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
    if crash:
        os.environ[CRASH_HOOK] = crash
    wr.send(("ready",))
    while True:
        try:
            msg = rd.recv()
        except (EOFError, OSError):
            break  # the parent is gone
        if msg is None:
            break
        seq, slot, paths, skip = msg
        cursor[0], cursor[1] = seq, -1
        errors, _ = decode_into(params.decode, paths, ring[slot], skip, cursor=cursor)
        cursor[0] = -1
        wr.send(("done", seq, errors))


@dataclass
class Chunk:
    """One decoded chunk: ``pixels`` rows 0..n-1 are the files' (failed rows hold garbage)."""

    seq: int
    frames: list[Any]
    pixels: np.ndarray | None = None
    errors: dict[int, str] | None = None
    images: list[Any] | None = None
    slot: int = -1
    t0: float = 0.0
    marker: Any = None  # passed through in order (a source's end), no files
    left: int = 0  # pieces still decoding in threads


class _Proc:
    def __init__(self, proc: Any, conn: Any) -> None:
        self.proc, self.conn = proc, conn
        self.ready = False
        self.inflight: collections.OrderedDict[int, Chunk] = collections.OrderedDict()


class DecodePool:
    """Chunks in, decoded chunks out in submission order (``out``, a queue), slots recycled by ``release``.

    ``decode``: path -> pixels (or (pixels, original) with ``keep``), used by the threads.
    ``params``: what worker processes use; None keeps decoding in threads.
    ``processes``: True decodes only in them (started at once); None starts them on machines with
    :data:`PROCESS_MIN_WORKERS` or more workers once a run has lasted :data:`SPAWN_AFTER_S` and has,
    at its pace so far, :data:`SPAWN_MIN_LEFT_S` to go (``total``: the files expected, None if
    unknown); False never. Threads: ``workers - 1`` of them, and the inference thread decodes too
    while it waits (:meth:`help`).
    """

    def __init__(self, decode: Callable[[str], Any], params: DecodeParams | None, workers: int, batch: int,
                 out: "queue.Queue[Any]", *, keep: bool = False, processes: bool | None = None,
                 stop: threading.Event | None = None, total: int | None = None) -> None:
        self.decode, self.params, self.workers, self.batch, self.out = decode, params, workers, batch, out
        self.keep = keep
        self.stop = stop or threading.Event()
        spec = params.input if params is not None else None
        self.row_shape = (spec.height, spec.width, spec.channels) if spec is not None else None
        self.restarts = 0
        self._procs_wanted = (params is not None and not keep and workers >= 1
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
        self._inbox: "queue.Queue[tuple]" = queue.Queue()  # the manager's: tasks for processes, their news
        self._tasks: "queue.Queue[tuple[Chunk, int, int]]" = queue.Queue()  # the threads': chunk, rows a..b
        self._piece_lock = threading.Lock()
        self._seq = itertools.count()
        self._submit_lock = threading.Lock()
        self._emit_lock = threading.Lock()
        self._done: dict[int, Chunk] = {}
        self._next = 0
        self._to_procs = False  # set once a worker process is ready: new chunks go to the processes
        self._nthreads = max(1, workers - 1)  # and the inference thread, through help()
        self._threads: list[threading.Thread] = []
        self._procs: dict[int, _Proc] = {}
        self._manager: threading.Thread | None = None
        self._closed = False

    # setup ---------------------------------------------------------------------------
    def _make_ring(self, row_shape: tuple[int, ...]) -> None:
        self.row_shape = row_shape
        slot_bytes = self.batch * int(np.prod(row_shape))
        want = 2 * self.workers * _PREFETCH + 4
        nslots = max(self.workers + 3, min(want, MAX_RING_BYTES // max(1, slot_bytes)))
        ring_bytes = nslots * slot_bytes
        shared = False
        if self._procs_wanted:
            try:
                free = shutil.disk_usage("/dev/shm").free
            except OSError:
                free = 0
            # tmpfs hands out pages on first write: a ring larger than what is free would end in SIGBUS
            if free > 2 * ring_bytes:
                from multiprocessing import shared_memory

                try:
                    self._shm = shared_memory.SharedMemory(create=True, size=ring_bytes + (nslots + 64) * 16)
                    shared = True
                except OSError:
                    self._shm = None
        if not shared:
            self._procs_wanted = False
        shape = (nslots, self.batch) + tuple(row_shape)
        if shared:
            self._ring = np.ndarray(shape, np.uint8, self._shm.buf)
            self._cursors = np.ndarray((nslots + 64, 2), np.int64, self._shm.buf, offset=self._ring.nbytes)
            self._cursors[:] = -1
        else:
            self._ring = np.empty(shape, np.uint8)
        self._nslots = nslots
        for i in range(nslots):
            self._free.put(i)

    def start(self) -> None:
        if self.row_shape is not None:
            self._make_ring(self.row_shape)
            self._start_workers()

    def _start_workers(self) -> None:
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

    # the feeders' side ---------------------------------------------------------------
    def submit(self, frames: list[Any]) -> bool:
        """Queue one chunk (at most ``batch`` frames with paths); blocks for a free slot. False once stopped."""
        if self._ring is None:
            with self._submit_lock:
                if self._ring is None:  # a model without a card: the first image sets the row shape
                    self._make_ring(self._probe_shape(frames))
                    self._start_workers()
        while not self.stop.is_set():
            try:
                slot = self._free.get(timeout=0.1)
                break
            except queue.Empty:
                continue
        else:
            return False
        with self._submit_lock:
            c = Chunk(next(self._seq), frames, slot=slot, errors=skipped_rows(frames))
            if self._to_procs or self._only_procs and self._procs_wanted:
                self._inbox.put(("task", c))
            else:
                self._to_threads(c)
        return True

    def _to_threads(self, c: Chunk) -> None:
        """Queue a chunk for the threads in pieces (at least 4 files each), so that the threads share a
        batch and one slow thread does not hold back the batches after it."""
        n = len(c.frames)
        step = max(4, -(-n // self._nthreads))
        c.errors = dict(c.errors or {})
        c.images = [None] * n if self.keep else None
        c.left = len(range(0, n, step))
        for a in range(0, n, step):
            self._tasks.put((c, a, min(n, a + step)))

    def mark(self, marker: Any) -> None:
        """Pass ``marker`` through in order after everything submitted so far."""
        with self._submit_lock:
            self._deliver(Chunk(next(self._seq), [], marker=marker))

    def _deliver(self, c: Chunk) -> None:
        """A finished chunk: hand it and every chunk now in order after it on."""
        with self._emit_lock:
            self._decoded += len(c.frames)
            self._done[c.seq] = c
            while self._next in self._done:
                self.out.put(self._done.pop(self._next))
                self._next += 1

    def release(self, slot: int) -> None:
        if slot >= 0:
            self._free.put(slot)

    def _probe_shape(self, frames: list[Any]) -> tuple[int, ...]:
        for f in frames:
            if getattr(f, "skip", None) is not None:
                continue
            try:
                got = self.decode(f.path)
                px = got[0] if self.keep else got
                return tuple(px.shape)
            except Exception:  # noqa: BLE001 - a bad first file: try the next
                continue
        return (1, 1, 1)  # every file failed: any shape carries their errors

    # threads -----------------------------------------------------------------------
    def _thread_main(self) -> None:
        while not self.stop.is_set():
            try:
                task = self._tasks.get(timeout=0.1)
            except queue.Empty:
                continue
            if not self._decode_piece(*task):
                return

    def help(self) -> bool:
        """Decode one queued piece in the caller's thread, if there is one: the inference thread calls
        this while it has nothing to run, so it decodes instead of waiting and the pool needs one thread
        fewer than the cores (a thread per core more only contends for the GIL). False when none was queued."""
        try:
            task = self._tasks.get_nowait()
        except queue.Empty:
            return False
        self._decode_piece(*task)
        return True

    def _decode_piece(self, c: Chunk, a: int, b: int) -> bool:
        """Decode rows ``a..b`` of ``c``; hand the chunk on when it was the last piece. False after an
        unexpected error, which goes to ``out`` so the batcher never waits on a lost chunk."""
        if not c.t0:
            c.t0 = time.perf_counter()
        try:
            assert self._ring is not None
            skip = {i - a: e for i, e in (c.errors or {}).items() if a <= i < b}
            errors, images = decode_into(self.decode, [f.path for f in c.frames[a:b]], self._ring[c.slot][a:b],
                                         skip, keep=self.keep)
        except BaseException as exc:  # noqa: BLE001 - never leave the batcher waiting
            self.out.put(exc)
            return False
        with self._piece_lock:
            c.errors.update({a + i: e for i, e in errors.items()})  # type: ignore[union-attr]
            if images is not None and c.images is not None:
                c.images[a:b] = images
            c.left -= 1
            last = c.left == 0
        if last:
            c.pixels = self._ring[c.slot][:len(c.frames)]
            self._deliver(c)
        return True

    # the manager thread (worker processes only) --------------------------------------
    def _manage(self) -> None:
        pending: collections.deque[Chunk] = collections.deque()
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
                            c.pixels = self._ring[c.slot][:len(c.frames)]  # type: ignore[index]
                            self._deliver(c)
                    elif kind == "dead":
                        self._replace(ev[1], pending)
                    try:
                        ev = self._inbox.get_nowait()
                    except queue.Empty:
                        ev = None
                if (self._procs_wanted and not self._procs and (pending or self._tasks.qsize())
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
                    c.t0 = time.perf_counter()
                    p.inflight[c.seq] = c
                    try:
                        p.conn.send((c.seq, c.slot, [f.path for f in c.frames], c.errors or {}))
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
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("OMP_NUM_THREADS", "1")
        proc = subprocess.Popen([sys.executable, "-m", "cnnedge.runtime.decodepool"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env, close_fds=True)
        send = Connection(os.dup(proc.stdin.fileno()), readable=False)  # type: ignore[union-attr]
        recv = Connection(os.dup(proc.stdout.fileno()), writable=False)  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        proc.stdout.close()  # type: ignore[union-attr]
        send.send_bytes(pickle.dumps((self.params, self._shm.name, self._ring.shape, wid, os.environ.get(CRASH_HOOK))))
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
            if c.seq == seq and 0 <= idx < len(c.frames):
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                c.errors = dict(c.errors or {})
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
    _worker_main()
