"""Several cameras, one model: frames from all cameras batched into shared inference calls, results routed back.

Shows: :func:`cnnedge.runtime.run` with a list of live sources and a sink of
its own (a :class:`~cnnedge.runtime.sinks.Sink` with one ``write``). Each camera is read
in its own thread (newest frame only); the runtime's batcher closes a batch
when it holds ``--batch`` frames or ``--max-wait-ms`` after its first frame,
so one inference call carries frames from several cameras and a slow camera
never holds the others back. Each Result names its source, so results go back
to a per-camera handler (here: the last label and a count per camera; a robot
would update that camera's world model).

Run:
    python examples/multi_camera.py runs/demo/model.onnx --camera 0 --camera 1
    python examples/multi_camera.py runs/demo/model.onnx --video a.avi --video b.avi --seconds 5   # no cameras
Per result:
    [cam0] frame 12 label 3 score 0.991 latency 2.1 ms (call 7: cam0+cam1)
At the end, per camera: results, mean latency, and how many calls were shared.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # video_camera.py beside this file

from cnnedge.artifact.kinds import BACKEND_CHOICES  # noqa: E402
from cnnedge.cli import run_cli  # noqa: E402
from cnnedge.errors import UsageError  # noqa: E402
from cnnedge.runtime import Classifier, Result, open_source, run  # noqa: E402
from cnnedge.runtime.sinks import Sink  # noqa: E402
from cnnedge.runtime.sources import Source, SourceError  # noqa: E402


@dataclass
class CameraState:
    """What one camera's consumer keeps: the latest label and some counters."""

    name: str
    results: int = 0
    last_label: str | None = None
    latency_ms: list[float] = field(default_factory=list)

    def on_result(self, r: Result) -> None:
        self.results += 1
        self.last_label = r.prediction.label if r.prediction else None
        if r.latency_ms is not None:
            self.latency_ms.append(r.latency_ms)


class CameraRouter(Sink):
    """Routes each Result back to its camera and prints one call's results together, once every camera
    in that call is known (results of one inference call arrive one after the other)."""

    def __init__(self, by_source: dict[str, CameraState], quiet: bool) -> None:
        self.by_source, self.quiet = by_source, quiet
        self.calls: dict[int, set[str]] = collections.defaultdict(set)  # inference call -> cameras in it
        self.pending: list[Result] = []

    def write(self, r: Result) -> None:
        if self.pending and r.batch != self.pending[-1].batch:
            self.flush()
        if r.batch is not None:
            self.calls[r.batch].add(self.by_source[r.source].name)
        self.pending.append(r)

    def flush(self) -> None:
        for r in self.pending:
            cam = self.by_source[r.source]
            cam.on_result(r)  # route the result back to its camera
            if self.quiet:
                continue
            if r.ok:
                print(f"[{cam.name}] frame {r.frame} label {r.prediction.label} score {r.prediction.score:.3f} "
                      f"latency {r.latency_ms:.1f} ms (call {r.batch}: {'+'.join(sorted(self.calls[r.batch]))})",
                      flush=True)
            else:
                print(f"[{cam.name}] frame {r.frame} error {r.error}", flush=True)
        self.pending.clear()

    def close(self) -> None:
        self.flush()


def open_cameras(args: argparse.Namespace) -> list[Source]:
    """One live source per camera (or per video file played as a camera)."""
    from video_camera import VideoCamera

    sources: list[Source] = []
    try:
        for v in args.video or []:
            if not Path(v).is_file():
                raise UsageError(f"--video {v}: no such file")
            sources.append(VideoCamera(v, fps=args.fps, name=f"cam{len(sources)}:{v}"))
        if not args.video:
            for c in args.camera or ["0"]:  # an index, /dev/videoN, a URL, csi://N: the runtime's live sources
                try:
                    sources.append(open_source(c))
                except SourceError as exc:
                    raise SourceError(f"{exc}; without cameras, give video files: --video a.avi --video b.avi"
                                      ) from None
    except BaseException:
        for s in sources:
            s.close()
        raise
    return sources


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="multi_camera.py", description=__doc__.split("\n")[0])
    p.add_argument("model", help="a .onnx, .engine or .keras model with its card (e.g. runs/demo/model.onnx)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--camera", action="append", metavar="CAM",
                     help="camera index, /dev/videoN, URL or csi://N; repeat for each camera")
    src.add_argument("--video", action="append", metavar="FILE",
                     help="a video file played at its frame rate as a camera; repeat for each")
    p.add_argument("--fps", type=float, help="frame rate for --video (default: each file's)")
    p.add_argument("--batch", type=int, help="frames per inference call (default: one per camera)")
    p.add_argument("--max-wait-ms", type=float, default=20.0,
                   help="close a batch this long after its first frame (default 20)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds (default: until the cameras end)")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="which backend runs the model (default auto)")
    p.add_argument("--quiet", action="store_true", help="only the per-camera summary")
    args = p.parse_args(argv)

    with Classifier(args.model, args.backend) as clf:
        sources = open_cameras(args)
        by_source = {s.name: CameraState(f"cam{i}") for i, s in enumerate(sources)}  # Result.source -> camera
        batch = args.batch or len(sources)
        print(f"{clf!r}; {len(sources)} cameras, batch {batch}, max wait {args.max_wait_ms:g} ms", flush=True)
        router = CameraRouter(by_source, args.quiet)
        summary = run(sources, clf, [router], batch=batch, max_wait_ms=args.max_wait_ms, duration=args.seconds)

    stats, calls = summary.stats, router.calls
    shared = sum(1 for cams in calls.values() if len(cams) > 1)
    print(f"summary: {stats.done} results in {len(calls)} inference calls ({shared} shared by several cameras) "
          f"over {stats.elapsed:.1f} s; {stats.dropped} frames dropped (newest-frame-only)"
          + ("; interrupted" if summary.interrupted else ""), flush=True)
    for cam in by_source.values():
        mean = sum(cam.latency_ms) / len(cam.latency_ms) if cam.latency_ms else float("nan")
        print(f"  {cam.name}: {cam.results} results, last label {cam.last_label}, mean latency {mean:.1f} ms",
              flush=True)
    for line in summary.problems():
        print(f"error: {line}", flush=True)
    if summary.exit_code:
        return summary.exit_code
    return 0 if all(c.results for c in by_source.values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(run_cli("multi_camera.py", main))
