"""`cnn-export`: a Keras or ONNX classifier -> ONNX FP32/FP16/INT8 and TensorRT engines, each checked against it."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence, TextIO

from ..artifact.kinds import EXPORT_SOURCES, describe_suffixes
from ._args import Parser, add_model_flags, flag_names, fraction, model_description, non_negative_float
from ._run import entry

EXAMPLES = """examples:
  cnn-export runs/digits/model.keras --int8
  cnn-export model.keras --fp16 --int8 --engine --gpu sm89 --calib photos/ --batch 1,8,32
  cnn-export model.keras --input float32 --out exported/ --force
  cnn-export model.keras --fp16 --triton model_repository/
  cnn-export digits.h5 --trust --labels labels.txt --scale 1/255 --mean 0.1307 --std 0.3081 --no-rgb --verify val/
  cnn-export resnet.onnx --labels labels.txt --scale 1/255 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --rgb \\
      --fp16 --int8 --calib train/ --engine --gpu sm89 --out exported/
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="cnn-export", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Export an image classifier (a Keras model with its card.json, or a model from elsewhere: "
                    "Keras or ONNX, described with the flags below) to ONNX FP32 (always), FP16 and INT8 ONNX and "
                    "TensorRT engines; every artifact is checked against the source model and reported in "
                    "export_report.json.")
    p.add_argument("model", help=f"the model: {describe_suffixes(EXPORT_SOURCES)} (a .keras with card.json beside "
                                 "it, a .h5 with --trust), e.g. runs/digits/model.keras")
    p.add_argument("--out", metavar="DIR", help="output folder (default: the model's folder), e.g. --out exported/")
    p.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx (half-precision weights and "
                   "compute), e.g. cnn-export model.keras --fp16")
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx (for ONNX Runtime on a CPU: "
                   "integer kernels) and model.int8.trt.onnx (for TensorRT: symmetric Q/DQ), calibrated on --calib "
                   "or the card's training data")
    p.add_argument("--engine", action="store_true", help="also build TensorRT engines from the FP16/INT8 ONNX "
                   "(FP32 if neither), e.g. --fp16 --int8 --engine --gpu sm89")
    p.add_argument("--input", dest="input_dtype", default="uint8", choices=("uint8", "float32"),
                   help="input tensor type: uint8 NHWC pixels, scaled inside the graph (default), or float32 "
                        "pixels 0..255, e.g. --input float32")
    p.add_argument("--calib", metavar="DIR|DATASET", help="calibration images: a folder of image files or a "
                   "dataset (digits, mnist, fashion_mnist, cifar10, cifar100); default: the card's training "
                   "data, e.g. --calib photos/")
    p.add_argument("--calib-size", type=int, default=300, metavar="N",
                   help="calibration images to use (default 300), e.g. --calib-size 500")
    p.add_argument("--calib-method", default="entropy", metavar="METHOD",
                   help="entropy (default), minmax or percentile, e.g. --calib-method minmax")
    p.add_argument("--int8-float", metavar="NODE,...", default="",
                   help="graph nodes to keep float in both INT8 files (names as the export report's "
                        "calibration.measured_layers and fallback list them), e.g. --int8-float Conv_3,Gemm_12")
    p.add_argument("--int8-target", type=fraction, default=0.99, metavar="F",
                   help="when the CPU INT8 file agrees with FP32 on fewer calibration images than this, the layers "
                        "that lose most are kept float until it does (default 0.99; 0 turns it off), e.g. 0.995")
    p.add_argument("--int8-activations", choices=("uint8", "int8"), default="uint8",
                   help="activation type of the CPU INT8 file: uint8 (U8S8, fastest on x86; default) or int8 "
                        "(S8S8), e.g. --int8-activations int8")
    p.add_argument("--verify", metavar="DIR|DATASET", help="held-out images for the parity check; the gate's "
                   "verdicts rest on them (default: the card's or the --calib dataset's test split; for a model "
                   "from elsewhere, the --calib images), e.g. --verify val_photos/")
    p.add_argument("--verify-size", type=int, default=1000, metavar="N",
                   help="parity images to use (default 1000), e.g. --verify-size 200")
    p.add_argument("--batch", default="1,8,32", metavar="MIN,OPT,MAX",
                   help="engine optimization profile and Triton max batch (default 1,8,32), e.g. --batch 1,4,16")
    p.add_argument("--gpu", metavar="SMXY,...", help="GPU generations to build engines for (default: the GPU "
                   "present), e.g. --gpu sm86,sm89")
    p.add_argument("--workspace", type=int, default=1024, metavar="MIB",
                   help="TensorRT builder workspace limit in MiB (default 1024), e.g. --workspace 512")
    p.add_argument("--timing-cache", metavar="FILE", help="TensorRT timing cache reused across builds (default: "
                   "tensorrt.timing.cache in the output folder; TensorRT-RTX has none), e.g. --timing-cache t.cache")
    p.add_argument("--triton", metavar="REPO", help="also write a Triton model repository entry per artifact, "
                   "e.g. --triton model_repository/")
    p.add_argument("--opset", type=int, metavar="N", help="ONNX opset of the export, 13..21 (default 17; an ONNX "
                   "source keeps its own opset if it is 13 or above and is converted to 17 if below), e.g. "
                   "--opset 18")
    p.add_argument("--no-cleanup", action="store_true", help="skip onnxslim graph simplification (when it "
                   "fails, the export keeps the graph as it was and says so), e.g. --no-cleanup")
    p.add_argument("--trust", action="store_true", help="allow legacy .h5 models, which ignore Keras safe mode "
                   "(only for files you trust), e.g. cnn-export old.h5 --trust")
    p.add_argument("--force", action="store_true", help="overwrite existing output files (and Triton "
                   "entries), e.g. cnn-export model.keras --int8 --force")
    add_gate_flags(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines, only the final table, "
                   "e.g. -q")
    add_model_flags(p, title="models without a card (from elsewhere: a Keras .h5/.keras without card.json, an "
                             "ONNX classifier)")
    return p


def add_gate_flags(p: argparse.ArgumentParser) -> None:
    """The gate's thresholds and the CPU engines it checks each file on."""
    p.add_argument("--min-agreement-fp32", type=fraction, default=1.0, metavar="F",
                   help="FP32 top-1 agreement with Keras (default 1.0), e.g. 0.999")
    p.add_argument("--max-diff-fp32", type=non_negative_float, default=1e-4, metavar="F",
                   help="FP32 max abs output difference (default 1e-4), e.g. 1e-3")
    p.add_argument("--min-agreement-fp16", type=fraction, default=0.995, metavar="F",
                   help="FP16 top-1 agreement (default 0.995). Like every rate threshold it fails an artifact only "
                        "when the images show it below (one-sided 95%%), and says 'undecided' with a warning when "
                        "they are too few to show it met, e.g. 0.99")
    p.add_argument("--min-agreement-int8", type=fraction, default=0.98, metavar="F",
                   help="INT8 top-1 agreement (default 0.98), e.g. 0.95")
    p.add_argument("--max-drop-int8", type=non_negative_float, default=1.0, metavar="POINTS",
                   help="INT8 accuracy drop in percentage points (default 1.0), e.g. 2")
    p.add_argument("--parity-engines", metavar="ENGINE,...",
                   help="CPU engines to check every ONNX file on, each file one row per engine (default: every one "
                        "installed here, ort-cpu and openvino, since --backend auto may pick any of them; ort-cpu "
                        "is always checked; naming one that is not installed is an error), e.g. --parity-engines "
                        "ort-cpu")


def names() -> dict[str, str]:
    """The library's argument names -> cnn-export's flags (:func:`._args.flag_names`)."""
    return flag_names(build_parser(), workspace_mib="workspace", out_dir="out", cleanup="no_cleanup",
                      int8_options=("int8_float", "int8_target", "int8_activations"))


def flag(option: str) -> str:
    """How cnn-export's errors name the library's argument ``option``."""
    return names().get(option, option)


def options_from(args: argparse.Namespace) -> Any:
    """The parsed flags as the library's ExportOptions."""
    from ..export.int8 import Int8Options
    from ..export.options import ExportOptions
    from ..export.parity import Thresholds

    thresholds = Thresholds(fp32_agreement=args.min_agreement_fp32, fp32_max_diff=args.max_diff_fp32,
                            fp16_agreement=args.min_agreement_fp16, int8_agreement=args.min_agreement_int8,
                            int8_accuracy_drop=args.max_drop_int8 / 100.0)
    from ..export.sources import describe_from

    return ExportOptions(describe=describe_from(model_description(args)), fp16=args.fp16, int8=args.int8, engine=args.engine, input_dtype=args.input_dtype,
                         calib=args.calib, calib_size=args.calib_size, calib_method=args.calib_method,
                         verify=args.verify, verify_size=args.verify_size, batch=args.batch, gpu=args.gpu,
                         workspace_mib=args.workspace, timing_cache=args.timing_cache, triton=args.triton,
                         thresholds=thresholds, opset=args.opset, cleanup=not args.no_cleanup, trust=args.trust,
                         force=args.force, parity_engines=args.parity_engines, int8_options=Int8Options(
                             activations=args.int8_activations, target_agreement=args.int8_target,
                             float_layers=tuple(n.strip() for n in args.int8_float.split(",") if n.strip())))


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = build_parser().parse_args(argv)
    from ..errors import argument_names
    from ..export.report import ParityFailure
    from ..export.steps import run

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"cnn-export: {msg}", file=err, flush=True)

    try:
        with argument_names(names()):
            report = run(args.model, args.out, options_from(args), progress=progress)
    except ParityFailure as exc:
        print(exc.report.table(), file=out)
        raise
    print(report.table(), file=out)
    if args.quiet:
        for line in report.warnings:
            print(f"cnn-export: warning: {line}", file=err)
    total = sum(s["seconds"] for s in report.steps)
    print(f"wrote {report.out_dir}/export_report.json ({total:.1f} s)", file=out)
    return 0


console = entry("cnn-export", main)
