"""Run sources through a model into sinks: the loop cnn-infer runs, for library users too.

    from cnnedge.runtime import Classifier, run
    from cnnedge.runtime.sinks import JsonlSink, LineSink

    with Classifier("model.onnx") as clf:
        summary = run(["photos/", 0], clf, [LineSink(sys.stdout, sys.stderr), JsonlSink("out.jsonl")])
    print(summary.line())
    raise SystemExit(summary.exit_code)

:func:`run` owns the sinks it is given: when the run completes it commits them
(a file sink replaces its target), and whatever happens it closes them (a file
sink not committed keeps what it wrote as ``<name>.partial.<ext>``). Ctrl-C
ends the run (the summary says so, exit code 130), and so does SIGTERM in the CLIs
(exit code 143); an embedding program stops it from any thread with ``stop``, a
:class:`threading.Event` given to :func:`run` (set it: the batch in flight ends, or is
stopped inside the engine, and the run ends as after Ctrl-C). A failure of the model
or a sink midway ends it with the failure's message (exit code 1); a sink whose reader went away (stdout
closed by ``| head -1``) ends it quietly (exit code 141). None of these loses an earlier complete output.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, TextIO

from ..errors import CnnEdgeError, ExitCode
from .interrupt import exit_code_for
from .sinks import Progress, Sink, display_path
from .pipeline.stats import PipelineStats
from . import pipeline

if TYPE_CHECKING:
    from .classifier import Classifier


@dataclass
class RunSummary:
    """How a :func:`run` ended: the pipeline's counts, and why it stopped when it did not complete."""

    stats: PipelineStats
    interrupted: bool = False      # Ctrl-C, SIGTERM or the caller's stop event
    interrupt_code: int = int(ExitCode.INTERRUPTED)  # 130, or 143 after SIGTERM
    stopped: bool = False          # a sink asked to stop (a window closed)
    error: str | None = None       # the failure that ended the run midway
    partial: list[Path] = field(default_factory=list)  # outputs kept as <name>.partial.<ext>
    give_up_s: float | None = None
    output_closed: bool = False    # a sink's reader went away (`cnn-infer ... | head -1`): the run ended there

    @property
    def exit_code(self) -> int:
        """130 after Ctrl-C or a stop, 143 after SIGTERM, 141 when the output's reader went away (a shell's
        status for a process ended by SIGPIPE); 1 when the run failed, nothing could be processed or a stream
        was given up; 0 otherwise."""
        if self.interrupted:
            return self.interrupt_code
        if self.output_closed:
            return int(ExitCode.BROKEN_PIPE)
        if self.error is not None or self.stats.done == 0 or self.stats.given_up:
            return int(ExitCode.FAILURE)
        return int(ExitCode.OK)

    @property
    def complete(self) -> bool:
        return self.exit_code == ExitCode.OK

    def line(self) -> str:
        """The one-line summary (counts, throughput, latency), marked when interrupted or cut short."""
        cut = "interrupted; " if self.interrupted else "output closed by its reader; " if self.output_closed else ""
        return cut + self.stats.summary()

    def problems(self) -> list[str]:
        """Why the exit code is not 0, one line each (empty when it is)."""
        out = []
        if self.error is not None:
            out.append(self.error)
        elif self.stats.done == 0 and not (self.interrupted or self.output_closed or self.stats.given_up):
            out.append("nothing could be processed")
        if self.stats.given_up:
            after = f" after {self.give_up_s:g} s" if self.give_up_s else ""
            out.append(f"gave up on {', '.join(self.stats.given_up)}{after} without a frame")
        return out

    def partial_lines(self) -> list[str]:
        """Where the outputs of a run that did not complete went: say these last."""
        return [f"partial results kept in {display_path(str(p))} (the run did not complete; an earlier "
                f"{display_path(_target_name(p.name))} was left as it was)" for p in self.partial]


def _target_name(partial: str) -> str:
    """``out.partial.jsonl`` and ``out.partial-2.jsonl`` -> ``out.jsonl``."""
    import re

    return re.sub(r"\.partial(-\d+)?(?=\.[^.]*$|$)", "", partial, count=1)


def run(sources: Any, clf: "Classifier", sinks: Sequence[Sink] = (), *, batch: int | None = None,
        progress: TextIO | None = None, stats: PipelineStats | None = None, stop: Any = None,
        **options: Any) -> RunSummary:
    """Classify everything ``sources`` deliver with ``clf`` and hand each Result to every sink.

    ``sources``: what :func:`cnnedge.runtime.pipeline.run` takes (a path, folder, video,
    camera index, URL, GStreamer string, an opened Source, or a list of them). ``batch``: images per
    inference call, None for the sources' default (:func:`cnnedge.runtime.pipeline.default_batch`).
    ``options``: its keyword arguments (``max_wait_ms``, ``workers``, ``glob``, ``max_frames``, ``duration``,
    ``live``, ``open_timeout_ms``, ``read_timeout_ms``, ``give_up_s``, ``topk``: the Classifier's when
    not given); images are kept for the sinks that need them; ``clf`` gives the backend, card and
    ``reduce_decode``. ``progress``: draw a bar there when the total is known. ``stop``: a
    :class:`threading.Event`; setting it from any thread ends the run as Ctrl-C does.
    Returns a :class:`RunSummary`; user errors found before the run starts (a bad source, a bad
    option) raise as usual, after the sinks are closed.
    """
    stats = stats if stats is not None else PipelineStats()
    summary = RunSummary(stats, give_up_s=options.get("give_up_s"))
    sinks = list(sinks)
    results = None
    topk = options.pop("topk", None)
    try:
        try:
            results = pipeline.run(clf.backend, clf.card, sources, batch, stats=stats,
                                   keep_images=any(s.needs_images for s in sinks),
                                   topk=clf.topk if topk is None else topk, reduce_decode=clf.reduce_decode,
                                   **options)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM while a stream opens: a summary, as later
            summary.interrupted = True
            summary.interrupt_code = exit_code_for(exc)
            return summary
        if progress is not None and stats.total:
            sinks.append(Progress(stats.total, progress))
        watcher = _stop_watcher(stop, clf)
        try:
            for rs in results:  # one inference call's results: the sinks take them at once
                if not _deliver(sinks, rs):
                    summary.output_closed = True
                    break
                if any(s.stopped for s in sinks):
                    summary.stopped = True
                    break
                if stop is not None and stop.is_set():
                    summary.interrupted = True
                    break
        except KeyboardInterrupt as exc:
            summary.interrupted = True
            summary.interrupt_code = exit_code_for(exc)
        except (CnnEdgeError, OSError) as exc:  # the model or a sink failed midway: a summary, not a traceback
            summary.error = str(exc)
        finally:
            if watcher is not None:
                watcher.set()
            results.close()
    finally:
        _finish(sinks, summary, results is not None)
    return summary


def _deliver(sinks: Sequence[Sink], results: Sequence[Any]) -> bool:
    """Hand one batch's results to every sink; False when a sink's reader has gone (a closed pipe): the run
    ends there, quietly, as a shell pipeline expects of `cnn-infer ... | head -1`."""
    try:
        for s in sinks:
            s.write_batch(results)
    except BrokenPipeError:
        return False
    return True


def _stop_watcher(stop: Any, clf: Any) -> Any:
    """When ``stop`` is set, stop the model's runs in flight too (a batch stuck in the engine); the
    Event returned ends this watcher with the run."""
    if stop is None:
        return None
    import threading

    done = threading.Event()
    backend = clf.backend

    def watch() -> None:
        while not done.is_set():
            if stop.wait(0.1):
                if not done.is_set():
                    backend.stop_runs()
                return

    threading.Thread(target=watch, name="cnnedge-run-stop", daemon=True).start()
    return done


def _finish(sinks: list[Sink], summary: RunSummary, started: bool) -> None:
    """Commit every sink when the run completed; close them all, whatever happened (a second Ctrl-C
    while closing still closes the rest, then ends the process). A sink that cannot commit (a full disk,
    a file that appeared at its name) fails the run with its line; the others still commit."""
    if started and summary.complete:
        failed = []
        for s in sinks:
            try:
                s.commit()
            except (CnnEdgeError, OSError) as exc:
                failed.append(str(exc))
        if failed:
            summary.error = "; ".join(failed)
    pending: BaseException | None = None
    for s in sinks:
        try:
            s.close()
        except BaseException as exc:  # noqa: BLE001 - close the others first, then re-raise
            pending = pending or exc
        if s.partial is not None:
            summary.partial.append(s.partial)
    if pending is not None:
        raise pending

