"""Stopping a model run from outside it: Ctrl-C, SIGTERM, a load timeout, the embedding program.

A Python signal handler runs only when the main thread is back in Python, and a
model can spin inside ONNX Runtime for as long as it likes (a ``Loop`` of 10^15
trips). ONNX Runtime stops a run when its ``RunOptions.terminate`` is set from
another thread. So a backend registers a *stopper* here; :func:`watch_signals`
(called once by every CLI) has CPython's C-level handler write each signal's
number to a pipe, and a watcher thread reading it calls every stopper at once.
The run then fails inside the engine and :class:`RunInterrupted` carries that up,
while the signal's own Python handler raises :class:`KeyboardInterrupt` (Ctrl-C)
or :class:`Terminated` (SIGTERM) in the main thread.
"""
from __future__ import annotations

import os
import signal
import threading
import weakref
from typing import Any, Callable

from ..errors import ModelLoadError, arg_name

#: how long a model's first run may take before it is refused (``--load-timeout-s``, ``load_timeout_s=``)
DEFAULT_LOAD_TIMEOUT_S = 60.0

#: exit status after SIGTERM, as a shell reports a process it ended (128 + 15)
TERMINATED_EXIT = 128 + int(signal.SIGTERM)


class RunInterrupted(KeyboardInterrupt):
    """A model run that was stopped from outside (a signal, a timeout, :func:`stop_runs`) before it ended."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: stop as Ctrl-C stops (finish or drop the batch in flight, keep partial files, print the
    summary), then exit with 128 + the signal (:data:`TERMINATED_EXIT` for SIGTERM)."""

    def __init__(self, signum: int = int(signal.SIGTERM)) -> None:
        super().__init__()
        self.signum = int(signum)


#: the signals a CLI stops on: Ctrl-C, a service manager's stop, a closed terminal or ssh session
STOP_SIGNALS = tuple(int(getattr(signal, n)) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


#: the stop signals taken even when inherited as ignored (see :func:`watch_signals`)
TAKEN_IF_IGNORED = tuple(int(getattr(signal, n)) for n in ("SIGINT", "SIGTERM") if hasattr(signal, n))

_stoppers: "weakref.WeakSet[Any]" = weakref.WeakSet()
_lock = threading.Lock()
_last_signal: list[int] = []
_watching = False


def register(owner: Any) -> None:
    """Have :func:`stop_runs` call ``owner.stop_runs()``; held weakly, so a closed backend just goes."""
    with _lock:
        _stoppers.add(owner)


def stop_runs() -> None:
    """Stop every model run now in flight in this process (any thread); each fails with RunInterrupted."""
    with _lock:
        owners = list(_stoppers)
    for owner in owners:
        try:
            owner.stop_runs()
        except Exception:  # noqa: BLE001 - a backend closing at this moment: nothing left to stop
            pass


def last_signal() -> int | None:
    """The first stop signal the watcher saw (None: none yet): what the run stops for."""
    return _last_signal[0] if _last_signal else None


def stop_requested() -> bool:
    """Whether a stop signal has come (seen by the watcher that :func:`watch_signals` starts): a wait in a thread
    where no signal handler runs, or one that must not outlast the stop (a stream's open), ends on it."""
    return bool(_last_signal)


def as_stop(exc: BaseException) -> BaseException:
    """The exception a run stopped with: ``exc``, or, when a stop signal came and library code turned its
    handler's KeyboardInterrupt into another error (TensorFlow's C++ returns it as a SystemError or ValueError
    when it lands inside a dataset or model build), the KeyboardInterrupt (:class:`Terminated`) it was."""
    seen = last_signal()
    if isinstance(exc, KeyboardInterrupt) or seen is None:
        return exc
    return KeyboardInterrupt() if seen == int(signal.SIGINT) else Terminated(seen)


def exit_code_for(exc: BaseException) -> int:
    """128 + the signal the run stopped for: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    if isinstance(exc, Terminated):
        return 128 + exc.signum
    seen = last_signal()
    return 128 + (seen if seen is not None else int(signal.SIGINT))


_handled: list[int] = []  # the stop signals the handler took, in order


def _stop(signum: int, frame: Any) -> None:
    """The first stop signal raises (KeyboardInterrupt for Ctrl-C, Terminated otherwise) and the run stops
    cleanly; a second one only stops the model runs again (never interrupting the clean stop itself, which keeps
    the partial files: two Ctrl-C in a row, or the two SIGTERMs some supervisors send, must not turn an
    interrupted run into a completed one); a third raises again, the way out of a stop that hangs."""
    _handled.append(int(signum))
    if len(_handled) == 2:
        stop_runs()
        return
    if signum == int(signal.SIGINT):
        raise KeyboardInterrupt
    raise Terminated(signum)


def watch_signals() -> bool:
    """From the main thread of a program that owns its signals (the CLIs): SIGTERM and SIGHUP raise Terminated
    as Ctrl-C raises KeyboardInterrupt, once (see :func:`_stop`), and every one stops the model runs in flight at
    once. A signal is taken where it has its default action, and SIGINT and SIGTERM also where they were inherited
    ignored: a shell without job control starts `cnn-bench ... &` with SIGINT ignored, and the run then outlived
    `kill -INT` and the script's Ctrl-C; a SIGHUP ignored stays ignored (that is what nohup asks). A handler the
    embedding program installed is left alone. Returns False when it cannot (not the main thread, no pipe)."""
    global _watching
    if _watching:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in STOP_SIGNALS:
        now = signal.getsignal(sig)
        if now == signal.SIG_DFL or (sig == int(signal.SIGINT) and now is signal.default_int_handler) or (
                now == signal.SIG_IGN and sig in TAKEN_IF_IGNORED):
            signal.signal(sig, _stop)
    try:
        r, w = os.pipe()
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except (OSError, ValueError):
        return False
    threading.Thread(target=_watch, args=(r,), name="cnnedge-signals", daemon=True).start()
    _watching = True
    return True


def _watch(fd: int) -> None:
    wanted = set(STOP_SIGNALS)
    while True:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        if not data:
            return
        got = [b for b in data if b in wanted]
        if got:
            _last_signal.extend(got)
            stop_runs()


class Deadline:
    """``with Deadline(seconds, stop):``: call ``stop()`` from a timer thread if the block outlasts
    ``seconds`` (None: no limit); ``expired`` says whether it did."""

    def __init__(self, seconds: float | None, stop: Callable[[], None]) -> None:
        self.seconds, self._stop = seconds, stop
        self.expired = False
        self._timer: threading.Timer | None = None

    def _fire(self) -> None:
        self.expired = True
        self._stop()

    def __enter__(self) -> "Deadline":
        if self.seconds is not None:
            self._timer = threading.Timer(self.seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()


def load_timeout_error(path: str, seconds: float) -> ModelLoadError:
    """The one line for a first run that outlasted ``seconds``."""
    flag = arg_name("load_timeout_s")
    return ModelLoadError(f"{path}: its first run did not finish in {seconds:g} s ({flag}); a model that never "
                          f"ends (a Loop of huge trip count?) or one too slow for this machine: if it is only slow, "
                          f"raise {flag}")


class PerThread:
    """One run handle per calling thread (ONNX Runtime's RunOptions, an OpenVINO infer request), all of them kept
    where a stop from another thread reaches them (:meth:`handles`). The list is bounded: a program that calls from
    many short-lived threads forgets the oldest."""

    LIMIT = 256

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def get(self, make: Callable[[], Any], valid: Callable[[Any], bool] = lambda h: True) -> Any:
        """This thread's handle, made by ``make`` on its first call or when ``valid`` says the old one is stale."""
        handle = self._local.__dict__.get("handle")
        if handle is None or not valid(handle):
            handle = self._local.handle = make()
            with self._lock:
                if len(self._all) > self.LIMIT:
                    del self._all[:self.LIMIT // 2]
                self._all.append(handle)
        return handle

    def handles(self) -> list[Any]:
        """Every thread's handle, for a stop."""
        with self._lock:
            return list(self._all)

    def clear(self) -> None:
        """Forget every handle: each thread makes a new one at its next call."""
        with self._lock:
            self._local = threading.local()
            self._all = []
