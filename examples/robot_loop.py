"""A robot's control loop: classify the newest camera frame at a fixed rate and act on confident labels.

Shows: embedding cnnedge's ``Classifier`` in a control loop. The camera is a
live source read in its own thread that keeps only the newest frame, so a slow
tick never builds a backlog (stale frames are dropped and counted). Each tick
takes the newest frame, classifies it, and acts when the top label is one of
``--act-on`` with a score of at least ``--threshold``; every tick prints one
line with the frame's age (capture to result) and the inference time.

Run:
    python examples/robot_loop.py runs/demo/model.onnx --camera 0 --rate 10 --act-on 7 --threshold 0.9
    python examples/robot_loop.py runs/demo/model.onnx --video clip.avi --seconds 5   # no camera: a video file
                                                                                    # played at its frame rate
Per tick:
    tick 12 frame 37 label 7 score 0.981 infer 0.4 ms age 3.1 ms -> ACT 7
    tick 13 no new frame (camera slower than the loop)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # video_camera.py beside this file

from cnnedge.artifact.kinds import BACKEND_CHOICES  # noqa: E402
from cnnedge.cli import run_cli  # noqa: E402
from cnnedge.errors import UsageError  # noqa: E402
from cnnedge.runtime import Classifier, Prediction, open_source  # noqa: E402
from cnnedge.runtime.sources import SourceError  # noqa: E402


def decide(pred: Prediction, act_on: set[str], threshold: float) -> str:
    """The robot's policy: ACT on a confident target label, IGNORE other confident labels, else UNSURE."""
    if pred.score < threshold:
        return "UNSURE"
    if not act_on or pred.label in act_on:
        return f"ACT {pred.label}"
    return "IGNORE"


def act(action: str) -> None:
    """Where a real robot commands its actuators (stop, grasp, turn...); here the decision is printed."""


def open_camera(args: argparse.Namespace):
    if args.video is not None:
        from video_camera import VideoCamera

        return VideoCamera(args.video, fps=args.fps)
    try:
        return open_source(args.camera)  # a camera index, /dev/videoN, rtsp://... or csi://N: a live source
    except SourceError as exc:
        raise SourceError(f"{exc}; without a camera, give a video file: --video clip.avi") from None


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="robot_loop.py", description=__doc__.split("\n")[0])
    p.add_argument("model", help="a .onnx, .engine or .keras model with its card (e.g. runs/demo/model.onnx)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--camera", default="0", help="camera index, /dev/videoN, URL or csi://N (default 0)")
    src.add_argument("--video", help="a video file played at its frame rate, when no camera is present")
    p.add_argument("--fps", type=float, help="frame rate for --video (default: the file's)")
    p.add_argument("--rate", type=float, default=10.0, help="control loop rate in Hz (default 10)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds (default: until the camera ends)")
    p.add_argument("--act-on", action="append", default=[], metavar="LABEL",
                   help="labels to act on; repeat for several (default: any confident label)")
    p.add_argument("--threshold", type=float, default=0.8, help="minimum score to act (default 0.8)")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="which backend runs the model (default auto)")
    args = p.parse_args(argv)
    if args.rate <= 0:
        raise UsageError(f"--rate must be positive, got {args.rate}")
    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.video is not None and not Path(args.video).is_file():
        raise UsageError(f"--video {args.video}: no such file")

    period = 1.0 / args.rate
    threads = 1 if Path(args.model).suffix.lower() == ".onnx" else None  # ONNX Runtime: 1 thread, steadier latency
    with Classifier(args.model, args.backend, threads=threads) as clf:
        unknown = set(args.act_on) - set(clf.card.classes)
        if unknown:
            raise UsageError(f"--act-on {', '.join(sorted(unknown))}: not a class of this model "
                             f"({', '.join(clf.card.classes)})")
        cam = open_camera(args)
        print(f"{clf!r}; loop at {args.rate:g} Hz on {cam.name}", flush=True)
        ticks = frames = overruns = 0
        infer_ms: list[float] = []
        age_ms: list[float] = []
        start = next_tick = time.perf_counter()
        try:
            while args.seconds is None or time.perf_counter() - start < args.seconds:
                try:
                    frame = cam.get(timeout=period / 2)  # the newest frame not yet seen, or None
                except StopIteration:
                    print("camera ended", flush=True)
                    break
                ticks += 1
                if frame is None:
                    print(f"tick {ticks} no new frame (camera slower than the loop)", flush=True)
                else:
                    frames += 1
                    t0 = time.perf_counter()
                    pred = clf.predict(frame.image)
                    t1 = time.perf_counter()
                    action = decide(pred, set(args.act_on), args.threshold)
                    act(action)
                    infer_ms.append((t1 - t0) * 1000)
                    age_ms.append((t1 - frame.t0) * 1000)
                    print(f"tick {ticks} frame {frame.frame} label {pred.label} score {pred.score:.3f} "
                          f"infer {infer_ms[-1]:.1f} ms age {age_ms[-1]:.1f} ms -> {action}", flush=True)
                next_tick += period
                delay = next_tick - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                else:  # the tick took longer than the period: skip the missed ticks, keep the rate
                    overruns += 1
                    next_tick = time.perf_counter()
        finally:
            cam.close()
        elapsed = time.perf_counter() - start
        line = (f"summary: {ticks} ticks in {elapsed:.1f} s ({ticks / elapsed:.1f} Hz), {frames} frames classified, "
                f"{cam.dropped} dropped (newest-frame-only), {overruns} overruns")
        if age_ms:
            line += (f"; infer p50 {np.percentile(infer_ms, 50):.1f} ms, age p50 {np.percentile(age_ms, 50):.1f} ms "
                     f"p99 {np.percentile(age_ms, 99):.1f} ms")
        print(line, flush=True)
    return 0 if frames else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(run_cli("robot_loop.py", main))
