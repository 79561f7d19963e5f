"""A stop (Ctrl-C, SIGTERM, SIGHUP) is never an export failure.

The signal's handler raises in the main thread wherever it runs, and that may be inside a library: TensorFlow,
tf2onnx, ONNX Runtime's quantizer or Keras' loader catch what is raised there and raise their own error
instead (or swallow it), and the export's step would then report a conversion failure, exit 1, for what was
a stop. :class:`Watch` recognises the stop behind such an error, from the exception chain or from the signal
watcher of :mod:`cnnedge.runtime.interrupt`, so that the export ends as a stop (130/143/129).
"""
from __future__ import annotations

import signal

from ..runtime.interrupt import RunInterrupted, Terminated, last_signal


class Watch:
    """Created when an export starts; tells whether a stop signal has come since."""

    def __init__(self) -> None:
        self._before = last_signal()

    def stop_behind(self, exc: BaseException | None) -> KeyboardInterrupt | None:
        """The stop to raise instead of ``exc`` (a failure raised while handling a stop, or after one), or None
        when ``exc`` is a failure of its own. A :class:`RunInterrupted` alone is no stop: a load timeout stops
        a run that way too."""
        seen: set[int] = set()
        todo = [exc]
        while todo:
            e = todo.pop()
            if e is None or id(e) in seen:
                continue
            seen.add(id(e))
            if isinstance(e, Terminated):
                return Terminated(e.signum)
            if isinstance(e, KeyboardInterrupt) and not isinstance(e, RunInterrupted):
                return KeyboardInterrupt()
            todo += [e.__cause__, e.__context__]
        return self.signalled()

    def signalled(self) -> KeyboardInterrupt | None:
        """The stop for a signal the watcher has seen since the export started (one a library swallowed)."""
        now = last_signal()
        if now is None or self._before is not None:
            return None
        return KeyboardInterrupt() if now == int(signal.SIGINT) else Terminated(now)
