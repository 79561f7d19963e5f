"""`cnn-bench`: latency and throughput per artifact, backend, precision and batch size.

Examples::

    cnn-bench runs/demo                                  # every artifact in the run folder, every backend
    cnn-bench model.onnx model.int8.onnx --backends ort-cpu --batch 1,8,32 --iters 500 --json bench.json
    cnn-bench runs/demo --end-to-end photos/ --plot bench.png --markdown bench.md
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Sequence, TextIO

from ..artifact.kinds import BACKEND_NAMES
from ._outputs import check_distinct, check_not_input, check_output
from ..errors import ExitCode, UsageError, argument_names
from ..runtime.limits import MAX_SEED
from ._args import Parser, add_load_timeout, add_model_flags, bound, flag_names, int_in, model_description, threads_int
from ._args import non_negative_int as _non_negative
from ._args import positive_int as _positive
from ._args import positive_seconds as _seconds
from ._run import entry

if TYPE_CHECKING:
    from ..bench.core import BenchInterrupted
    from ..bench.report import BenchReport

PROG = "cnn-bench"
STDOUT = "-"  # --json - and --markdown -: to stdout, and the table to stderr
_seed = int_in(0, MAX_SEED)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Latency (p50/p90/p99/max, no outliers removed) and throughput of model files on every "
                    "backend that can run them here, at several batch sizes. Combinations that cannot run "
                    "(no GPU, TensorRT missing) are listed with the reason.",
        epilog="examples:\n  cnn-bench runs/demo\n"
               "  cnn-bench model.onnx model.int8.onnx --backends ort-cpu --batch 1,8,32 --iters 500 --json b.json\n"
               "  cnn-bench runs/demo --end-to-end photos/ --plot bench.png --markdown bench.md")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="model files (.keras, .onnx, .fp16.onnx, .int8.onnx, .engine) or run folders, whose "
                        "every artifact is measured (e.g. runs/demo or runs/demo/model.int8.onnx)")
    what = p.add_argument_group("what to measure")
    what.add_argument("--backends", "--backend", dest="backends", default="auto", metavar="LIST",
                      help="auto (every backend that opens each file, openvino included where it is installed) or a "
                           f"comma list of {', '.join(BACKEND_NAMES)} (default auto; e.g. --backends ort-cpu,openvino)"
                           ". keras adds the tutorial baselines model.predict(x) and model(x)")
    what.add_argument("--batch", default="1,8,32", metavar="LIST",
                      help="batch sizes, each >= 1 and at most what fits in a quarter of memory (default 1,8,32; "
                           "e.g. --batch 1,8,32,128); above an engine's profile max, the max is used and said so")
    what.add_argument("--end-to-end", metavar="DIR",
                      help="also run the whole pipeline (read, decode, resize, batch, infer) on a folder of images, "
                           "next to the decode+resize-only bound (e.g. --end-to-end photos/)")
    what.add_argument("--e2e-batch", type=_positive, metavar="N",
                      help=f"batch size of the end-to-end run, N {bound(_positive)} and at most what fits in a "
                           "quarter of memory (default: the largest --batch; e.g. --e2e-batch 8)")
    threads = threads_int()
    what.add_argument("--workers", type=threads, metavar="N",
                      help=f"decode threads for --end-to-end, {bound(threads)} (default: CPU cores + 2, 3..8; "
                           "e.g. --workers 2)")
    how = p.add_argument_group("how")
    how.add_argument("--iters", type=_positive, metavar="N",
                     help=f"timed calls per combination, split over --repeats runs, N {bound(_positive)} "
                          "(e.g. --iters 300)")
    how.add_argument("--duration", type=_seconds, metavar="S",
                     help=f"seconds of timed calls per combination instead of --iters, S {bound(_seconds)} "
                          "(default 2; e.g. --duration 5)")
    how.add_argument("--warmup", type=_non_negative, default=10, metavar="N",
                     help=f"untimed calls before timing, N {bound(_non_negative)} (default 10; e.g. --warmup 50)")
    how.add_argument("--repeats", type=_positive, default=3, metavar="N",
                     help=f"timed runs per combination, N {bound(_positive)}; a large spread between them is "
                          "warned about (default 3; e.g. --repeats 5)")
    how.add_argument("--threads", type=threads, metavar="N",
                     help=f"ONNX Runtime intra-op threads, OpenVINO's inference threads, and TensorFlow's for .keras, "
                          f"{bound(threads)} "
                          "(default: half the cores; e.g. --threads 1)")
    how.add_argument("--seed", type=_seed, default=0, metavar="N",
                     help=f"seed of the fixed random inputs, {bound(_seed)} (default 0; e.g. --seed 1)")
    how.add_argument("--no-copy", dest="copy", action="store_false",
                     help="GPU backends: time with input and output already on the device (default: host-to-"
                          "device and device-to-host copies timed apart from the compute; "
                          "e.g. --backends ort-cuda --no-copy)")
    how.add_argument("--trust", action="store_true",
                     help="allow legacy .h5 Keras models (they ignore safe mode; e.g. --trust)")
    add_load_timeout(how)
    add_model_flags(p, ("input_size",), "models without a card")
    out = p.add_argument_group("output (the table goes to stdout; to stderr when --json or --markdown is -)")
    out.add_argument("--json", metavar="FILE", help="every figure plus machine facts; - writes it to stdout and the "
                     "table to stderr (e.g. --json bench.json)")
    out.add_argument("--markdown", metavar="FILE", help="the table as Markdown; - writes it to stdout and the table "
                     "to stderr (e.g. --markdown bench.md)")
    out.add_argument("--plot", metavar="FILE.png",
                     help="latency and throughput vs batch size, one line per artifact/backend (e.g. --plot "
                          "bench.png)")
    out.add_argument("--force", action="store_true",
                     help="overwrite existing --json/--markdown/--plot files (e.g. --json b.json --force)")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr (e.g. -q)")
    return p


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = build_parser().parse_args(argv)
    from ..bench.core import BenchConfig, BenchInterrupted, run_bench
    from ..bench.plan import parse_backends, parse_batches

    backends = parse_backends(args.backends)
    batches = parse_batches(args.batch)
    if args.iters is not None and args.duration is not None:
        raise UsageError("give --iters or --duration, not both (e.g. --iters 300)")
    files = _check_outputs(args)
    cfg = BenchConfig(models=list(args.models), backends=backends, batches=batches, iters=args.iters,
                      duration=args.duration, warmup=args.warmup, repeats=args.repeats, threads=args.threads,
                      seed=args.seed, copy=args.copy, end_to_end=args.end_to_end, e2e_batch=args.e2e_batch,
                      workers=args.workers, trust=args.trust, load_timeout_s=args.load_timeout_s,
                      **model_description(args, ("input_size",)))
    log = None if args.quiet else (lambda m: print(f"{PROG}: {m}", file=err, flush=True))
    table_to = err if STDOUT in (args.json, args.markdown) else out
    try:
        with argument_names(flag_names(build_parser())):
            report = run_bench(cfg, log)
    except BenchInterrupted as stop:
        return _interrupted(stop, table_to, err)
    print(report.table(), file=table_to)
    noise = report.noise_summary(cfg.max_spread)
    if noise:
        print(f"{PROG}: warning: {noise}", file=err)
    _write_outputs(report, args, out)
    if files and log:
        log(f"wrote {', '.join(path for _, path in files)}")
    if not report.rows:
        print(f"{PROG}: error: no combination could run here (reasons above)", file=err)
        return int(ExitCode.FAILURE)
    return int(ExitCode.OK)


def _check_outputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The output files (``-`` for stdout left out), each refused at start if it cannot be written."""
    from ..imaging.files import IMAGE_SUFFIXES

    outputs = [("--json", args.json), ("--markdown", args.markdown), ("--plot", _named(args.plot))]
    check_distinct(outputs)
    files = [(flag, path) for flag, path in outputs if path is not None and path != STDOUT]
    for flag, path in files:
        check_output(flag, path, args.force, ".png" if flag == "--plot" else None)
        check_not_input(flag, path, [*args.models, args.end_to_end], IMAGE_SUFFIXES)
    return files


def _write_outputs(report: "BenchReport", args: argparse.Namespace, out: TextIO) -> None:
    """Without --force, a file that appeared at an output's name during the run is kept (the report goes beside)."""
    if args.json == STDOUT:
        print(report.json_text(), end="", file=out)
    elif args.json:
        report.write_json(args.json, replace=args.force)
    if args.markdown == STDOUT:
        print(report.markdown(), end="", file=out)
    elif args.markdown:
        report.write_markdown(args.markdown, replace=args.force)
    if args.plot:
        report.plot(args.plot, replace=args.force)


def _interrupted(stop: "BenchInterrupted", table_to: TextIO, err: TextIO) -> int:
    """What was measured before Ctrl-C or SIGTERM, marked as such; no file is written (they would look complete)."""
    rows = stop.report.rows
    if rows:
        print(stop.report.table(), file=table_to)
    print(f"{PROG}: interrupted; {len(rows)} row{'s' if len(rows) != 1 else ''} measured"
          f"{' (above)' if rows else ''}; no --json/--markdown/--plot file written", file=err)
    return stop.exit_code


def _named(path: str | None) -> str | None:
    """An output that takes no ``-`` for stdout: ``-`` is a file of that name there."""
    return os.path.join(".", path) if path == STDOUT else path


console = entry(PROG, main)
