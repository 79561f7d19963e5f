"""`cnn-infer`: classify images, folders, videos, cameras and streams with any cnnedge model.

Examples::

    cnn-infer runs/digits/model.int8.onnx --source photos/ --eval
    cnn-infer model.engine --camera 0 --camera 1 --batch 2 --max-wait-ms 20 --json out.jsonl
    cnn-infer third_party.onnx --source img.jpg --scale 1/255 --mean 0.5 --std 0.5 --labels labels.txt
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from typing import Any, Sequence, TextIO

from ..artifact.kinds import describe_suffixes
from ._outputs import check_distinct, check_not_input, check_output
from ..errors import DescriptionNeeded, UsageError, argument_names
from ..runtime.limits import MAX_CAMERA_INDEX, MAX_FPS, MAX_SECONDS, MAX_TIMEOUT_MS, MIN_FPS
from ._args import Parser, MODELS_FROM_ELSEWHERE, add_load_timeout, add_model_flags, flag_names, model_description
from ._args import bound, float_in, int_in, threads_int
from ._args import positive_int as _positive
from ._args import positive_seconds as _positive_seconds

_camera = int_in(0, MAX_CAMERA_INDEX)
_timeout_ms = int_in(1, MAX_TIMEOUT_MS, f"1..{MAX_TIMEOUT_MS} (a day)")
#: a finite number of milliseconds >= 0 (inf would never close a batch, nan compares false to all)
_wait_ms = float_in(0, MAX_SECONDS * 1000, "milliseconds", low_open=False)
_fps = float_in(MIN_FPS, MAX_FPS, "a frame rate", low_open=False, high_open=False, bound=f"{MIN_FPS:g}..{MAX_FPS:g}")
from ._run import entry, silence

PROG = "cnn-infer"
STDOUT = "-"  # --json - and --csv -: to stdout, instead of the result lines


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"Classify images, folders, videos, cameras and streams with a model: {describe_suffixes()}. "
                    "The model's card says everything about the model; flags for preprocessing are only for "
                    "models without one.",
        epilog="examples:\n  cnn-infer model.int8.onnx --source photos/ --eval\n"
               "  cnn-infer model.engine --camera 0 --json out.jsonl --max-frames 100\n"
               "  cnn-infer other.onnx --source img.jpg --scale 1/255 --mean 0.5 --std 0.5 --labels labels.txt\n\n"
               + MODELS_FROM_ELSEWHERE)
    p.add_argument("model", help=f"model file: {describe_suffixes()} (a .h5 with --trust), e.g. "
                                 "runs/digits/model.int8.onnx")
    _add_sources(p)
    _add_inference(p)
    add_model_flags(p).add_argument(
        "--assume-preprocessing", action="store_true",
        help="run a model without a card on 0..1 RGB pixels (scale 1/255, mean 0, std 1) where no flag above says "
             "otherwise; without it, cnn-infer refuses to guess how a card-less model's pixels were scaled")
    _add_outputs(p)
    return p


def _add_sources(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("sources (several may be given; they share batches)")
    src.add_argument("--source", action="append", default=[], metavar="SRC",
                     help="image, folder (recursive), list file, video, URL (rtsp://, http://) or csi://N "
                          "(e.g. --source photos/)")
    src.add_argument("--camera", action="append", type=_camera, default=[], metavar="N",
                     help=f"camera by index, {bound(_camera)}; repeat for several (e.g. --camera 0 --camera 1)")
    src.add_argument("--gst", action="append", default=[], metavar="PIPELINE",
                     help="GStreamer pipeline ending in appsink; needs an OpenCV with GStreamer (Debian's, "
                          "Ubuntu's or JetPack's python3-opencv; PyPI's has none). Live when it captures from a "
                          "device or the network (v4l2src, nvarguscamerasrc, libcamerasrc, rtspsrc, udpsrc, "
                          "souphttpsrc, ..., is-live=true, or --live): newest frame only, reconnecting when it "
                          "drops; otherwise finite (filesrc, videotestsrc): every frame once, ending at its end "
                          "(e.g. --gst 'v4l2src ! videoconvert ! appsink')")
    src.add_argument("--csi", action="append", type=_camera, default=[], metavar="N",
                     help=f"Jetson CSI camera by sensor id, {bound(_camera)}; composes the nvarguscamerasrc "
                          "pipeline (e.g. --csi 0)")
    src.add_argument("--glob", metavar="PATTERN", help="only files matching this in folders (e.g. --glob '*.jpg')")
    src.add_argument("--live", action="store_true",
                     help="replay video files like a camera: at the file's own frame rate (30 when it does not "
                          "say), newest frame only, dropping what the model cannot keep up with; a --gst pipeline "
                          "is then live whatever its source element (a camera plugin cnn-infer does not know) "
                          "(e.g. --source clip.mp4 --live)")
    src.add_argument("--max-frames", type=_positive, metavar="N",
                     help=f"stop after N results, N {bound(_positive)} (e.g. --max-frames 500)")
    src.add_argument("--duration", type=_positive_seconds, metavar="S",
                     help=f"stop after S seconds, S {bound(_positive_seconds)} (e.g. --duration 60)")
    src.add_argument("--open-timeout-ms", type=_timeout_ms, default=10000, metavar="MS",
                     help="give up opening a stream (URL, --source video, --gst/--csi pipeline) after MS, "
                          f"{bound(_timeout_ms)}; local cameras (--camera, /dev/video*) take no timeout; cnn-infer "
                          "enforces it itself too (OpenCV's GStreamer takes none before 4.7) "
                          "(default 10000; e.g. --open-timeout-ms 3000)")
    src.add_argument("--read-timeout-ms", type=_timeout_ms, default=5000, metavar="MS",
                     help="a stream or GStreamer pipeline read that blocks longer than MS counts as a drop and "
                          f"reconnects (a finite pipeline ends, exit 1), {bound(_timeout_ms)}; local cameras take "
                          "no timeout; OpenCV applies it, or cnn-infer where OpenCV cannot (GStreamer before 4.7) "
                          "(default 5000; e.g. --read-timeout-ms 2000)")
    src.add_argument("--give-up-after", type=_positive_seconds, metavar="S",
                     help="end a camera or stream that has given no frame for S seconds (one that opens but "
                          "sends garbage too; reconnecting with back-off until then, ending at most an open and a "
                          "read timeout later) and exit 1 at the end, so a supervisor can restart; S "
                          f"{bound(_positive_seconds)}; default: keep reconnecting for as long as the run lasts "
                          "(e.g. --give-up-after 60)")


def _add_inference(p: argparse.ArgumentParser) -> None:
    from ..artifact.kinds import BACKEND_CHOICES

    run = p.add_argument_group("inference")
    run.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                     help="auto picks TensorRT for .engine and the best ONNX Runtime provider for .onnx; "
                          "openvino runs .onnx on OpenVINO, only when named (e.g. --backend ort-cpu)")
    run.add_argument("--batch", type=_positive, metavar="N",
                     help=f"images per inference, N {bound(_positive)} and at most what fits in a quarter of "
                          "memory (a graph of dynamic size: 2^25 pixels a batch) (default 32 when every source is "
                          "image files or folders, 8 with a camera, stream or video; e.g. --batch 16)")
    run.add_argument("--max-wait-ms", type=_wait_ms, default=10.0, metavar="MS",
                     help=f"close a batch this long after its first frame, MS {bound(_wait_ms)} (default 10; "
                          "e.g. --max-wait-ms 20)")
    workers = threads_int()
    run.add_argument("--workers", type=workers, metavar="N", help="decode workers, each a batch at a time, "
                     f"{bound(workers)} (default: the cores this process may use; e.g. --workers 4)")
    run.add_argument("--decode", choices=("auto", "cpu", "gpu"), default="auto",
                     help="where JPEGs are decoded and resized: gpu (nvImageCodec + CV-CUDA, the gpu-decode extra "
                          "and a GPU backend), cpu, or auto: gpu when both are there (e.g. --decode cpu)")
    run.add_argument("--threads", type=workers, metavar="N",
                     help=f"ONNX Runtime intra-op threads (OpenVINO's inference threads), {bound(workers)} "
                          "(default: half the cores; e.g. --threads 1)")
    run.add_argument("--fp16", action="store_true", help="TensorRT execution provider builds FP16 kernels "
                     "(e.g. --backend ort-trt --fp16)")
    run.add_argument("--no-reduce-decode", dest="reduce_decode", action="store_false",
                     help="always decode JPEGs at full size (default: at 1/2..1/8 when at least 2x the input; "
                          "e.g. --no-reduce-decode)")
    run.add_argument("--trust", action="store_true", help="allow legacy .h5 Keras models (they ignore safe mode; "
                     "e.g. --trust)")

    add_load_timeout(run)


def _add_outputs(p: argparse.ArgumentParser) -> None:
    out = p.add_argument_group("output")
    out.add_argument("--topk", type=_positive, default=1, metavar="K", help=f"show the K best classes, K "
                     f"{bound(_positive)} (all of them when K is more than the model has; e.g. --topk 3)")
    out.add_argument("--json", metavar="FILE", help="write one JSON object per result; - writes them to stdout "
                     "instead of the result lines (e.g. --json out.jsonl)")
    out.add_argument("--csv", metavar="FILE", help="write a CSV row per result; - writes them to stdout instead "
                     "of the result lines (e.g. --csv out.csv)")
    out.add_argument("--save-dir", metavar="DIR", help="write annotated images, NNNNNN_<name>.jpg; a file already there is kept (the image takes <name>-2.jpg) unless --force (e.g. --save-dir annotated/)")
    out.add_argument("--save-video", metavar="FILE", help="write an annotated video (e.g. --save-video out.mp4)")
    out.add_argument("--fps", type=_fps, default=25.0, metavar="F",
                     help=f"frame rate of --save-video, {bound(_fps)} (default 25; e.g. --fps 30)")
    out.add_argument("--show", action="store_true", help="show annotated frames in a window; needs OpenCV with GUI (e.g. --camera 0 --show)")
    out.add_argument("--eval", action="store_true",
                     help="accuracy, per-class recall and confusion matrix, true classes from folder names "
                          "(e.g. --source test/ --eval)")
    out.add_argument("--labels-csv", metavar="FILE",
                     help="true classes for --eval as path,label rows (e.g. --labels-csv truth.csv)")
    out.add_argument("--quiet", "-q", action="store_true", help="no line per result, only the summary (e.g. --source photos/ --quiet)")
    out.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bar on stderr for folders (default: when stderr is a terminal; e.g. --no-progress)")
    out.add_argument("--force", action="store_true", help="overwrite existing --json/--csv/--save-video files and --save-dir images (e.g. --json out.jsonl --force)")


class _StderrHandler(logging.Handler):
    def __init__(self, err: TextIO) -> None:
        super().__init__(logging.WARNING)
        self.err = err

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{PROG}: warning: {record.getMessage()}", file=self.err)


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    for stream in (out, err):  # a file name that is not valid in the terminal's encoding must not end the run
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # stream errors are reported by cnn-infer itself
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    args = build_parser().parse_args(argv)

    sources: list[Any] = list(args.source) + list(args.camera) + list(args.gst)
    sources += [f"csi://{n}" for n in args.csi]
    if not sources:
        raise UsageError("no source: give --source PATH|URL, --camera N, --gst PIPELINE or --csi N "
                         "(e.g. --source photos/)")
    if args.labels_csv and not args.eval:
        raise UsageError("--labels-csv is for --eval; add --eval")
    handler = _StderrHandler(err)
    logger = logging.getLogger("cnnedge")
    logger.addHandler(handler)
    try:
        with argument_names(flag_names(build_parser())):
            return _run(args, sources, out, err)
    finally:
        logger.removeHandler(handler)


def _batch_hint(args: argparse.Namespace, sources: list[Any]) -> int:
    """The batch this run will use: ``--batch``, else the default its sources get (auto times engines at it)."""
    if args.batch is not None:
        return args.batch
    from ..runtime.pipeline import planned_batch

    return planned_batch(sources, args.live)


def _run(args: argparse.Namespace, sources: list[Any], out: TextIO, err: TextIO) -> int:
    from contextlib import ExitStack

    from ..runtime import sinks as S
    from ..runtime.classifier import Classifier
    from ..runtime.runner import run

    files = [(flag, path) for flag, path in (("--json", args.json), ("--csv", args.csv),
                                             ("--save-video", args.save_video)) if path != STDOUT]
    check_distinct([("--json", args.json), ("--csv", args.csv), ("--save-video", _named(args.save_video)),
                    ("--save-dir", _named(args.save_dir))])
    for flag, path in files:
        check_output(flag, path, args.force)
    check_output("--save-dir", args.save_dir, args.force, folder=True)
    from ..imaging.files import IMAGE_SUFFIXES

    inputs = [args.model, args.labels, args.labels_csv, *(s for s in sources if isinstance(s, str))]
    for flag, path in files:
        check_not_input(flag, path, inputs, IMAGE_SUFFIXES)
    described = model_description(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            clf = Classifier(args.model, args.backend, **described, topk=args.topk, batch=_batch_hint(args, sources),
                             reduce_decode=args.reduce_decode, threads=args.threads, fp16=args.fp16 or None,
                             load_timeout_s=args.load_timeout_s, assume_preprocessing=args.assume_preprocessing,
                             **({"trust": True} if args.trust else {}))
        except DescriptionNeeded as exc:
            from ..runtime.conventions import suggestion

            folder = next((s for s in sources if isinstance(s, str) and os.path.isdir(s)), None)
            given = {k: v for k, v in described.items() if k != "labels"}
            raise DescriptionNeeded(str(exc) + suggestion(args.model, folder, described.get("labels"), given,
                                                          args.backend, threads=args.threads)) from None
    for w in caught:
        print(f"{PROG}: warning: {w.message}", file=err)
    with clf, ExitStack() as stack:
        if args.batch is not None:
            clf.check_batch(args.batch)
        rows_out = STDOUT in (args.json, args.csv)  # stdout carries JSON or CSV rows, not result lines
        sinks: list[S.Sink] = [S.ErrorSink(err) if args.quiet or rows_out else S.LineSink(out, err, args.topk)]
        if args.json:
            sinks.append(stack.enter_context(S.JsonlSink(out if args.json == STDOUT else args.json, args.force)))
        if args.csv:
            sinks.append(stack.enter_context(S.CsvSink(out if args.csv == STDOUT else args.csv, args.force)))
        if args.save_dir:
            sinks.append(S.SaveDirSink(args.save_dir, args.force))
        if args.save_video:
            sinks.append(stack.enter_context(S.VideoSink(args.save_video, args.fps, args.force)))
        if args.show:
            sinks.append(stack.enter_context(S.ShowSink()))
        ev = S.EvalSink(clf.card.classes, args.labels_csv) if args.eval else None
        if ev is not None:
            sinks.append(ev)
        from ..runtime.backends.base import settings_text

        kernels = ""
        if clf.card.precision == "int8" and clf.backend_name == "ort-cpu":
            from ..runtime.cpu_kernels import int8_kernels

            kernels = f" ({int8_kernels().name} int8 kernels)"
        print(f"{PROG}: {clf.card.name} ({clf.card.num_classes} classes, {clf.card.input.height}x"
              f"{clf.card.input.width}) on {clf.backend_name}{kernels}{settings_text(clf.backend.settings)}; class "
              f"names from {clf.labels_from}", file=err)
        show_progress = args.progress if args.progress is not None else err.isatty()
        summary = run(sources, clf, sinks, batch=args.batch, max_wait_ms=args.max_wait_ms, workers=args.workers,
                      glob=args.glob, max_frames=args.max_frames, duration=args.duration, live=args.live,
                      open_timeout_ms=args.open_timeout_ms, read_timeout_ms=args.read_timeout_ms,
                      give_up_s=args.give_up_after, decode=args.decode, progress=err if show_progress else None)
    if summary.output_closed:  # `| head -1`: what is left for stdout goes nowhere, quietly
        silence(out)
    print(f"{PROG}: {summary.line()}", file=err)
    if ev is not None and not summary.output_closed:
        print(ev.format(), file=err if rows_out else out)
    for line in summary.problems():
        print(f"{PROG}: error: {line}", file=err)
    for line in summary.partial_lines():
        print(f"{PROG}: {line}", file=err)
    return summary.exit_code


def _named(path: str | None) -> str | None:
    """An output that takes no ``-`` for stdout: ``-`` is a file of that name there."""
    return os.path.join(".", path) if path == STDOUT else path


console = entry(PROG, main)
